#!/usr/bin/env python3
"""Black-box scenarios against a running stratus stack, through nginx.

Started by tests/e2e/run.sh, which passes the stack's layout in the
environment (E2E_URL, E2E_STATE, E2E_CONSOLE_DIR, E2E_IMPORT_DIR,
E2E_POOLS_DIR, E2E_API_PIDFILE, E2E_GUEST, E2E_SERVICES_FILES, E2E_ROOT).
Standard library only.  Prints one line per check and ends with
"e2e: N passed, N failed".

    tests/e2e/test_api.py [scenario ...]   # badinput lifecycle failure workers libvirtd
                                           # libvirtd_hang signals auth tenancy quota
                                           # throttle audit

Every request is sent as the bootstrap admin (its password is in
<E2E_STATE>/admin-password) unless a scenario says otherwise.
"""

import base64
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
import tempfile
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
ADMIN_BIN = os.environ.get("E2E_ADMIN_BIN", os.path.join(ROOT, "build", "stratus-admin"))
ADMIN_PASSWORD_FILE = os.path.join(STATE, "admin-password")
ACTIONS = ("start", "stop", "reboot", "force-stop", "pause", "resume")
WRONG_LOGIN = "e-mail or password is wrong"

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


def request(method, path, body=None, ctype="application/json", timeout=60, headers=None,
            token=None):
    """One request on a fresh connection.  @body: dict/list (JSON), bytes or None.
    @token: None sends the admin's token, a string sends that token (or API
    key) instead, False sends no Authorization header; an Authorization in
    @headers is sent as it is."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    hdrs = dict(headers or {})
    if body is not None and ctype is not None:
        hdrs["Content-Type"] = ctype
    if token is not False and not any(k.lower() == "authorization" for k in hdrs):
        hdrs["Authorization"] = "Bearer " + (admin_token() if token is None else token)
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


# --- identity helpers ------------------------------------------------------

_auth_lock = threading.Lock()
_admin = {"token": None, "renew_at": 0.0, "id": None}


def admin_email():
    return api_setting("admin_email", "admin@localhost")


def admin_password():
    with open(ADMIN_PASSWORD_FILE) as f:
        return f.readline().rstrip("\r\n")


def login(email, password, headers=None, timeout=60):
    return request("POST", "/v1/auth/tokens", {"email": email, "password": password},
                   token=False, headers=headers, timeout=timeout)


def admin_token():
    """The bootstrap admin's token: logged in once, again shortly before it expires."""
    with _auth_lock:
        if _admin["token"] is None or time.time() >= _admin["renew_at"]:
            try:
                r = login(admin_email(), admin_password())
            except OSError as e:
                r = e
            ok = (isinstance(r, Resp) and r.status == 200 and isinstance(r.json, dict)
                  and isinstance(r.json.get("token"), str))
            if not ok:
                check("the bootstrap admin logs in", False, repr(r))
            _admin["token"] = r.json["token"]
            ttl = r.json.get("expires_in")
            ttl = ttl if isinstance(ttl, int) and ttl > 0 else 600
            _admin["renew_at"] = time.time() + max(ttl - 300, ttl / 2)
        return _admin["token"]


def admin_id():
    if _admin["id"] is None:
        r = request("GET", "/v1/users/me")
        check("GET /v1/users/me as the admin answers 200", r.status == 200
              and isinstance(r.json, dict) and isinstance(r.json.get("id"), str), repr(r))
        _admin["id"] = r.json["id"]
    return _admin["id"]


def new_user(label, do_login=True):
    """A fresh user created by the admin: dict(id, email, password, nickname, token)."""
    tag = uuid.uuid4().hex[:8]
    u = {"email": f"{label}-{tag}@example.test", "password": "pw-" + uuid.uuid4().hex[:20],
         "nickname": f"{label}-{tag}", "token": None}
    r = request("POST", "/v1/users", {"email": u["email"], "password": u["password"],
                                      "nickname": u["nickname"]})
    check(f"the admin creates user {u['email']} (201)", r.status == 201
          and isinstance(r.json, dict) and r.json.get("email") == u["email"]
          and isinstance(r.json.get("id"), str), repr(r))
    u["id"] = r.json["id"]
    if do_login:
        r = login(u["email"], u["password"])
        check(f"user {label} logs in (200)", r.status == 200 and isinstance(r.json, dict)
              and isinstance(r.json.get("token"), str), repr(r))
        u["token"] = r.json["token"]
    return u


def admin_cli(*args, conf=None, stdin=None):
    """(exit code, stdout + stderr) of stratus-admin -c @conf @args, STRATUS_* unset."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATUS_")}
    p = subprocess.run([ADMIN_BIN, "-c", conf or os.path.join(STATE, "stratus.conf")]
                       + list(args), env=env, input=stdin, capture_output=True, text=True,
                       timeout=120)
    return p.returncode, (p.stdout + p.stderr).strip()


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_json(part):
    try:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except ValueError:
        return None


def is_problem(r):
    ct = (r.header("Content-Type") or "").split(";")[0].strip()
    j = r.json
    return (ct == "application/problem+json" and isinstance(j, dict)
            and j.get("status") == r.status and isinstance(j.get("title"), str))


def full_problem(r):
    """A problem document with every member the API promises."""
    return is_problem(r) and all(isinstance(r.json.get(k), str)
                                 for k in ("type", "detail", "request_id"))


def problem_key(r):
    j = r.json if isinstance(r.json, dict) else {}
    return (r.status, j.get("type"), j.get("title"), j.get("status"))


def leaks_secret(doc):
    """Whether a JSON document has a member named like a password or a hash."""
    if isinstance(doc, dict):
        return any("password" in k.lower() or "hash" in k.lower() or leaks_secret(v)
                   for k, v in doc.items())
    if isinstance(doc, list):
        return any(leaks_secret(v) for v in doc)
    return False


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


def wait_vm(vm_id, want, timeout=120, token=None):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = request("GET", f"/v1/vms/{vm_id}", token=token)
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


def action(vm_id, name, want, timeout=120, token=None):
    r = request("POST", f"/v1/vms/{vm_id}/{name}", timeout=timeout, token=token)
    check(f"POST {name} answers 200 with the VM", r.status == 200 and isinstance(r.json, dict)
          and r.json.get("id") == vm_id, repr(r))
    if r.json.get("status") != want:
        r = wait_vm(vm_id, want, token=token)
    check(f"after {name} the VM is {want}", r.status == 200 and r.json.get("status") == want,
          repr(r))
    return r


def guest_copy(tag):
    """A copy of the test guest in the import dir, for POST /v1/images."""
    check("the guest image was built", bool(GUEST) and os.path.isfile(GUEST), GUEST)
    src = os.path.join(IMPORT_DIR, f"guest-{tag}.qcow2")
    shutil.copyfile(GUEST, src)
    os.chmod(src, 0o644)
    return src


def import_image(tag, token=None, visibility=None):
    src = guest_copy(tag)
    body = {"name": f"guest-{tag}", "source_path": src, "format": "qcow2"}
    if visibility is not None:
        body["visibility"] = visibility
    r = request("POST", "/v1/images", body, timeout=120, token=token)
    check("POST /v1/images answers 201 with a Location", r.status == 201
          and (r.header("Location") or "").startswith("/v1/images/")
          and isinstance(r.json, dict) and "id" in r.json, repr(r))
    image_id = r.json["id"]
    cleanup_images.append(image_id)
    g = request("GET", f"/v1/images/{image_id}", token=token)
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
    # 2 TiB of guest RAM: validation accepts it, QEMU cannot allocate it.  The
    # admin's default quota (64 GiB) would refuse it first: raise it meanwhile.
    me = admin_id()
    r = request("PATCH", f"/v1/users/{me}", {"quota": {"max_memory_mib": 4 * 1048576}})
    check("the admin's memory quota is raised to 4 TiB", r.status == 200, repr(r))
    try:
        failure_create()
    finally:
        r = request("PATCH", f"/v1/users/{me}", {"quota": {"max_memory_mib": None}})
        check("the admin's memory quota is back to the default", r.status == 200
              and (r.json.get("quota") or {}).get("max_memory_mib") == 65536, repr(r))


def failure_create():
    tag = uuid.uuid4().hex[:8]
    image_id = import_image("f" + tag)
    before = domains() or set()
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


# --- (g) authentication -----------------------------------------------------

def protected_routes(rid):
    """Every route that needs credentials: (method, path, body), @rid where an id goes."""
    b = {}
    routes = [("GET", "/v1/vms", None), ("POST", "/v1/vms", b),
              ("GET", f"/v1/vms/{rid}", None), ("PATCH", f"/v1/vms/{rid}", b),
              ("DELETE", f"/v1/vms/{rid}", None)]
    routes += [("POST", f"/v1/vms/{rid}/{a}", None) for a in ACTIONS]
    routes += [("GET", "/v1/images", None), ("POST", "/v1/images", b),
               ("GET", f"/v1/images/{rid}", None), ("DELETE", f"/v1/images/{rid}", None),
               ("GET", "/v1/flavors", None), ("POST", "/v1/flavors", b),
               ("GET", f"/v1/flavors/{rid}", None), ("DELETE", f"/v1/flavors/{rid}", None),
               # open to anyone, but without a token it is 401 while registration is closed
               ("POST", "/v1/users", b),
               ("GET", "/v1/users", None), ("GET", "/v1/users/me", None),
               ("PATCH", "/v1/users/me", b), ("GET", "/v1/users/me/quota", None),
               ("GET", f"/v1/users/{rid}", None), ("PATCH", f"/v1/users/{rid}", b),
               ("GET", f"/v1/users/{rid}/quota", None),
               ("POST", "/v1/users/me/api-keys", b), ("GET", "/v1/users/me/api-keys", None),
               ("DELETE", f"/v1/users/me/api-keys/{rid}", None),
               ("GET", "/v1/audit", None)]
    return routes


OPEN_ROUTES = {("GET", "/v1/health"), ("GET", "/v1/version"), ("POST", "/v1/auth/tokens")}


def dispatch_table_routes():
    """(method, pattern) of the route table in app/api/dispatch.c, if it can be read:
    a guard against this list falling behind the server's."""
    try:
        with open(os.path.join(ROOT, "app", "api", "dispatch.c")) as f:
            src = f.read()
    except OSError:
        return set()
    found = set(re.findall(r'\{\s*"(GET|POST|PUT|PATCH|DELETE)",\s*"(/v1/[^"]*)"', src))
    found |= {("POST", "/v1/vms/{id}/" + a) for a in re.findall(r'ACTION\("([a-z-]+)"\)', src)}
    return found


def unauthorized(r):
    www = r.header("WWW-Authenticate") or ""
    return (r.status == 401 and full_problem(r) and www.split(" ")[0].lower() == "bearer"
            and 'realm="stratus"' in www)


def auth_matrix(rid, variants):
    """Every protected route with each credential variant: 401 + WWW-Authenticate + problem."""
    for what, hdrs in variants:
        bad = []
        n = 0
        for method, path, body in protected_routes(rid):
            r = request(method, path, body, token=False, headers=hdrs, timeout=30)
            n += 1
            if not unauthorized(r):
                bad.append(f"{method} {path}: {r.status} "
                           f"WWW-Authenticate={r.header('WWW-Authenticate')!r} {r.body[:120]!r}")
        soft_check(f"{what}: all {n} protected routes answer 401 + WWW-Authenticate: Bearer "
                   f"+ problem", not bad, "; ".join(bad))


def scenario_auth():
    rid = str(uuid.uuid4())

    # The route list above must be the server's whole table.
    table = dispatch_table_routes()
    listed = {(m, re.sub(r"/[0-9a-f-]{36}", "/{id}", p)) for m, p, _ in protected_routes(rid)}
    if table:
        check("the scenario lists every route of the server's table",
              table == listed | OPEN_ROUTES,
              f"not listed: {sorted(table - listed - OPEN_ROUTES)}; "
              f"not in the table: {sorted((listed | OPEN_ROUTES) - table)}")

    # Open routes answer without a token; unknown routes and methods as before.
    for path in ("/v1/health", "/v1/version"):
        r = request("GET", path, token=False)
        check(f"GET {path} without a token answers 200", r.status == 200, repr(r))
    for method, path, want in (("GET", "/v1/nope", 404), ("GET", f"/v1/vms/{rid}/nope", 404),
                               ("DELETE", "/v1/vms", 405), ("PUT", "/v1/users/me", 405),
                               ("GET", f"/v1/vms/{rid}/start", 405)):
        r = request(method, path, token=False)
        check(f"{method} {path} without a token answers {want} (problem)",
              r.status == want and is_problem(r), repr(r))

    # The bootstrap admin.
    st = os.stat(ADMIN_PASSWORD_FILE)
    check("the admin password file is mode 0600", st.st_mode & 0o777 == 0o600, oct(st.st_mode))
    r = login(admin_email(), admin_password())
    j = r.json if isinstance(r.json, dict) else {}
    check("the bootstrap admin logs in: 200 with a Bearer token", r.status == 200
          and isinstance(j.get("token"), str) and j.get("token_type") == "Bearer", repr(r))
    check("... expires_at is RFC 3339 and expires_in a positive integer",
          isinstance(j.get("expires_at"), str) and re.fullmatch(
              r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", j["expires_at"])
          is not None and isinstance(j.get("expires_in"), int) and j["expires_in"] > 0, repr(j))
    atoken = j["token"]
    r = request("GET", "/v1/users/me", token=atoken)
    check("the admin's token works: GET /v1/users/me is the admin", r.status == 200
          and r.json.get("email") == admin_email() and "admin" in (r.json.get("roles") or []),
          repr(r))
    check("... and shows no password or hash", not leaks_secret(r.json), repr(r))

    # Bad credentials on every protected route.
    parts = atoken.split(".")
    check("the token has three parts", len(parts) == 3, atoken[:40])
    h, p, sig = parts
    i = len(p) // 2
    tampered = f"{h}.{p[:i]}{'B' if p[i] == 'A' else 'A'}{p[i + 1:]}.{sig}"
    none_h = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    auth_matrix(rid, [
        ("no credentials", {}),
        ("Authorization: Basic xyz", {"Authorization": "Basic xyz"}),
        ("Authorization: Bearer (empty)", {"Authorization": "Bearer "}),
        ("a garbage token", {"Authorization": "Bearer garbage.token.here"}),
        ("a token with a flipped payload character", {"Authorization": "Bearer " + tampered}),
        ('a token with header {"alg":"none"} and no signature',
         {"Authorization": f"Bearer {none_h}.{p}."}),
        ('a token with header {"alg":"none"} and the real signature',
         {"Authorization": f"Bearer {none_h}.{p}.{sig}"}),
        ("an unknown API key", {"Authorization": "Bearer stk_" + uuid.uuid4().hex}),
    ])

    # A user, created by the admin.
    tag = uuid.uuid4().hex[:8]
    email = f"auth-{tag}@example.test"
    pw = "pw-" + uuid.uuid4().hex[:20]
    for what, body in (("a 9-character password", {"email": email, "password": "x" * 9}),
                       ("a 1025-character password", {"email": email, "password": "x" * 1025}),
                       ("the e-mail as password", {"email": email, "password": email})):
        r = request("POST", "/v1/users", body)
        check(f"POST /v1/users with {what} answers 400 (problem)",
              r.status == 400 and full_problem(r), repr(r))
    r = request("POST", "/v1/users", {"email": email, "password": pw, "nickname": f"n-{tag}"})
    u = r.json if isinstance(r.json, dict) else {}
    check("the admin creates a user: 201", r.status == 201 and u.get("email") == email, repr(r))
    defaults = {"max_vms": 10, "max_vcpus": 32, "max_memory_mib": 65536, "max_disk_gib": 500}
    check("the user document: id, nickname, active, roles [user], default quota, times",
          isinstance(u.get("id"), str) and u.get("nickname") == f"n-{tag}"
          and u.get("status") == "active" and u.get("roles") == ["user"]
          and u.get("quota") == defaults and isinstance(u.get("created_at"), str)
          and isinstance(u.get("updated_at"), str), repr(u))
    check("... with no password or hash", not leaks_secret(u) and pw.encode() not in r.body,
          repr(u))
    uid = u["id"]
    r = request("POST", "/v1/users", {"email": email.upper(), "password": pw})
    check("the same e-mail in upper case answers 409 (problem)",
          r.status == 409 and full_problem(r), repr(r))

    r = login(email, pw)
    check("the user logs in (200)", r.status == 200 and isinstance(r.json.get("token"), str),
          repr(r))
    utoken = r.json["token"]
    r = request("GET", "/v1/users/me", token=utoken)
    check("the user's token works on GET /v1/users/me", r.status == 200
          and r.json.get("id") == uid and r.json.get("email") == email, repr(r))
    r = request("GET", f"/v1/users/{uid}", token=utoken)
    check("GET /v1/users/{own id} answers 200", r.status == 200 and r.json.get("id") == uid,
          repr(r))
    r = request("GET", f"/v1/users/{admin_id()}", token=utoken)
    check("GET /v1/users/{the admin's id} as the user answers 404 (problem)",
          r.status == 404 and full_problem(r), repr(r))

    r = request("PATCH", "/v1/users/me", {"nickname": f"renamed-{tag}"}, token=utoken)
    check("PATCH own nickname answers 200", r.status == 200
          and r.json.get("nickname") == f"renamed-{tag}", repr(r))
    r = request("GET", "/v1/users/me", token=utoken)
    check("GET shows the new nickname", r.status == 200
          and r.json.get("nickname") == f"renamed-{tag}", repr(r))
    for body in ({"status": "disabled"}, {"roles": ["user", "admin"]}, {"quota": {"max_vms": 99}}):
        for path in ("/v1/users/me", f"/v1/users/{uid}"):
            r = request("PATCH", path, body, token=utoken)
            check(f"PATCH {path.replace(uid, '{own id}')} {json.dumps(body)} as the user "
                  f"answers 403 (problem)", r.status == 403 and full_problem(r), repr(r))
    r = request("GET", "/v1/users/me", token=utoken)
    check("... and nothing changed", r.status == 200 and r.json.get("status") == "active"
          and r.json.get("roles") == ["user"] and r.json.get("quota") == defaults, repr(r))

    # Password change.
    pw2 = "pw2-" + uuid.uuid4().hex[:20]
    r = request("PATCH", "/v1/users/me", {"password": pw2}, token=utoken)
    check("a password change without old_password answers 400 (problem)",
          r.status == 400 and full_problem(r), repr(r))
    r = request("PATCH", "/v1/users/me", {"password": pw2, "old_password": pw + "x"},
                token=utoken)
    check("a password change with a wrong old_password answers 403 (problem)",
          r.status == 403 and full_problem(r), repr(r))
    r = request("PATCH", "/v1/users/me", {"password": "short", "old_password": pw}, token=utoken)
    check("a too short new password answers 400 (problem)",
          r.status == 400 and full_problem(r), repr(r))
    r = request("PATCH", "/v1/users/me", {"password": pw2, "old_password": pw}, token=utoken)
    check("a password change with the right old_password answers 200", r.status == 200
          and isinstance(r.json, dict) and not leaks_secret(r.json), repr(r))
    r = login(email, pw)
    check("the old password no longer logs in (401)", r.status == 401 and full_problem(r)
          and r.json.get("detail") == WRONG_LOGIN, repr(r))
    r = login(email, pw2)
    check("the new password logs in (200)", r.status == 200
          and isinstance(r.json.get("token"), str), repr(r))
    utoken = r.json["token"]
    r = login(f"nobody-{tag}@example.test", pw2)
    check("an unknown e-mail answers 401 with the same detail", r.status == 401
          and full_problem(r) and r.json.get("detail") == WRONG_LOGIN, repr(r))

    # API keys.
    r = request("POST", "/v1/users/me/api-keys", {"name": f"ci-{tag}"}, token=utoken)
    k = r.json if isinstance(r.json, dict) else {}
    check("POST /v1/users/me/api-keys answers 201 with the key", r.status == 201
          and isinstance(k.get("id"), str) and k.get("name") == f"ci-{tag}"
          and isinstance(k.get("key"), str) and k["key"].startswith("stk_")
          and isinstance(k.get("prefix"), str) and k["key"].startswith(k["prefix"])
          and isinstance(k.get("created_at"), str) and "last_used_at" in k
          and k["last_used_at"] is None and not leaks_secret(k), repr(r))
    key_id, key = k["id"], k["key"]
    r = request("GET", "/v1/users/me/api-keys", token=utoken)
    items = r.json.get("items") if isinstance(r.json, dict) else None
    check("GET /v1/users/me/api-keys lists it without the key or a hash", r.status == 200
          and isinstance(items, list) and [i.get("id") for i in items] == [key_id]
          and all("key" not in i for i in items) and not leaks_secret(r.json)
          and key.encode() not in r.body and r.json.get("next_marker") is None, repr(r))
    r = request("GET", "/v1/users/me", token=key)
    check("the API key works as a Bearer credential", r.status == 200
          and r.json.get("id") == uid, repr(r))
    r = request("GET", "/v1/users/me/api-keys", token=key)
    print(f"       after use: last_used_at {((r.json or {}).get('items') or [{}])[0].get('last_used_at')}")
    r = request("DELETE", f"/v1/users/me/api-keys/{key_id}", token=utoken)
    check("DELETE the API key answers 204", r.status == 204 and not r.body, repr(r))
    r = request("GET", "/v1/users/me", token=key)
    check("the revoked API key answers 401 + WWW-Authenticate", unauthorized(r), repr(r))
    r = request("DELETE", f"/v1/users/me/api-keys/{key_id}", token=utoken)
    check("a second DELETE of the key answers 404 (problem)",
          r.status == 404 and full_problem(r), repr(r))
    r = request("GET", "/v1/users/me/api-keys", token=utoken)
    check("the list no longer has it", r.status == 200 and not any(
        i.get("id") == key_id for i in r.json.get("items", [])), repr(r))
    r = request("POST", "/v1/users/me/api-keys", {"name": f"ci2-{tag}"}, token=utoken)
    check("a second API key is made (201)", r.status == 201
          and isinstance(r.json.get("key"), str), repr(r))
    key2 = r.json["key"]

    # Disabled by the admin: everything stops at once.
    r = request("PATCH", f"/v1/users/{uid}", {"status": "disabled"})
    check("the admin disables the user (200, status disabled)", r.status == 200
          and r.json.get("status") == "disabled", repr(r))
    r = request("GET", "/v1/users/me", token=utoken)
    check("the disabled user's token answers 401", unauthorized(r), repr(r))
    r = request("GET", "/v1/users/me", token=key2)
    check("the disabled user's API key answers 401", unauthorized(r), repr(r))
    r = login(email, pw2)
    check("the disabled user's login (right password) answers 403 (problem)",
          r.status == 403 and full_problem(r), repr(r))
    r = request("PATCH", f"/v1/users/{uid}", {"status": "active"})
    check("the admin enables the user again (200, status active)", r.status == 200
          and r.json.get("status") == "active", repr(r))
    r = request("GET", "/v1/users/me", token=utoken)
    check("the token works again (it has not expired)", r.status == 200
          and r.json.get("id") == uid, repr(r))

    # Admin-only routes.
    for method, path, body in (("GET", "/v1/users", None), ("GET", "/v1/audit", None),
                               ("POST", "/v1/flavors", {"name": f"f-{tag}", "vcpus": 1,
                                                        "memory_mib": 128, "disk_gib": 1}),
                               ("DELETE", f"/v1/flavors/{rid}", None),
                               ("POST", "/v1/users", {"email": f"x-{tag}@example.test",
                                                      "password": pw2})):
        r = request(method, path, body, token=utoken)
        check(f"{method} {path.replace(rid, '{id}')} with a user's token answers 403 (problem)",
              r.status == 403 and full_problem(r), repr(r))
    r = request("GET", "/v1/flavors", token=utoken)
    check("GET /v1/flavors with a user's token answers 200", r.status == 200, repr(r))
    r = request("GET", "/v1/users?limit=200")
    check("GET /v1/users as the admin lists the user", r.status == 200 and any(
        i.get("id") == uid for i in r.json.get("items", [])) and not leaks_secret(r.json),
        repr(r))

    # A new signing key: new tokens are signed with it (the API re-reads the
    # key file within about a second), tokens signed with the old one stay good.
    old_kid = (b64url_json(h) or {}).get("kid")
    rc, out = admin_cli("token", "rotate-key")
    m = re.search(r"signing key is now '([^']+)'", out)
    check("stratus-admin token rotate-key succeeds and names the new key", rc == 0
          and m is not None and m.group(1) != old_kid, out)
    print(f"       {out}")
    new_kid = ntoken = None
    for _ in range(5):
        time.sleep(1.2)
        r = login(email, pw2)
        check("a login after the rotation answers 200", r.status == 200
              and isinstance(r.json.get("token"), str), repr(r))
        ntoken = r.json["token"]
        new_kid = (b64url_json(ntoken.split(".")[0]) or {}).get("kid")
        if new_kid == m.group(1):
            break
    check("... and its token is signed with the new key", new_kid == m.group(1),
          f"kid {new_kid!r}, want {m.group(1)!r} (old {old_kid!r})")
    r = request("GET", "/v1/users/me", token=ntoken)
    check("... and works", r.status == 200 and r.json.get("id") == uid, repr(r))
    for who, tok in (("the admin's", atoken), ("the user's", utoken)):
        got = [request("GET", "/v1/users/me", token=tok).status for _ in range(8)]
        check(f"{who} token from before the rotation still works (8 of 8)",
              got == [200] * 8, repr(got))


# --- (h) tenancy: one user's things are invisible to another ----------------

def same_as_random(name, method, path_a, path_r, body, token):
    """@path_a (another user's id) must answer exactly like @path_r (a random id): 404."""
    ra = request(method, path_a, body, token=token, timeout=120)
    rr = request(method, path_r, body, token=token, timeout=120)
    check(f"{name}: 404 (problem), type/title/status as for a random id",
          ra.status == 404 and full_problem(ra) and problem_key(ra) == problem_key(rr),
          f"theirs {ra!r}; random {rr!r}")


def ids_of(r):
    return {i.get("id") for i in (r.json or {}).get("items", [])} if r.status == 200 else None


def scenario_tenancy():
    tag = uuid.uuid4().hex[:8]
    rid = str(uuid.uuid4())
    a = new_user("tenant-a")
    b = new_user("tenant-b")

    # A's things: a private image, a running VM, an API key.
    img = import_image("ta" + tag, token=a["token"])
    r = request("GET", f"/v1/images/{img}", token=a["token"])
    check("A's image is private and A's", r.status == 200 and r.json.get("visibility") == "private"
          and r.json.get("owner_id") == a["id"], repr(r))
    r = request("POST", "/v1/vms", {"name": f"ten-{tag}", "image_id": img, "vcpus": 1,
                                     "memory_mib": 256, "disk_gib": 1}, timeout=120,
                token=a["token"])
    check("A creates a VM (201), owned by A", r.status == 201 and isinstance(r.json, dict)
          and r.json.get("owner_id") == a["id"], repr(r))
    vm = r.json["id"]
    cleanup_vms.append(vm)
    r = wait_vm(vm, "running", token=a["token"])
    check("A's VM becomes running", r.json.get("status") == "running", repr(r))
    r = request("POST", "/v1/users/me/api-keys", {"name": f"a-{tag}"}, token=a["token"])
    check("A makes an API key (201)", r.status == 201 and isinstance(r.json.get("key"), str),
          repr(r))
    key_id, key = r.json["id"], r.json["key"]

    # B, on every one of A's ids: just like a random id.
    bt = b["token"]
    cases = [("GET", "/v1/vms/{}", vm, None),
             ("GET", "/v1/images/{}", img, None),
             ("GET", "/v1/users/{}", a["id"], None),
             ("GET", "/v1/users/{}/quota", a["id"], None),
             ("PATCH", "/v1/vms/{}", vm, {"name": f"hijack-{tag}"}),
             ("PATCH", "/v1/users/{}", a["id"], {"nickname": f"hijack-{tag}"})]
    cases += [("POST", f"/v1/vms/{{}}/{act}", vm, None) for act in ACTIONS]
    cases += [("DELETE", "/v1/vms/{}", vm, None),
              ("DELETE", "/v1/images/{}", img, None),
              ("DELETE", "/v1/users/me/api-keys/{}", key_id, None)]
    for method, pattern, their, body in cases:
        same_as_random(f"B: {method} {pattern.format('{A}')}", method, pattern.format(their),
                       pattern.format(rid), body, bt)
    steal = {"name": f"steal-{tag}", "vcpus": 1, "memory_mib": 128, "disk_gib": 1}
    ra = request("POST", "/v1/vms", dict(steal, image_id=img), token=bt, timeout=120)
    if ra.status == 201 and isinstance(ra.json, dict):
        cleanup_vms.append(ra.json.get("id"))
    rr = request("POST", "/v1/vms", dict(steal, image_id=rid), token=bt, timeout=120)
    da = str((ra.json or {}).get("detail")).replace(img, "ID")
    dr = str((rr.json or {}).get("detail")).replace(rid, "ID")
    check("B: POST /v1/vms with A's image answers like a random image id (400, same type "
          "and detail)", ra.status == rr.status == 400 and full_problem(ra)
          and problem_key(ra) == problem_key(rr) and da == dr and "does not exist" in da,
          f"A's image {ra!r}; random {rr!r}")

    for path, their in (("/v1/vms?limit=200", vm), ("/v1/images?limit=200", img),
                        ("/v1/users/me/api-keys", key_id)):
        r = request("GET", path, token=bt)
        got = ids_of(r)
        check(f"B: GET {path} answers 200 without A's id", got is not None and their not in got,
              repr(r))
    for path in (f"/v1/vms?owner_id={a['id']}", f"/v1/images?owner_id={a['id']}"):
        r = request("GET", path, token=bt)
        check(f"B: GET {path.replace(a['id'], '{A}')} answers 403 (problem)",
              r.status == 403 and full_problem(r), repr(r))

    # A's things are untouched.
    r = request("GET", f"/v1/vms/{vm}", token=a["token"])
    check("A's VM is still running with the same name", r.status == 200
          and r.json.get("status") == "running" and r.json.get("name") == f"ten-{tag}", repr(r))
    check(f"... and libvirt still has stratus-{vm}", f"stratus-{vm}" in (domains() or set()))
    r = request("GET", f"/v1/images/{img}", token=a["token"])
    check("A's image is still there", r.status == 200, repr(r))
    r = request("GET", "/v1/users/me", token=key)
    check("A's API key still works; A's nickname is unchanged", r.status == 200
          and r.json.get("id") == a["id"] and r.json.get("nickname") == a["nickname"], repr(r))
    r = request("GET", "/v1/users/me/quota", token=a["token"])
    check("A's quota shows its VM in use", r.status == 200 and r.json.get("user_id") == a["id"]
          and r.json.get("usage") == {"vms": 1, "vcpus": 1, "memory_mib": 256, "disk_gib": 1},
          repr(r))

    # The admin sees and acts on everything.
    r = request("GET", f"/v1/vms/{vm}")
    check("the admin can GET A's VM", r.status == 200 and r.json.get("owner_id") == a["id"],
          repr(r))
    r = request("GET", f"/v1/vms?owner_id={a['id']}&limit=200")
    check("the admin lists A's VMs with ?owner_id=A (only A's)", r.status == 200
          and ids_of(r) == {vm} and all(i.get("owner_id") == a["id"]
                                        for i in r.json.get("items", [])), repr(r))
    r = request("GET", f"/v1/images?owner_id={a['id']}&limit=200")
    check("the admin lists A's images with ?owner_id=A", r.status == 200 and img in ids_of(r)
          and all(i.get("owner_id") == a["id"] for i in r.json.get("items", [])), repr(r))
    r = request("GET", f"/v1/users/{a['id']}/quota")
    check("the admin reads A's quota", r.status == 200 and r.json.get("user_id") == a["id"]
          and (r.json.get("usage") or {}).get("vms") == 1, repr(r))
    action(vm, "stop", "stopped")
    action(vm, "start", "running")
    r = request("DELETE", f"/v1/vms/{vm}", timeout=120)
    check("the admin deletes A's VM (204)", r.status == 204, repr(r))
    cleanup_vms.remove(vm)
    r = request("GET", f"/v1/vms/{vm}", token=a["token"])
    check("... A sees it gone (404)", r.status == 404 and is_problem(r), repr(r))
    r = request("DELETE", f"/v1/images/{img}", timeout=60)
    check("the admin deletes A's image (204)", r.status == 204, repr(r))
    cleanup_images.remove(img)

    # A public image: everyone may see and use it, only the owner or an admin delete it.
    src = guest_copy("tb" + tag)
    r = request("POST", "/v1/images", {"name": f"guest-tb{tag}", "source_path": src,
                                        "format": "qcow2", "visibility": "public"},
                token=bt, timeout=120)
    if r.status == 201 and isinstance(r.json, dict):
        cleanup_images.append(r.json.get("id"))
    check("B may not register a public image (403, problem)", r.status == 403
          and full_problem(r), repr(r))
    pub = import_image("tp" + tag, visibility="public")
    r = request("GET", f"/v1/images/{pub}", token=bt)
    check("the admin's public image is visible to B", r.status == 200
          and r.json.get("visibility") == "public", repr(r))
    r = request("GET", "/v1/images?limit=200", token=bt)
    check("... and in B's list", r.status == 200 and pub in ids_of(r), repr(r))
    r = request("POST", "/v1/vms", {"name": f"pub-{tag}", "image_id": pub, "vcpus": 1,
                                     "memory_mib": 128, "disk_gib": 1}, token=bt, timeout=120)
    check("B creates a small VM on it (201), owned by B", r.status == 201
          and isinstance(r.json, dict) and r.json.get("owner_id") == b["id"], repr(r))
    bvm = r.json["id"]
    cleanup_vms.append(bvm)
    r = request("DELETE", f"/v1/images/{pub}", token=bt)
    check("B may not delete the public image while its VM uses it (403, problem)",
          r.status == 403 and full_problem(r), repr(r))
    r = request("DELETE", f"/v1/vms/{bvm}", token=bt, timeout=120)
    check("B deletes its VM (204)", r.status == 204, repr(r))
    cleanup_vms.remove(bvm)
    r = request("DELETE", f"/v1/images/{pub}", token=bt)
    check("B may not delete the public image, unused either (403, problem)",
          r.status == 403 and full_problem(r), repr(r))
    r = request("DELETE", f"/v1/images/{pub}", timeout=60)
    check("the admin deletes the public image (204)", r.status == 204, repr(r))
    cleanup_images.remove(pub)
    r = request("GET", "/v1/vms?limit=200", token=bt)
    check("B has no VM left", r.status == 200 and ids_of(r) == set(), repr(r))


# --- (i) quota under concurrent creates --------------------------------------

QUOTA_DEFAULTS = {"max_vms": 10, "max_vcpus": 32, "max_memory_mib": 65536, "max_disk_gib": 500}
NO_USAGE = {"vms": 0, "vcpus": 0, "memory_mib": 0, "disk_gib": 0}


def scenario_quota():
    tag = uuid.uuid4().hex[:8]
    n, cap, mem = 20, 5, 128
    u = new_user("quota")
    r = request("PATCH", f"/v1/users/{u['id']}", {"quota": {"max_vms": cap}})
    check(f"the admin sets the user's max_vms to {cap} (200)", r.status == 200
          and r.json.get("quota") == dict(QUOTA_DEFAULTS, max_vms=cap), repr(r))
    r = request("GET", "/v1/users/me/quota", token=u["token"])
    check("GET /v1/users/me/quota shows the limit and no usage", r.status == 200
          and r.json.get("user_id") == u["id"]
          and r.json.get("limits") == dict(QUOTA_DEFAULTS, max_vms=cap)
          and r.json.get("usage") == NO_USAGE, repr(r))
    img = import_image("q" + tag, token=u["token"])
    before = domains()
    check("libvirt lists its domains", before is not None)

    results = [None] * n
    gate = threading.Barrier(n)

    def create(i):
        try:
            gate.wait(30)
        except threading.BrokenBarrierError:
            pass
        try:
            results[i] = request("POST", "/v1/vms", {"name": f"q{tag}-{i}", "image_id": img,
                                                     "vcpus": 1, "memory_mib": mem,
                                                     "disk_gib": 1}, timeout=600,
                                 token=u["token"])
        except Exception as e:  # noqa: BLE001 - reported as this request's outcome
            results[i] = e

    t0 = time.time()
    threads = [threading.Thread(target=create, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1, t0 + 660 - time.time()))
    created = [r.json["id"] for r in results if isinstance(r, Resp) and r.status == 201
               and isinstance(r.json, dict) and isinstance(r.json.get("id"), str)]
    cleanup_vms.extend(created)
    refused = [r for r in results if isinstance(r, Resp) and r.status == 403]
    print(f"       {n} concurrent creates in {time.time() - t0:.1f} s: "
          f"{sorted((r.status if isinstance(r, Resp) else repr(r)) for r in results)}")
    check(f"exactly {cap} creates answer 201 and {n - cap} answer 403",
          len(created) == cap and len(refused) == n - cap,
          repr([r for r in results if not (isinstance(r, Resp) and r.status in (201, 403))]))

    def over(r):
        j = r.json if isinstance(r.json, dict) else {}
        return (full_problem(r) and j["type"].endswith("quota_exceeded")
                and j.get("quota") == "max_vms" and j.get("limit") == cap
                and isinstance(j.get("in_use"), int) and isinstance(j.get("requested"), int)
                and j["in_use"] + j["requested"] > cap)

    check("every 403 is a quota_exceeded problem: quota max_vms, limit 5, in_use, requested",
          all(over(r) for r in refused), repr([r for r in refused if not over(r)][:3]))
    if refused:
        j = refused[0].json
        print(f"       e.g. {j.get('type')}: in_use {j.get('in_use')}, "
              f"requested {j.get('requested')}: {j.get('detail')}")
    r = request("GET", "/v1/users/me/quota", token=u["token"])
    check(f"usage shows {cap} VMs", r.status == 200 and r.json.get("usage") == {
        "vms": cap, "vcpus": cap, "memory_mib": cap * mem, "disk_gib": cap}, repr(r))
    r = request("GET", "/v1/vms?limit=100", token=u["token"])
    check(f"the user's list has exactly the {cap} VMs", r.status == 200
          and len(r.json.get("items", [])) == cap and ids_of(r) == set(created), repr(r))
    after = domains() or set()
    new = {d for d in after - before if d.startswith("stratus-")}
    check(f"libvirt has exactly {cap} new stratus-* domains, the created ones",
          new == {f"stratus-{v}" for v in created}, repr(sorted(new)))

    for vm in created:
        r = request("DELETE", f"/v1/vms/{vm}", token=u["token"], timeout=120)
        check(f"DELETE VM {vm[:8]} answers 204", r.status == 204, repr(r))
        cleanup_vms.remove(vm)
    r = request("GET", "/v1/users/me/quota", token=u["token"])
    check("usage drops to 0", r.status == 200 and r.json.get("usage") == NO_USAGE, repr(r))
    doms = domains() or set()
    check("none of the domains is left", not doms & new, repr(sorted(doms & new)))
    r = request("PATCH", f"/v1/users/{u['id']}", {"quota": {"max_vms": None}})
    check("quota max_vms null goes back to the default (10)", r.status == 200
          and r.json.get("quota") == QUOTA_DEFAULTS, repr(r))
    r = request("DELETE", f"/v1/images/{img}", token=u["token"], timeout=60)
    check("the user deletes its image (204)", r.status == 204, repr(r))
    cleanup_images.remove(img)


# --- (j) login throttling ---------------------------------------------------

def scenario_throttle():
    u = new_user("throttle", do_login=False)
    v = new_user("throttle-other", do_login=False)
    for i in range(5):
        r = login(u["email"], u["password"] + "x")
        check(f"wrong password {i + 1} of 5 answers 401", r.status == 401 and full_problem(r)
              and r.json.get("detail") == WRONG_LOGIN, repr(r))
    r = login(u["email"], u["password"])
    t_locked = time.time()
    ra = r.header("Retry-After") or ""
    check("the 6th attempt, with the right password, answers 429 (problem)",
          r.status == 429 and full_problem(r), repr(r))
    check("... from the API, not nginx's per-address limit",
          "from this address" not in str(r.json.get("detail")), repr(r))
    check("... with Retry-After: an integer 1..4", ra.isdigit() and 1 <= int(ra) <= 4, repr(ra))
    print(f"       Retry-After {ra}: {r.json.get('detail')}")
    r = login(v["email"], v["password"] + "x")
    check("another e-mail's wrong password meanwhile answers 401, not 429", r.status == 401
          and r.json.get("detail") == WRONG_LOGIN, repr(r))
    r = login(v["email"], v["password"])
    check("another e-mail logs in meanwhile (200)", r.status == 200, repr(r))
    time.sleep(max(0, t_locked + int(ra) + 1 - time.time()))
    r = login(u["email"], u["password"])
    check("Retry-After + 1 s later the right password answers 200", r.status == 200
          and isinstance(r.json.get("token"), str), repr(r))
    r = login(u["email"], u["password"] + "x")
    check("then one wrong password answers 401 (the count was reset)", r.status == 401
          and r.json.get("detail") == WRONG_LOGIN, repr(r))
    r = login(u["email"], u["password"])
    check("... and the right one 200", r.status == 200, repr(r))


# --- (k) the audit log --------------------------------------------------------

def audit_walk():
    """Every entry of GET /v1/audit, page by page (bounded)."""
    items, marker = [], None
    for _ in range(2000):
        r = request("GET", "/v1/audit?limit=100" + (f"&marker={marker}" if marker else ""))
        check("GET /v1/audit answers 200 with items", r.status == 200
              and isinstance(r.json, dict) and isinstance(r.json.get("items"), list), repr(r))
        items += r.json["items"]
        marker = r.json.get("next_marker")
        if not marker:
            return items
    check("the audit walk ends within 2000 pages", False)


def scenario_audit():
    tag = uuid.uuid4().hex[:8]
    rid_post, rid_del, rid_401, rid_403 = (f"e2e-audit-{w}-{tag}"
                                           for w in ("post", "delete", "401", "403"))
    me = admin_id()
    r = request("POST", "/v1/flavors", {"name": f"audit-{tag}", "vcpus": 1, "memory_mib": 128,
                                         "disk_gib": 1}, headers={"X-Request-Id": rid_post})
    check("POST /v1/flavors answers 201 and echoes the X-Request-Id", r.status == 201
          and r.header("X-Request-Id") == rid_post, repr(r))
    fid = r.json["id"]
    r = request("DELETE", f"/v1/flavors/{fid}", headers={"X-Request-Id": rid_del})
    check("DELETE the flavor answers 204", r.status == 204, repr(r))
    r = request("POST", "/v1/vms", {}, token=False, headers={"X-Request-Id": rid_401})
    check("a POST without a token answers 401", r.status == 401, repr(r))
    u = new_user("audit")
    r = request("POST", "/v1/flavors", {"name": f"audit2-{tag}", "vcpus": 1, "memory_mib": 128,
                                         "disk_gib": 1}, token=u["token"],
                headers={"X-Request-Id": rid_403})
    check("a user's POST /v1/flavors answers 403", r.status == 403, repr(r))

    r = request("GET", f"/v1/audit?target_id={fid}")
    items = r.json.get("items") if r.status == 200 and isinstance(r.json, dict) else None
    check("GET /v1/audit?target_id=<the flavor> answers 200", isinstance(items, list), repr(r))
    print(f"       {json.dumps(items)[:600]}")
    check("... only entries for that target", all(i.get("target_id") == fid for i in items),
          repr(items))
    by_rid = {i.get("request_id"): i for i in items}
    post, dele = by_rid.get(rid_post), by_rid.get(rid_del)
    check("... the POST: method, route, status 201, the admin, our request id",
          post is not None and post.get("method") == "POST"
          and str(post.get("route")).startswith("/v1/flavors") and post.get("status") == 201
          and post.get("user_id") == me, repr(post))
    check("... the DELETE: method, route, status 204, the admin, our request id",
          dele is not None and dele.get("method") == "DELETE"
          and str(dele.get("route")).startswith("/v1/flavors") and dele.get("status") == 204
          and dele.get("user_id") == me, repr(dele))
    check("... the POST comes before the DELETE", post["seq"] < dele["seq"], repr(items))
    keys = {"id", "seq", "at", "user_id", "method", "route", "target_id", "status",
            "request_id", "client_addr", "prev_hash", "hash"}
    check("... entries carry every member", all(keys <= set(i) for i in items), repr(items))

    r = request("GET", f"/v1/audit?user_id={u['id']}")
    uitems = r.json.get("items", []) if r.status == 200 else None
    check("GET /v1/audit?user_id=<the user> has the user's refused POST (403)",
          uitems is not None and all(i.get("user_id") == u["id"] for i in uitems)
          and any(i.get("request_id") == rid_403 and i.get("status") == 403
                  and i.get("method") == "POST" for i in uitems), repr(r))

    entries = audit_walk()
    seqs = [e.get("seq") for e in entries]
    check("the walk has each entry once, in seq order", len(set(seqs)) == len(seqs)
          and seqs == sorted(seqs) and len({e.get("id") for e in entries}) == len(entries),
          repr(seqs[:50]))
    e401 = [e for e in entries if e.get("request_id") == rid_401]
    check("the 401 POST is recorded with user_id null", len(e401) == 1
          and e401[0].get("user_id") is None and e401[0].get("status") == 401
          and e401[0].get("method") == "POST", repr(e401))
    chain = sorted(entries, key=lambda e: e["seq"])
    broken = [(p["seq"], e["seq"]) for p, e in zip(chain, chain[1:])
              if e.get("prev_hash") != p.get("hash")]
    check(f"the {len(chain)} entries chain: each prev_hash is the previous hash",
          len(chain) > 4 and not broken and all(isinstance(e.get("hash"), str) and e["hash"]
                                                for e in chain), repr(broken[:5]))
    print(f"       seq {chain[0]['seq']}..{chain[-1]['seq']}")

    rc, out = admin_cli("audit", "verify")
    m = re.search(r"audit: (\d+) entries, chain intact", out)
    check("stratus-admin audit verify: intact (exit 0)", rc == 0 and m is not None,
          f"exit {rc}: {out}")
    check("... over the same entries as GET /v1/audit lists", int(m.group(1)) == len(chain),
          f"{out} vs {len(chain)} walked")

    # Tamper with a copy: the verifier must name the entry.
    conf = os.path.join(STATE, "stratus.conf")
    live = api_setting("database", os.path.join(STATE, "db", "stratus.db"))
    tmp = tempfile.mkdtemp(prefix="stratus-e2e-audit-")
    try:
        copy = os.path.join(tmp, "stratus.db")
        p = subprocess.run(["sqlite3", live, f".backup '{copy}'"], capture_output=True,
                           text=True, timeout=60)
        check("sqlite3 .backup copies the database", p.returncode == 0
              and os.path.isfile(copy), p.stderr)
        victim = post["seq"]
        p = subprocess.run(["sqlite3", copy, f"UPDATE audit_log SET status = 299 WHERE seq = "
                            f"{int(victim)}; SELECT changes();"], capture_output=True, text=True,
                           timeout=60)
        check(f"the copy's entry {victim} has another status now", p.returncode == 0
              and p.stdout.strip() == "1", p.stdout + p.stderr)
        with open(conf) as f:
            lines = f.read().splitlines()
        lines = [f"database = {copy}" if l.partition("=")[0].strip() == "database" else l
                 for l in lines]
        tconf = os.path.join(tmp, "stratus.conf")
        with open(tconf, "w") as f:
            f.write("\n".join(lines) + "\n")
        rc, out = admin_cli("audit", "verify", conf=tconf)
        print(f"       {out}")
        check(f"audit verify on the tampered copy exits 1 naming entry {victim}", rc == 1
              and re.search(rf"audit: chain broken at entry {int(victim)}\b", out) is not None,
              f"exit {rc}: {out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rc, out = admin_cli("audit", "verify")
    check("the live database still verifies intact", rc == 0 and "chain intact" in out,
          f"exit {rc}: {out}")


SCENARIOS = {
    "badinput": scenario_badinput,
    "lifecycle": scenario_lifecycle,
    "failure": scenario_failure,
    "workers": scenario_workers,
    "libvirtd": scenario_libvirtd,
    "libvirtd_hang": scenario_libvirtd_hang,
    "signals": scenario_signals,
    "auth": scenario_auth,
    "tenancy": scenario_tenancy,
    "quota": scenario_quota,
    "throttle": scenario_throttle,
    "audit": scenario_audit,
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
