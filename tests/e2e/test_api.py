#!/usr/bin/env python3
"""Black-box scenarios against a running stratus stack, through nginx.

Started by tests/e2e/run.sh, which passes the stack's layout in the
environment (E2E_URL, E2E_STATE, E2E_CONSOLE_DIR, E2E_IMPORT_DIR,
E2E_POOLS_DIR, E2E_API_PIDFILE, E2E_GUEST, E2E_SERVICES_FILES, E2E_ROOT).
Standard library only.  Prints one line per check and ends with
"e2e: N passed, N failed".

    tests/e2e/test_api.py [scenario ...]   # lifecycle failure badinput workers libvirtd
                                           # libvirtd_hang signals
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

URL = urllib.parse.urlsplit(os.environ.get("E2E_URL", "http://127.0.0.1:18080"))
STATE = os.environ.get("E2E_STATE", "")
CONSOLE_DIR = os.environ.get("E2E_CONSOLE_DIR", os.path.join(STATE, "console"))
IMPORT_DIR = os.environ.get("E2E_IMPORT_DIR", os.path.join(STATE, "import"))
POOLS_DIR = os.environ.get("E2E_POOLS_DIR", os.path.join(STATE, "pools"))
API_PIDFILE = os.environ.get("E2E_API_PIDFILE", os.path.join(STATE, "run", "api.pid"))
GUEST = os.environ.get("E2E_GUEST", "")
ROOT = os.environ.get("E2E_ROOT", os.getcwd())
SERVICES_FILES = [f for f in os.environ.get("E2E_SERVICES_FILES", "").split(":") if f]
VIRSH = ["virsh", "-q", "-c", "qemu:///system"]
MARKER = "STRATUS-GUEST-BOOTED"
BOOT_TIMEOUT = float(os.environ.get("E2E_BOOT_TIMEOUT", "180"))

passed = 0
failed = 0
cleanup_vms = []
cleanup_images = []


class Fail(Exception):
    pass


def check(name, cond, why=""):
    """Record one check; a failed check raises Fail to end its scenario."""
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   - {name}", flush=True)
        return
    failed += 1
    print(f"FAIL - {name}{': ' + why if why else ''}", flush=True)
    raise Fail(name)


def soft_check(name, cond, why=""):
    try:
        check(name, cond, why)
    except Fail:
        pass


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        self.json = None
        try:
            self.json = json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError):
            pass

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return f"{self.status} {self.body[:300]!r}"


def request(method, path, body=None, ctype="application/json", timeout=60, headers=None):
    """One request on a fresh connection.  @body: dict/list (JSON), bytes or None."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    hdrs = dict(headers or {})
    if body is not None and ctype is not None:
        hdrs["Content-Type"] = ctype
    conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=timeout)
    try:
        try:
            conn.request(method, path, body=body, headers=hdrs)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (e.g. 413); read what it said
        r = conn.getresponse()
        return Resp(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def is_problem(r):
    ct = (r.header("Content-Type") or "").split(";")[0].strip()
    j = r.json
    return (ct == "application/problem+json" and isinstance(j, dict)
            and j.get("status") == r.status and isinstance(j.get("title"), str))


def virsh(*args):
    p = subprocess.run(VIRSH + list(args), capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout


def domains():
    rc, out = virsh("list", "--all", "--name")
    return set(l.strip() for l in out.splitlines() if l.strip()) if rc == 0 else None


def files_with(needle):
    hits = []
    for d, _, names in os.walk(POOLS_DIR):
        hits += [os.path.join(d, n) for n in names if needle in n]
    return hits


def wait_vm(vm_id, want, timeout=120):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = request("GET", f"/v1/vms/{vm_id}")
        if last.status == 200 and last.json.get("status") == want:
            return last
        if last.status == 200 and last.json.get("status") == "error":
            return last
        time.sleep(0.5)
    return last


def console_log(vm_id):
    try:
        with open(os.path.join(CONSOLE_DIR, vm_id + ".log"), "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def wait_new_boot(vm_id, before, timeout=BOOT_TIMEOUT):
    """Wait for a boot marker written after @before (the log as it was)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = console_log(vm_id)
        fresh = text[len(before):] if text.startswith(before) else text
        m = re.search(MARKER + r"[^\r\n]*", fresh)
        if m:
            return m.group(0)
        time.sleep(1)
    return None


def action(vm_id, name, want, timeout=120):
    r = request("POST", f"/v1/vms/{vm_id}/{name}", timeout=timeout)
    check(f"POST {name} answers 200 with the VM", r.status == 200 and isinstance(r.json, dict)
          and r.json.get("id") == vm_id, repr(r))
    if r.json.get("status") != want:
        r = wait_vm(vm_id, want)
    check(f"after {name} the VM is {want}", r.status == 200 and r.json.get("status") == want,
          repr(r))
    return r


def import_image(tag):
    check("the guest image was built", bool(GUEST) and os.path.isfile(GUEST), GUEST)
    src = os.path.join(IMPORT_DIR, f"guest-{tag}.qcow2")
    shutil.copyfile(GUEST, src)
    os.chmod(src, 0o644)
    r = request("POST", "/v1/images", {"name": f"guest-{tag}", "source_path": src,
                                        "format": "qcow2"}, timeout=120)
    check("POST /v1/images answers 201 with a Location", r.status == 201
          and (r.header("Location") or "").startswith("/v1/images/")
          and isinstance(r.json, dict) and "id" in r.json, repr(r))
    image_id = r.json["id"]
    cleanup_images.append(image_id)
    g = request("GET", f"/v1/images/{image_id}")
    check("GET the image answers 200", g.status == 200 and g.json.get("id") == image_id, repr(g))
    return image_id


# --- (a) lifecycle --------------------------------------------------------

def scenario_lifecycle():
    tag = uuid.uuid4().hex[:8]
    image_id = import_image(tag)
    r = request("POST", "/v1/vms", {"name": f"life-{tag}", "image_id": image_id, "vcpus": 1,
                                     "memory_mib": 256, "disk_gib": 1}, timeout=120)
    check("POST /v1/vms answers 201 with a Location", r.status == 201 and isinstance(r.json, dict)
          and r.header("Location") == f"/v1/vms/{r.json.get('id')}", repr(r))
    vm_id = r.json["id"]
    cleanup_vms.append(vm_id)
    dom = f"stratus-{vm_id}"
    r = wait_vm(vm_id, "running")
    check("the VM becomes running", r.json.get("status") == "running", repr(r))
    check("the VM shows what was asked", r.json.get("vcpus") == 1 and r.json.get("memory_mib") == 256
          and r.json.get("disk_gib") == 1 and r.json.get("image_id") == image_id, repr(r))
    check(f"libvirt has domain {dom}", dom in (domains() or set()))
    rc, xml = virsh("dumpxml", dom)
    disks = re.findall(r"<source file='([^']+)'", xml)
    check("the domain's disk lies in the default pool", bool(disks)
          and disks[0].startswith(os.path.join(POOLS_DIR, "default") + "/"), repr(disks))
    disk = disks[0]
    line = wait_new_boot(vm_id, "")
    check("the guest boots (marker in the console log)", line is not None,
          os.path.join(CONSOLE_DIR, vm_id + ".log"))
    print(f"       {line}")

    g = request("GET", "/v1/vms?limit=50")
    check("the VM is listed", g.status == 200 and any(v.get("id") == vm_id
                                                      for v in g.json.get("items", [])), repr(g))

    action(vm_id, "stop", "stopped")
    before = console_log(vm_id)
    action(vm_id, "start", "running")
    line = wait_new_boot(vm_id, before)
    check("the guest boots again after start", line is not None)
    print(f"       {line}")
    before = console_log(vm_id)
    action(vm_id, "reboot", "running")
    line = wait_new_boot(vm_id, before)
    check("the guest boots again after reboot", line is not None)
    print(f"       {line}")
    action(vm_id, "pause", "paused")
    rc, out = virsh("domstate", dom)
    check("libvirt says paused", "paused" in out, out.strip())
    action(vm_id, "resume", "running")

    r = request("PATCH", f"/v1/vms/{vm_id}", {"name": f"renamed-{tag}"})
    check("PATCH rename answers 200 with the new name", r.status == 200
          and r.json.get("name") == f"renamed-{tag}", repr(r))
    r = request("GET", f"/v1/vms/{vm_id}")
    check("GET shows the new name", r.status == 200 and r.json.get("name") == f"renamed-{tag}",
          repr(r))

    r = request("DELETE", f"/v1/vms/{vm_id}", timeout=120)
    check("DELETE answers 204", r.status == 204 and not r.body, repr(r))
    r = request("GET", f"/v1/vms/{vm_id}")
    check("GET after DELETE answers 404 (problem)", r.status == 404 and is_problem(r), repr(r))
    doms = domains()
    check("no domain is left", doms is not None and dom not in doms, repr(doms))
    check("no disk file is left", not os.path.exists(disk) and not files_with(vm_id),
          repr(files_with(vm_id)))
    log = os.path.join(CONSOLE_DIR, vm_id + ".log")
    check("no console log is left", not os.path.exists(log), log)
    cleanup_vms.remove(vm_id)
    r = request("DELETE", f"/v1/vms/{vm_id}")
    check("a second DELETE answers 404 (problem)", r.status == 404 and is_problem(r), repr(r))


# --- (b) a create that fails after its disk exists ------------------------

def scenario_failure():
    tag = uuid.uuid4().hex[:8]
    image_id = import_image("f" + tag)
    before = domains() or set()
    # 2 TiB of guest RAM: validation accepts it, QEMU cannot allocate it.
    r = request("POST", "/v1/vms", {"name": f"fail-{tag}", "image_id": image_id, "vcpus": 1,
                                     "memory_mib": 2097152, "disk_gib": 1}, timeout=120)
    check("the failing create answers an error problem", r.status >= 400 and is_problem(r), repr(r))
    vm_id = (r.json or {}).get("vm_id")
    check("the problem names the VM (vm_id)", isinstance(vm_id, str) and len(vm_id) == 36, repr(r))
    cleanup_vms.append(vm_id)
    g = request("GET", f"/v1/vms/{vm_id}")
    fault = json.dumps(g.json.get("fault")) if g.status == 200 else ""
    check("GET shows status error", g.status == 200 and g.json.get("status") == "error", repr(g))
    check("the fault names the start step", g.json.get("fault") is not None
          and "start" in fault.lower(), fault)
    print(f"       fault: {fault[:200]}")
    doms = domains()
    check("no domain is left", doms is not None and f"stratus-{vm_id}" not in doms
          and doms <= before, repr(doms))
    check("no disk file is left", not files_with(vm_id), repr(files_with(vm_id)))
    d = request("DELETE", f"/v1/vms/{vm_id}", timeout=120)
    check("DELETE of the failed VM answers 204", d.status == 204, repr(d))
    g = request("GET", f"/v1/vms/{vm_id}")
    check("the row is gone (404)", g.status == 404 and is_problem(g), repr(g))
    cleanup_vms.remove(vm_id)


# --- (c) bad input --------------------------------------------------------

def scenario_badinput():
    rid = str(uuid.uuid4())
    good = {"name": "ok-name", "image_id": rid, "vcpus": 1, "memory_mib": 256, "disk_gib": 1}

    def vm(**kw):
        b = dict(good)
        for k, v in kw.items():
            if v is KeyError:
                b.pop(k, None)
            else:
                b[k] = v
        return json.dumps(b).encode()

    J = "application/json"
    cases = [
        ("bad JSON", "POST", "/v1/vms", b'{"name": ', J),
        ("empty body", "POST", "/v1/vms", b"", J),
        ("JSON array", "POST", "/v1/vms", b"[]", J),
        ("JSON null", "POST", "/v1/vms", b"null", J),
        ("JSON string", "POST", "/v1/vms", b'"vm"', J),
        ("trailing garbage", "POST", "/v1/vms", vm() + b"xyz", J),
        ("invalid UTF-8", "POST", "/v1/vms", b'{"name":"\xff\xfe"}', J),
        ("deep nesting", "POST", "/v1/vms", b"[" * 5000 + b"]" * 5000, J),
        ("name is a number", "POST", "/v1/vms", vm(name=7), J),
        ("name is null", "POST", "/v1/vms", vm(name=None), J),
        ("name empty", "POST", "/v1/vms", vm(name=""), J),
        ("name with <", "POST", "/v1/vms", vm(name="<script>"), J),
        ("name with '", "POST", "/v1/vms", vm(name="a'b"), J),
        ("name with ../", "POST", "/v1/vms", vm(name="../etc"), J),
        ("name with NUL", "POST", "/v1/vms", vm(name="a\u0000b"), J),
        ("name of 10 KB", "POST", "/v1/vms", vm(name="a" * 10240), J),
        ("name with space", "POST", "/v1/vms", vm(name="a b"), J),
        ("vcpus as string", "POST", "/v1/vms", vm(vcpus="1"), J),
        ("vcpus zero", "POST", "/v1/vms", vm(vcpus=0), J),
        ("vcpus negative", "POST", "/v1/vms", vm(vcpus=-1), J),
        ("vcpus float", "POST", "/v1/vms", vm(vcpus=1.5), J),
        ("vcpus huge", "POST", "/v1/vms", vm(vcpus=10**30), J),
        ("vcpus boolean", "POST", "/v1/vms", vm(vcpus=True), J),
        ("memory negative", "POST", "/v1/vms", vm(memory_mib=-256), J),
        ("memory 2^64+1", "POST", "/v1/vms", vm(memory_mib=2**64 + 1), J),
        ("disk negative", "POST", "/v1/vms", vm(disk_gib=-1), J),
        ("disk huge", "POST", "/v1/vms", vm(disk_gib=10**12), J),
        ("unknown field", "POST", "/v1/vms", vm(bogus=1), J),
        ("image_id not a UUID", "POST", "/v1/vms", vm(image_id="not-a-uuid"), J),
        ("image_id a path", "POST", "/v1/vms", vm(image_id="../../etc/passwd"), J),
        ("image_id missing", "POST", "/v1/vms", vm(image_id=KeyError), J),
        ("image_id unknown", "POST", "/v1/vms", vm(), J),
        ("sizes missing", "POST", "/v1/vms", vm(vcpus=KeyError, memory_mib=KeyError), J),
        ("flavor and sizes", "POST", "/v1/vms", vm(flavor_id=rid), J),
        ("text/plain body", "POST", "/v1/vms", vm(), "text/plain"),
        ("form body", "POST", "/v1/vms", b"name=x", "application/x-www-form-urlencoded"),
        ("no content type", "POST", "/v1/vms", vm(), None),
        ("body over 64 KiB", "POST", "/v1/vms", b'{"name":"' + b"a" * 70000 + b'"}', J),
        ("image outside import dir", "POST", "/v1/images",
         json.dumps({"name": "x", "source_path": "/etc/passwd", "format": "qcow2"}).encode(), J),
        ("image path escapes", "POST", "/v1/images",
         json.dumps({"name": "x", "source_path": IMPORT_DIR + "/../../../etc/shadow",
                     "format": "qcow2"}).encode(), J),
        ("image missing file", "POST", "/v1/images",
         json.dumps({"name": "x", "source_path": IMPORT_DIR + "/nope.qcow2",
                     "format": "qcow2"}).encode(), J),
        ("image bad format", "POST", "/v1/images",
         json.dumps({"name": "x", "source_path": IMPORT_DIR + "/x", "format": "vmdk\"<"}).encode(), J),
        ("flavor vcpus string", "POST", "/v1/flavors",
         json.dumps({"name": "f", "vcpus": "x", "memory_mib": 1, "disk_gib": 1}).encode(), J),
        ("PATCH bad JSON", "PATCH", f"/v1/vms/{rid}", b"{", J),
        ("PATCH unknown VM", "PATCH", f"/v1/vms/{rid}", b'{"name":"x"}', J),
        ("unknown route", "GET", "/v1/nope", None, None),
        ("unknown version", "GET", "/v2/vms", None, None),
        ("outside the API", "GET", "/etc/passwd", None, None),
        ("path traversal", "GET", "/v1/vms/%2e%2e/%2e%2e/etc/passwd", None, None),
        ("unknown action", "POST", f"/v1/vms/{rid}/explode", None, None),
        ("action on unknown VM", "POST", f"/v1/vms/{rid}/start", None, None),
        ("DELETE collection", "DELETE", "/v1/vms", None, None),
        ("PUT on a VM", "PUT", f"/v1/vms/{rid}", b"{}", J),
        ("GET an action", "GET", f"/v1/vms/{rid}/start", None, None),
        ("id not a UUID", "GET", "/v1/vms/not-a-uuid", None, None),
        ("id with quote", "GET", "/v1/vms/a'b", None, None),
        ("id unknown", "GET", f"/v1/vms/{rid}", None, None),
        ("id too long", "GET", "/v1/vms/" + "a" * 300, None, None),
        ("limit not a number", "GET", "/v1/vms?limit=abc", None, None),
        ("limit negative", "GET", "/v1/vms?limit=-1", None, None),
        ("limit huge", "GET", "/v1/vms?limit=99999999999999999999", None, None),
        ("marker not a UUID", "GET", "/v1/vms?marker=zzz", None, None),
        ("unknown query param", "GET", "/v1/vms?bogus=1", None, None),
        ("encoded NUL in query", "GET", "/v1/vms?limit=%00", None, None),
        ("bad percent escape", "GET", "/v1/vms?limit=%zz", None, None),
        ("repeated query param", "GET", "/v1/vms?limit=1&limit=2", None, None),
    ]
    for name, method, path, body, ctype in cases:
        try:
            r = request(method, path, body=body, ctype=ctype, timeout=30)
        except Exception as e:  # noqa: BLE001 - any failure is this case's failure
            soft_check(f"bad input: {name}", False, repr(e))
            continue
        # nginx's own error pages carry an X-Request-Id too, like the API's.
        soft_check(f"bad input: {name} -> {r.status}", 400 <= r.status < 500 and is_problem(r)
                   and bool(r.header("X-Request-Id")), repr(r))
    r = request("GET", "/v1/health")
    check("health is 200 after the bad input", r.status == 200, repr(r))
    r = request("GET", "/v1/vms?limit=200")
    check("no VM was created by bad input", r.status == 200 and not any(
        v.get("name") in ("ok-name",) for v in r.json.get("items", [])), repr(r))


# --- (d) a worker dies ----------------------------------------------------

def api_workers():
    with open(API_PIDFILE) as f:
        master = int(f.read().strip())
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return master, sorted(int(p) for p in out.split())


def scenario_workers():
    master, workers = api_workers()
    check("the API has worker processes", len(workers) >= 2, repr(workers))
    victim = workers[0]
    errors = []
    ok = [0]
    lock = threading.Lock()
    stop_at = time.time() + 4

    def client():
        # Bounded: at most 4 s or 20000 requests per thread.
        for _ in range(20000):
            if time.time() > stop_at:
                return
            try:
                r = request("GET", "/v1/vms?limit=5", timeout=10)
                with lock:
                    if r.status == 200:
                        ok[0] += 1
                    else:
                        errors.append(r.status)
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1)
    os.kill(victim, signal.SIGKILL)
    for t in threads:
        t.join()
    print(f"       {ok[0]} answered 200; others: {errors}")
    check("requests keep succeeding after kill -9 of a worker",
          ok[0] > 0 and len(errors) <= 1 and all(e == 502 for e in errors), repr(errors))
    deadline = time.time() + 10
    while time.time() < deadline:
        m, now = api_workers()
        if victim not in now and len(now) == len(workers):
            break
        time.sleep(0.2)
    check("the master replaced the worker", m == master and victim not in now
          and len(now) == len(workers), f"before {workers}, now {now}")
    r = request("GET", "/v1/health")
    check("health is 200", r.status == 200, repr(r))


# --- (e) libvirtd restarts ------------------------------------------------

def libvirtd_pid():
    out = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def scenario_libvirtd():
    old = libvirtd_pid()
    check("libvirtd runs", old is not None)
    os.kill(old, signal.SIGTERM)
    deadline = time.time() + 20
    while time.time() < deadline and os.path.exists(f"/proc/{old}"):
        time.sleep(0.1)
    check("libvirtd stopped", not os.path.exists(f"/proc/{old}"))
    new = None
    try:
        statuses = []
        for _ in range(8):
            t0 = time.time()
            try:
                r = request("GET", "/v1/vms?limit=5", timeout=15)
                statuses.append((r.status, r.header("Retry-After"), is_problem(r),
                                 round(time.time() - t0, 1)))
            except Exception as e:  # noqa: BLE001
                statuses.append((repr(e), None, False, round(time.time() - t0, 1)))
        print(f"       while down: {statuses}")
        check("while libvirtd is down requests answer 503 + Retry-After, promptly",
              all(s[0] == 503 and s[1] and s[2] and s[3] < 10 for s in statuses), repr(statuses))
        r = request("GET", "/v1/health", timeout=15)
        check("health says unavailable while libvirtd is down", r.status == 503, repr(r))
    finally:
        subprocess.run(["libvirtd", "-d"], check=False)
        deadline = time.time() + 30
        while time.time() < deadline:
            if subprocess.run(VIRSH + ["version"], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        new = libvirtd_pid()
        # A libvirtd that a script started (and will stop) is now this one.
        for path in SERVICES_FILES:
            try:
                with open(path) as f:
                    lines = f.read().splitlines()
            except OSError:
                continue
            lines = [f"libvirtd {new}" if l.split() == ["libvirtd", str(old)] else l
                     for l in lines]
            with open(path, "w") as f:
                f.write("".join(l + "\n" for l in lines))
    check("libvirtd is back", new is not None)
    deadline = time.time() + 30
    r = None
    while time.time() < deadline:
        r = request("GET", "/v1/vms?limit=5", timeout=15)
        if r.status == 200:
            break
        time.sleep(0.5)
    check("requests succeed again without restarting stratus", r is not None and r.status == 200,
          repr(r))
    good = sum(request("GET", "/v1/vms?limit=5", timeout=15).status == 200 for _ in range(20))
    check("every worker reconnected (20 of 20 requests answer 200)", good == 20, f"{good}/20")


# --- (e2) libvirtd hangs (SIGSTOP) -------------------------------------------

LIBVIRT_SOCKETS = ("/var/run/libvirt/libvirt-sock", "/run/libvirt/libvirt-sock")


def libvirt_socket_inodes():
    """Inodes of the listening sockets bound to libvirt's read-write socket path."""
    want = {os.path.realpath(p) for p in LIBVIRT_SOCKETS} | set(LIBVIRT_SOCKETS)
    inodes = set()
    try:
        with open("/proc/net/unix") as f:
            next(f, None)
            for line in f:
                cols = line.split()
                # Num RefCount Protocol Flags Type St Inode Path; 0x10000 = listening
                if len(cols) >= 8 and cols[7] in want and int(cols[3], 16) & 0x10000:
                    inodes.add(cols[6])
    except OSError:
        pass
    return inodes


def proc_comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def served_libvirtd_pid():
    """The libvirtd this run uses: among the processes named libvirtd, the one
    listening on libvirt's socket, else the one a services file records.
    None rather than a guess: another daemon must never be stopped."""
    cands = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True,
                           text=True).stdout.split()
    cands = [int(p) for p in cands]
    inodes = libvirt_socket_inodes()
    if inodes:
        for pid in cands:
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return pid, "serves the libvirt socket"
    for path in SERVICES_FILES:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for l in lines:
            w = l.split()
            if len(w) == 2 and w[0] == "libvirtd" and w[1].isdigit() and int(w[1]) in cands:
                return int(w[1]), f"recorded in {path}"
    return None, f"candidates {cands}, socket inodes {sorted(inodes)}"


def timed_get(path, timeout=60):
    """(start, seconds, Resp or the exception) of one GET."""
    t0 = time.time()
    try:
        r = request("GET", path, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - reported as this request's outcome
        r = e
    return t0, time.time() - t0, r


def scenario_libvirtd_hang():
    hang_limit = 45      # every answer within this, never a hang
    stopped_for = 25     # new requests are sent for this long after the stop
    paths = ("/v1/vms?limit=5", "/v1/health")
    r = request("GET", "/v1/health", timeout=15)
    check("health is 200 before libvirtd is stopped", r.status == 200, repr(r))
    master, workers = api_workers()
    pid, how = served_libvirtd_pid()
    check("the libvirtd of this run is found", pid is not None, how)
    print(f"       libvirtd {pid} ({how}); API master {master}, workers {workers}")

    results = []         # (path, start, seconds, Resp or exception)
    lock = threading.Lock()
    t_stop = [None]      # when libvirtd was seen stopped
    end_at = [time.time() + 120]

    def client(i):
        n = k = 0
        while time.time() < end_at[0]:
            if t_stop[0] is None:
                path = paths[(i + n) % len(paths)]
                n += 1
            else:   # from the stop on, thread i starts with paths[i % 2]: both get sent
                path = paths[(i + k) % len(paths)]
                k += 1
            t0, secs, r = timed_get(path)
            with lock:
                results.append((path, t0, secs, r))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(3)]
    stop_t0 = None
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        stop_t0 = time.time()
        os.kill(pid, signal.SIGSTOP)
        deadline = time.time() + 5
        while time.time() < deadline and proc_state(pid) != "T":
            time.sleep(0.02)
        t_stop[0] = time.time()
        check("libvirtd is stopped (SIGSTOP)", proc_state(pid) == "T", repr(proc_state(pid)))
        end_at[0] = t_stop[0] + stopped_for
        for t in threads:
            t.join(stopped_for + 65)
        hung = [t for t in threads if t.is_alive()]
    finally:
        end_at[0] = 0
        if stop_t0 is not None and proc_comm(pid) == "libvirtd":
            os.kill(pid, signal.SIGCONT)
    t_cont = time.time()
    print(f"       libvirtd stopped for {t_cont - t_stop[0]:.1f} s")

    before = [x for x in results if x[1] < t_stop[0]]
    during = [x for x in results if x[1] >= t_stop[0]]

    def show(x):
        path, t0, secs, r = x
        what = (f"{r.status}{' RA=' + r.header('Retry-After') if r.header('Retry-After') else ''}"
                f"{' problem' if is_problem(r) else ''}" if isinstance(r, Resp) else repr(r))
        return f"{path.split('?')[0]} at {t0 - t_stop[0]:+.1f}s took {secs:.1f}s: {what}"

    slow = [x for x in before if x[2] > 1]
    print(f"       in before the stop: {len(before)} "
          f"({sum(isinstance(x[3], Resp) and x[3].status == 200 for x in before)} x 200); "
          f"slow ones: {[show(x) for x in slow]}")
    print(f"       sent while stopped: {[show(x) for x in during]}")
    check("no client thread hangs", not hung, f"{len(hung)} still waiting")
    check("every answer arrives within 45 s", all(isinstance(x[3], Resp) and x[2] < hang_limit
                                                   for x in results),
          repr([show(x) for x in results if not (isinstance(x[3], Resp) and x[2] < hang_limit)]))

    def unavailable(r):
        return r.status == 503 and is_problem(r) and bool(r.header("Retry-After"))

    check("requests in before the stop answer 200 or 503 + Retry-After (problem)",
          all(x[3].status == 200 or unavailable(x[3]) for x in before),
          repr([show(x) for x in before if not (x[3].status == 200 or unavailable(x[3]))]))
    check("requests were sent while libvirtd was stopped (GET /v1/vms and /v1/health)",
          {x[0] for x in during} == set(paths), repr([show(x) for x in during]))
    check("while libvirtd is stopped requests answer 503 + Retry-After (problem)",
          all(unavailable(x[3]) for x in during),
          repr([show(x) for x in during if not unavailable(x[3])]))

    # Back: every worker must answer again, with no restart of stratus.
    deadline = t_cont + 60
    r = None
    while time.time() < deadline:
        _, secs, r = timed_get("/v1/vms?limit=5", timeout=max(1, min(60, deadline - time.time())))
        if isinstance(r, Resp) and r.status == 200:
            break
        time.sleep(0.5)
    print(f"       first 200 {time.time() - t_cont:.1f} s after SIGCONT")
    check("requests answer 200 again within 60 s of SIGCONT",
          isinstance(r, Resp) and r.status == 200, repr(r))
    rounds = []
    for _ in range(5):   # 4 at a time, so that every worker gets some
        batch = []
        ts = [threading.Thread(target=lambda p=p: batch.append(timed_get(p, timeout=60)),
                               daemon=True) for p in paths * 2]
        for t in ts:
            t.start()
        for t in ts:
            t.join(65)
        rounds += batch
    good = sum(isinstance(x[2], Resp) and x[2].status == 200 for x in rounds)
    print(f"       after: {good}/20 answered 200, slowest {max(x[1] for x in rounds):.1f} s")
    check("every worker answers again (20 of 20 requests answer 200)", good == 20,
          repr([x[2] for x in rounds if not (isinstance(x[2], Resp) and x[2].status == 200)]))
    m, now = api_workers()
    print(f"       API master {m}, workers {now}")
    check("stratus was not restarted (same master)", m == master, f"{master} -> {m}")


# --- (f) SIGHUP replaces the workers; SIGTERM drains them ---------------------

def pid_gone(pid):
    """True once @pid has exited (a zombie counts: it no longer runs)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def api_setting(name, default):
    """A value from the stack's stratus.conf (written by scripts/run.sh)."""
    try:
        with open(os.path.join(STATE, "stratus.conf")) as f:
            for line in f:
                key, _, value = line.partition("=")
                if key.strip() == name and value.strip():
                    return value.strip()
    except OSError:
        pass
    return default


def api_socket():
    return api_setting("socket", os.path.join(os.path.dirname(API_PIDFILE), "api.sock"))


def settled_workers():
    """The master and its workers once all configured workers run (a worker
    that failed at start-up is restarted after a short back-off)."""
    want = int(api_setting("workers", "0"))
    deadline = time.time() + 15
    master, workers = api_workers()
    while time.time() < deadline and len(workers) != want:
        time.sleep(0.2)
        master, workers = api_workers()
    return master, workers, want


def fcgi_record(rtype, content=b""):
    return struct.pack("!BBHHBB", 1, rtype, 1, len(content), 0, 0) + content


def fcgi_params(params):
    out = b""
    for k, v in params.items():
        k, v = k.encode(), v.encode()
        for n in (len(k), len(v)):
            out += struct.pack("!B", n) if n < 128 else struct.pack("!I", n | 0x80000000)
        out += k + v
    return out


def fcgi_read_stdout(sock):
    """The FCGI_STDOUT stream of request 1, up to FCGI_END_REQUEST."""
    data = b""
    out = b""
    while True:
        while len(data) >= 8:
            _, rtype, _, clen, plen, _ = struct.unpack("!BBHHBB", data[:8])
            if len(data) < 8 + clen + plen:
                break
            if rtype == 6:
                out += data[8:8 + clen]
            elif rtype == 3:
                return out
            data = data[8 + clen + plen:]
        chunk = sock.recv(65536)
        if not chunk:
            return out
        data += chunk


def restart_stack():
    run = os.path.join(ROOT, "scripts", "run.sh")
    subprocess.run([run, "--profile", "e2e", "--stop"], cwd=ROOT, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p = subprocess.run([run, "--profile", "e2e", "--detach"], cwd=ROOT, timeout=120,
                       capture_output=True, text=True)
    return p.returncode == 0, p.stderr.strip()[-500:]


def hammer(seconds):
    """Start 3 client threads issuing GETs for @seconds; returns (threads, ok, errors)."""
    ok = [0]
    errors = []
    lock = threading.Lock()
    stop_at = time.time() + seconds

    def client():
        for _ in range(20000):
            if time.time() > stop_at:
                return
            try:
                r = request("GET", "/v1/vms?limit=5", timeout=10)
                with lock:
                    if r.status == 200:
                        ok[0] += 1
                    else:
                        errors.append(r.status)
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    return threads, ok, errors


def signals_hup():
    master, old, want = settled_workers()
    check(f"the API runs its {want} workers", len(old) == want >= 2, repr(old))
    threads, ok, errors = hammer(5)
    time.sleep(1)
    os.kill(master, signal.SIGHUP)
    now = old
    deadline = time.time() + 10
    while time.time() < deadline:
        _, now = api_workers()
        if len(now) == len(old) and not set(now) & set(old):
            break
        time.sleep(0.1)
    for t in threads:
        t.join()
    print(f"       workers {old} -> {now}; {ok[0]} answered 200; others: {errors}")
    check("SIGHUP replaces every worker within 10 s", len(now) == len(old)
          and not set(now) & set(old), f"before {old}, now {now}")
    check("requests answer 200 throughout the SIGHUP", ok[0] > 0 and not errors, repr(errors))
    good = sum(request("GET", "/v1/vms?limit=5", timeout=15).status == 200 for _ in range(10))
    check("requests answer 200 after the SIGHUP (10 of 10)", good == 10, f"{good}/10")


def signals_term():
    tag = uuid.uuid4().hex[:8]
    image_id = import_image("s" + tag)
    r = request("POST", "/v1/vms", {"name": f"drain-{tag}", "image_id": image_id, "vcpus": 1,
                                     "memory_mib": 256, "disk_gib": 1}, timeout=120)
    check("POST /v1/vms answers 201", r.status == 201 and isinstance(r.json, dict), repr(r))
    vm_id = r.json["id"]
    cleanup_vms.append(vm_id)
    r = wait_vm(vm_id, "running")
    check("the VM becomes running", r.json.get("status") == "running", repr(r))
    master, workers = api_workers()

    # A connection a worker has accepted while its request is still arriving:
    # the worker must answer it, not exit with it in hand.
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(20)
    raw.connect(api_socket())
    params = fcgi_params({"REQUEST_METHOD": "GET", "REQUEST_URI": "/v1/health",
                          "SCRIPT_NAME": "/v1/health", "QUERY_STRING": "",
                          "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_ID": "drain-raw-" + tag})
    raw.sendall(fcgi_record(1, struct.pack("!HB5x", 1, 0)) + fcgi_record(4, params))

    # The stop outlasts the signal: the guest is still booting and ignores
    # ACPI, so the API waits stop_timeout_s (5 s in e2e), then pulls the plug.
    result = {}

    def stop():
        t0 = time.time()
        try:
            result["resp"] = request("POST", f"/v1/vms/{vm_id}/stop", timeout=60)
        except Exception as e:  # noqa: BLE001
            result["resp"] = e
        result["secs"] = time.time() - t0

    t = threading.Thread(target=stop)
    t.start()
    time.sleep(1)
    os.kill(master, signal.SIGTERM)
    time.sleep(1)
    try:
        raw.sendall(fcgi_record(4) + fcgi_record(5))
        out = fcgi_read_stdout(raw)
    except OSError as e:
        out = repr(e).encode()
    finally:
        raw.close()
    check("a request still arriving at SIGTERM is answered 200",
          out.startswith(b"Status: 200"), repr(out[:200]))
    t.join(90)
    r = result.get("resp")
    print(f"       stop took {result.get('secs', 0):.1f} s: {r!r}"[:300])
    check("the stop in flight at SIGTERM answers 200", isinstance(r, Resp) and r.status == 200,
          repr(r))
    check("... with status stopped", r.json.get("status") == "stopped", repr(r))
    check("... and it was still running when the signal came (it lasted over 1.5 s)",
          result.get("secs", 0) > 1.5, f"{result.get('secs', 0):.1f} s")
    deadline = time.time() + 40
    while time.time() < deadline and not all(pid_gone(p) for p in [master] + workers):
        time.sleep(0.2)
    check("the master and its workers exit after the drain",
          all(pid_gone(p) for p in [master] + workers),
          repr([p for p in [master] + workers if not pid_gone(p)]))
    return vm_id


def scenario_signals():
    signals_hup()
    master, _ = api_workers()
    vm_id = None
    try:
        vm_id = signals_term()
    finally:
        if pid_gone(master):
            up, why = restart_stack()
            check("the stack starts again (scripts/run.sh --detach)", up, why)
    if vm_id:
        d = request("DELETE", f"/v1/vms/{vm_id}", timeout=120)
        check("DELETE of the drained VM answers 204", d.status == 204, repr(d))
        cleanup_vms.remove(vm_id)


SCENARIOS = {
    "badinput": scenario_badinput,
    "lifecycle": scenario_lifecycle,
    "failure": scenario_failure,
    "workers": scenario_workers,
    "libvirtd": scenario_libvirtd,
    "libvirtd_hang": scenario_libvirtd_hang,
    "signals": scenario_signals,
}


def cleanup():
    for vm_id in list(cleanup_vms):
        try:
            request("DELETE", f"/v1/vms/{vm_id}", timeout=120)
        except Exception:  # noqa: BLE001
            pass
    for image_id in cleanup_images:
        try:
            r = request("DELETE", f"/v1/images/{image_id}", timeout=60)
            soft_check(f"DELETE image {image_id[:8]} answers 204", r.status == 204, repr(r))
        except Exception as e:  # noqa: BLE001
            soft_check("DELETE image", False, repr(e))


def main():
    global failed
    names = sys.argv[1:] or list(SCENARIOS)
    for name in names:
        print(f"--- {name}", flush=True)
        t0 = time.time()
        try:
            SCENARIOS[name]()
        except Fail:
            pass
        except Exception as e:  # noqa: BLE001 - a crash is a failure, not an abort
            failed += 1
            print(f"FAIL - {name}: unexpected {e!r}", flush=True)
        print(f"       ({time.time() - t0:.1f} s)")
    cleanup()
    print(f"e2e: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
