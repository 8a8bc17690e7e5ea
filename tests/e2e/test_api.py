#!/usr/bin/env python3
"""Black-box scenarios against a running stratus stack, through nginx.

Started by tests/e2e/run.sh, which passes the stack's layout in the
environment (E2E_URL, E2E_STATE, E2E_CONSOLE_DIR, E2E_IMPORT_DIR,
E2E_POOLS_DIR, E2E_API_PIDFILE, E2E_GUEST, E2E_SERVICES_FILES, E2E_ROOT);
the guest that ignores the ACPI power button is guest-noacpi.qcow2 next to
E2E_GUEST.  Standard library only.  Prints one line per check (a check
repeated in every round of a loop only when it fails) and ends with
"e2e: N passed, N failed".

    tests/e2e/test_api.py [scenario ...]   # badinput lifecycle failure workers libvirtd
                                           # libvirtd_hang signals auth tenancy quota
                                           # throttle audit operations crash reconcile
                                           # idempotency poweroff concurrency ifmatch
                                           # races action_crash waitbound

POST /v1/vms, DELETE /v1/vms/{id}, every VM action and a resize (PATCH with
vcpus/memory_mib) answer 202 with an operation that stratus-worker carries
out; the scenarios follow it with GET /v1/operations/{id}?wait=N.  Some stop
the stack's worker (pid in <E2E_STATE>/run/worker.pid) and start it again the
way scripts/run.sh does.  Single resources carry a revision, sent as ETag and
checked against If-Match.

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
STORE = os.environ.get("E2E_STORE", "sqlite")
NODES = int(os.environ.get("E2E_NODES", "1"))
WORKER_PROCS = int(os.environ.get("E2E_WORKER_PROCS", "1"))
GUEST = os.environ.get("E2E_GUEST", "")
# build-guest.sh writes the variant that ignores the ACPI power button next to GUEST.
GUEST_NOACPI = os.path.join(os.path.dirname(GUEST), "guest-noacpi.qcow2") if GUEST else ""
ROOT = os.environ.get("E2E_ROOT", os.getcwd())
SERVICES_FILES = [f for f in os.environ.get("E2E_SERVICES_FILES", "").split(":") if f]
VIRSH = ["virsh", "-q", "-c", "qemu:///system"]
MARKER = "STRATUS-GUEST-BOOTED"
BOOT_TIMEOUT = float(os.environ.get("E2E_BOOT_TIMEOUT", "180"))
ADMIN_BIN = os.environ.get("E2E_ADMIN_BIN", os.path.join(ROOT, "build", "stratus-admin"))
ADMIN_PASSWORD_FILE = os.path.join(STATE, "admin-password")
ACTIONS = ("start", "stop", "reboot", "force-stop", "pause", "resume")
# What each action needs and leaves (docs/api.md, State machine).
ACTION_FROM = {"start": ("stopped",), "stop": ("running",), "reboot": ("running",),
               "force-stop": ("running", "paused"), "pause": ("running",),
               "resume": ("paused",)}
ACTION_RESULT = {"start": "running", "stop": "stopped", "reboot": "running",
                 "force-stop": "stopped", "pause": "paused", "resume": "running"}
WRONG_LOGIN = "e-mail or password is wrong"

passed = 0
failed = 0
cleanup_vms = []
cleanup_images = []


class Fail(Exception):
    pass


def check(name, cond, why="", quiet=False):
    """Record one check; a failed check raises Fail to end its scenario.
    @quiet: a passing check is counted but not printed (checks repeated
    in every round of a loop)."""
    global passed, failed
    if cond:
        passed += 1
        if not quiet:
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


def request_again_after(method, path, body=None, headers=None, token=None, tries=10):
    """@method @path, sent again (at most @tries times) after the Retry-After
    of an answer 409 or 503 that carries one: (the last answer, how many
    times it was sent again)."""
    n = 0
    while True:
        r = request(method, path, body, headers=headers, token=token, timeout=120)
        ra = retry_after(r)
        if r.status not in (409, 503) or ra is None or n == tries:
            return r, n
        n += 1
        time.sleep(min(max(ra, 0.2), 5))


def at_once(n, send, bound):
    """Call @send(i) for i in 0..n-1 from n threads released together by a
    barrier; wait at most @bound seconds for all.  The list of what each
    returned (a Resp) or raised (the exception), None for one still going."""
    results = [None] * n
    gate = threading.Barrier(n)

    def one(i):
        try:
            gate.wait(30)
        except threading.BrokenBarrierError:
            pass
        try:
            results[i] = send(i)
        except Exception as e:  # noqa: BLE001 - reported as this request's outcome
            results[i] = e

    t0 = time.time()
    ts = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(max(1, t0 + bound - time.time()))
    return results


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


def precondition_failed(r):
    """A 412 problem document whose type ends in precondition_failed."""
    return (r.status == 412 and full_problem(r)
            and r.json["type"].endswith("precondition_failed"))


def revision(doc):
    """The integer revision (>= 1) of a resource document, else None."""
    rev = doc.get("revision") if isinstance(doc, dict) else None
    return rev if isinstance(rev, int) and not isinstance(rev, bool) and rev >= 1 else None


def has_etag(r):
    """Whether @r carries ETag: "<revision>" of the resource in its body."""
    rev = revision(r.json)
    return rev is not None and r.header("ETag") == f'"{rev}"'


def retry_after(r):
    """Retry-After of @r as whole seconds (>= 0), else None."""
    ra = (r.header("Retry-After") or "").strip()
    return int(ra) if ra.isdigit() else None


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


def guest_copy(tag, guest=None):
    """A copy of the test guest (or of @guest, a variant build-guest.sh
    wrote) in the import dir, for POST /v1/images."""
    guest = guest or GUEST
    check("the guest image was built", bool(guest) and os.path.isfile(guest), guest)
    src = os.path.join(IMPORT_DIR, f"guest-{tag}.qcow2")
    shutil.copyfile(guest, src)
    os.chmod(src, 0o644)
    return src


def import_image(tag, token=None, visibility=None, guest=None):
    src = guest_copy(tag, guest)
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
    check("GET the image answers 200 with its revision", g.status == 200
          and g.json.get("id") == image_id and revision(g.json) is not None, repr(g))
    return image_id


# --- operations: creates and deletes are queued, a worker does them ----------

OP_KEYS = ("id", "kind", "target_id", "owner_id", "status", "step", "error", "created_at",
           "started_at", "finished_at", "attempts", "revision")
OP_KINDS = ("vm.create", "vm.delete", "vm.resize") + tuple("vm." + a for a in ACTIONS)
# The steps of each action's operation (and a resize's), in order; the crash
# knob STRATUS_TEST_CRASH_AFTER=<kind>:<step> ends a worker right after one.
ACTION_STEPS = {"vm.start": ("define", "start", "record"),
                "vm.stop": ("shutdown", "wait", "destroy", "record"),
                "vm.force-stop": ("destroy", "record"),
                "vm.reboot": ("reboot", "record"),
                "vm.pause": ("suspend", "record"),
                "vm.resume": ("resume", "record"),
                "vm.resize": ("define", "record")}
OP_STATUSES = ("queued", "running", "succeeded", "failed")
OP_DONE = ("succeeded", "failed")
EVENT_KEYS = ("id", "vm_id", "at", "type", "message", "data")
EVENT_TYPES = ("STATE_CHANGE", "INFO", "WARNING", "ERROR")
RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"
VANISHED_FAULT = "its domain vanished outside stratus"


def is_op(op, kind=None, target=None):
    """Whether @op is an operation document (of @kind, on @target)."""
    return (isinstance(op, dict) and all(k in op for k in OP_KEYS)
            and isinstance(op["id"], str) and len(op["id"]) == 36
            and op["kind"] in OP_KINDS and (kind is None or op["kind"] == kind)
            and isinstance(op["target_id"], str) and (target is None or op["target_id"] == target)
            and isinstance(op["owner_id"], str) and op["status"] in OP_STATUSES
            and isinstance(op["attempts"], int) and isinstance(op["created_at"], str)
            and re.fullmatch(RFC3339, op["created_at"]) is not None
            and revision(op) is not None)


def accepted(r, kind, vm_status, vm_id=None, etag=False):
    """Whether @r is a 202 with the VM (in @vm_status, or one of a tuple of
    them) and its revision, its queued or running operation of @kind on it,
    and Location: /v1/operations/{op id}; with @etag, also ETag: the VM's
    revision."""
    j = r.json if isinstance(r.json, dict) else {}
    op = j.get("operation")
    statuses = vm_status if isinstance(vm_status, tuple) else (vm_status,)
    return (r.status == 202 and isinstance(j.get("id"), str) and len(j["id"]) == 36
            and (vm_id is None or j["id"] == vm_id) and j.get("status") in statuses
            and revision(j) is not None and (not etag or has_etag(r))
            and is_op(op, kind, j["id"]) and op["status"] in ("queued", "running")
            and op["owner_id"] == j.get("owner_id")
            and r.header("Location") == f"/v1/operations/{op['id']}")


def get_op(op_id, wait=None, token=None):
    q = f"?wait={wait}" if wait is not None else ""
    return request("GET", f"/v1/operations/{op_id}{q}", token=token,
                   timeout=(wait or 0) + 60)


def wait_op(op_id, token=None, bound=90):
    """GET /v1/operations/{id}?wait=30 until the operation has ended, for at
    most @bound seconds; the last answer.  An answer with Retry-After (too
    many requests wait already) is followed by a pause of that long."""
    deadline = time.time() + bound
    while True:
        w = int(max(0, min(30, deadline - time.time())))
        r = get_op(op_id, wait=w, token=token)
        if (r.status != 200 or not isinstance(r.json, dict) or r.json.get("status") in OP_DONE
                or time.time() >= deadline):
            return r
        ra = retry_after(r)
        if w == 0 or ra is not None:
            time.sleep(max(0.5, min(ra or 0, 5, deadline - time.time())))


def op_succeeded(r):
    return (r.status == 200 and is_op(r.json) and r.json["status"] == "succeeded"
            and r.json.get("error") is None and isinstance(r.json.get("finished_at"), str))


def submit_create(body, token=None, headers=None, what="POST /v1/vms", etag=False):
    """POST /v1/vms, which must answer 202 (with @etag, also ETag: the new
    VM's revision, 1): (vm id, operation)."""
    r = request("POST", "/v1/vms", body, timeout=120, token=token, headers=headers)
    check(f"{what} answers 202 with the VM (creating), its vm.create operation and a Location"
          + (", ETag \"1\" and revision 1" if etag else ""),
          accepted(r, "vm.create", "creating", etag=etag)
          and (not etag or revision(r.json) == 1), repr(r))
    cleanup_vms.append(r.json["id"])
    return r.json["id"], r.json["operation"]


def create_vm(body, token=None, what="POST /v1/vms", etag=False):
    """Create a VM and wait for its operation: the VM (GET) once it runs."""
    vm_id, op = submit_create(body, token=token, what=what, etag=etag)
    o = wait_op(op["id"], token=token)
    check(f"the create operation {op['id'][:8]} succeeds", op_succeeded(o)
          and o.json["target_id"] == vm_id and o.json["attempts"] >= 1, repr(o))
    g = request("GET", f"/v1/vms/{vm_id}", token=token)
    check("... and the VM is running", g.status == 200 and g.json.get("status") == "running",
          repr(g))
    return g.json


def submit_delete(vm_id, token=None, what=None, headers=None, etag=False):
    """DELETE /v1/vms/{id}, which must answer 202 (with @etag, also ETag:
    the VM's revision): the operation."""
    r = request("DELETE", f"/v1/vms/{vm_id}", timeout=120, token=token, headers=headers)
    check(f"{what or 'DELETE VM ' + vm_id[:8]} answers 202 with the VM (deleting), its "
          f"vm.delete operation and a Location{', ETag its revision' if etag else ''}",
          accepted(r, "vm.delete", "deleting", vm_id, etag=etag), repr(r))
    return r.json["operation"]


def delete_vm(vm_id, token=None, what=None, headers=None, etag=False):
    """Delete a VM and wait for its operation; then GET answers 404."""
    op = submit_delete(vm_id, token=token, what=what, headers=headers, etag=etag)
    o = wait_op(op["id"], token=token)
    check(f"the delete operation {op['id'][:8]} succeeds", op_succeeded(o), repr(o))
    g = request("GET", f"/v1/vms/{vm_id}", token=token)
    check("... and GET the VM answers 404 (problem)", g.status == 404 and is_problem(g), repr(g))
    if vm_id in cleanup_vms:
        cleanup_vms.remove(vm_id)
    return o.json


def post_action(vm_id, name, token=None, headers=None, wait=None):
    """POST /v1/vms/{id}/{name}[?wait=N]: the answer, whatever it is."""
    q = "" if wait is None else f"?wait={wait}"
    return request("POST", f"/v1/vms/{vm_id}/{name}{q}", token=token, headers=headers,
                   timeout=(wait or 0) + 60)


def submit_action(vm_id, name, token=None, headers=None, etag=False, quiet=False):
    """POST /v1/vms/{id}/{name}, which must answer 202 with the VM (as it was,
    or already as the action leaves it: libvirt says), its vm.<name>
    operation and a Location (with @etag, also ETag: the VM's revision):
    the operation."""
    r = post_action(vm_id, name, token=token, headers=headers)
    check(f"POST {name} answers 202 with the VM, its vm.{name} operation and a Location"
          + (", ETag its revision" if etag else ""),
          accepted(r, "vm." + name, ACTION_FROM[name] + (ACTION_RESULT[name],), vm_id,
                   etag=etag), repr(r), quiet=quiet)
    return r.json["operation"]


def finish_op(op, token=None, quiet=False, bound=120):
    """Wait for operation @op (a document), which must succeed: the ended one."""
    o = wait_op(op["id"], token=token, bound=bound)
    check(f"the {op['kind']} operation {op['id'][:8]} succeeds", op_succeeded(o)
          and o.json["id"] == op["id"], repr(o), quiet=quiet)
    return o.json


def action(vm_id, name, want=None, token=None, quiet=False):
    """POST action @name (202), wait for its operation to succeed; then GET
    must show the VM in @want (by default what the action leaves): the
    ended operation."""
    want = want or ACTION_RESULT[name]
    o = finish_op(submit_action(vm_id, name, token=token, quiet=quiet), token=token,
                  quiet=quiet)
    g = request("GET", f"/v1/vms/{vm_id}", token=token)
    check(f"after {name} the VM is {want}", g.status == 200 and g.json.get("status") == want,
          repr(g), quiet=quiet)
    return o


# The action that moves a VM from one status toward another.
TOWARD = {("stopped", "running"): "start", ("stopped", "paused"): "start",
          ("running", "stopped"): "force-stop", ("running", "paused"): "pause",
          ("paused", "running"): "resume", ("paused", "stopped"): "force-stop"}


def bring_to(vm_id, want, token=None, quiet=True):
    """Move the VM to status @want with the actions that takes (at most
    two), each waited for: the VM (GET)."""
    cur = g = None
    for _ in range(3):
        g = request("GET", f"/v1/vms/{vm_id}", token=token)
        cur = g.json.get("status") if g.status == 200 and isinstance(g.json, dict) else None
        if cur == want or (cur, want) not in TOWARD:
            break
        action(vm_id, TOWARD[(cur, want)], token=token, quiet=quiet)
    check(f"VM {vm_id[:8]} is brought to {want}", cur == want, repr(g), quiet=quiet)
    return g


def submit_resize(vm_id, vcpus, memory_mib, token=None, etag=False):
    """PATCH the VM's sizes, which must answer 202 with the VM (stopped, the
    new sizes already in the row) and its vm.resize operation: the operation."""
    r = request("PATCH", f"/v1/vms/{vm_id}", {"vcpus": vcpus, "memory_mib": memory_mib},
                token=token, timeout=120)
    check(f"PATCH {{vcpus: {vcpus}, memory_mib: {memory_mib}}} answers 202 with the VM "
          f"(stopped, new sizes), its vm.resize operation and a Location"
          + (", ETag its revision" if etag else ""),
          accepted(r, "vm.resize", "stopped", vm_id, etag=etag)
          and vm_sizes(r.json) == (vcpus, memory_mib), repr(r))
    return r.json["operation"]


# libvirt's domstate for each status a VM shows.
DOMSTATE = {"running": "running", "paused": "paused", "stopped": "shut off"}


def domain_sizes(vm_id):
    """(vCPUs, max memory in MiB) of domain stratus-<id> as it runs (virsh
    dominfo) and as it is defined (virsh dumpxml --inactive): (live,
    defined), None where libvirt did not say."""
    dom = f"stratus-{vm_id}"
    rc, out = virsh("dominfo", dom)
    cpus = re.search(r"^CPU\(s\):\s*(\d+)\s*$", out, re.M)
    mem = re.search(r"^Max memory:\s*(\d+) KiB\s*$", out, re.M)
    live = (int(cpus.group(1)), int(mem.group(1)) // 1024) if rc == 0 and cpus and mem else None
    rc, xml = virsh("dumpxml", "--inactive", dom)
    cpus = re.search(r"<vcpu\b[^>]*>(\d+)</vcpu>", xml)
    mem = re.search(r"<memory unit='KiB'>(\d+)</memory>", xml)
    defined = (int(cpus.group(1)), int(mem.group(1)) // 1024) if rc == 0 and cpus and mem else None
    return live, defined


def vm_sizes(doc):
    """(vcpus, memory_mib) of a VM document."""
    return (doc.get("vcpus"), doc.get("memory_mib")) if isinstance(doc, dict) else None


def vm_events(vm_id, token=None):
    """(last answer, every event of the VM or None), page by page (bounded)."""
    items, marker = [], None
    for _ in range(50):
        r = request("GET", f"/v1/vms/{vm_id}/events?limit=100"
                    + (f"&marker={marker}" if marker else ""), token=token)
        if r.status != 200 or not isinstance(r.json, dict) or not isinstance(
                r.json.get("items"), list):
            return r, None
        items += r.json["items"]
        marker = r.json.get("next_marker")
        if not marker:
            break
    return r, items


def is_event(e, vm_id):
    return (isinstance(e, dict) and all(k in e for k in EVENT_KEYS) and e["vm_id"] == vm_id
            and e["type"] in EVENT_TYPES and isinstance(e["message"], str)
            and isinstance(e["at"], str) and re.fullmatch(RFC3339, e["at"]) is not None)


def wait_event(vm_id, pred, timeout, token=None):
    """(seconds, the first event matching @pred, every event) within @timeout."""
    t0 = time.time()
    items = None
    while True:
        _, items = vm_events(vm_id, token=token)
        hit = next((e for e in items or [] if pred(e)), None)
        if hit is not None or time.time() - t0 >= timeout:
            return time.time() - t0, hit, items
        time.sleep(0.25)


def orphans():
    """(answer, items) of GET /v1/admin/orphans."""
    r = request("GET", "/v1/admin/orphans")
    j = r.json if isinstance(r.json, dict) else {}
    items = j.get("items") if r.status == 200 and isinstance(j.get("items"), list) else None
    return r, items


# --- the stack's stratus-worker ------------------------------------------------

WORKER_BIN = os.environ.get("E2E_WORKER_BIN", os.path.join(ROOT, "build", "stratus-worker"))
WORKER_PIDFILE = os.path.join(STATE, "run", "worker.pid")
WORKER_LOG = os.path.join(STATE, "log", "worker.log")
CRASH_LOG = os.path.join(STATE, "log", "worker-crash.log")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATUS_")}
    env.update(extra)
    return env


def stack_worker_pid():
    """The pid in worker.pid when it is a live stratus-worker, else None."""
    try:
        with open(WORKER_PIDFILE) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if not pid_gone(pid) and proc_comm(pid) == "stratus-worker" else None


def stop_stack_worker():
    """SIGTERM to the stack's worker; it lets work under way end, then exits."""
    pid = stack_worker_pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 60
    while time.time() < deadline and not pid_gone(pid):
        time.sleep(0.1)
    check(f"the stack's stratus-worker ({pid}) exits on SIGTERM", pid_gone(pid))


def start_stack_worker():
    """Start the worker as scripts/run.sh does (setsid, clean STRATUS_*
    environment, same binary, config and log) and record it in worker.pid."""
    if stack_worker_pid() is not None:
        return
    p = subprocess.run(["sh", "-c", 'setsid "$0" -c "$1" >>"$2" 2>&1 </dev/null & echo $!',
                        WORKER_BIN, os.path.join(STATE, "stratus.conf"), WORKER_LOG],
                       env=clean_env(), capture_output=True, text=True, timeout=30)
    pid = int(p.stdout.strip()) if p.stdout.strip().isdigit() else None
    check("a stratus-worker is started again", pid is not None, p.stdout + p.stderr)
    with open(WORKER_PIDFILE + ".tmp", "w") as f:
        f.write(f"{pid}\n")
    os.replace(WORKER_PIDFILE + ".tmp", WORKER_PIDFILE)
    deadline = time.time() + 5
    while time.time() < deadline and proc_comm(pid) != "stratus-worker" and not pid_gone(pid):
        time.sleep(0.05)
    time.sleep(0.5)
    check(f"... and runs (pid {pid})", stack_worker_pid() == pid,
          f"comm {proc_comm(pid)!r}, gone {pid_gone(pid)}")


def start_crash_worker(where):
    """A worker that exits hard (137) right after step @where ("kind:step")."""
    log = open(CRASH_LOG, "ab")
    try:
        return subprocess.Popen([WORKER_BIN, "-c", os.path.join(STATE, "stratus.conf")],
                                env=clean_env(STRATUS_TEST_CRASH_AFTER=where),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        log.close()


def end_crash_worker(p):
    """Make sure a crash worker that did not crash is gone (it is ours)."""
    if p is not None and p.poll() is None:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


# --- (a) lifecycle --------------------------------------------------------

def scenario_lifecycle():
    tag = uuid.uuid4().hex[:8]
    image_id = import_image(tag)
    vm = create_vm({"name": f"life-{tag}", "image_id": image_id, "vcpus": 1,
                    "memory_mib": 256, "disk_gib": 1})
    vm_id = vm["id"]
    dom = f"stratus-{vm_id}"
    check("the VM shows what was asked", vm.get("vcpus") == 1 and vm.get("memory_mib") == 256
          and vm.get("disk_gib") == 1 and vm.get("image_id") == image_id, repr(vm))
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

    delete_vm(vm_id)
    doms = domains()
    check("no domain is left", doms is not None and dom not in doms, repr(doms))
    check("no disk file is left", not os.path.exists(disk) and not files_with(vm_id),
          repr(files_with(vm_id)))
    log = os.path.join(CONSOLE_DIR, vm_id + ".log")
    check("no console log is left", not os.path.exists(log), log)
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
    vm_id, op = submit_create({"name": f"fail-{tag}", "image_id": image_id, "vcpus": 1,
                               "memory_mib": 2097152, "disk_gib": 1},
                              what="POST /v1/vms with 2 TiB of RAM")
    o = wait_op(op["id"])
    j = o.json if isinstance(o.json, dict) else {}
    check("its operation ends failed", o.status == 200 and is_op(j, "vm.create", vm_id)
          and j["status"] == "failed" and isinstance(j.get("finished_at"), str), repr(o))
    check("... with an error naming the start step", isinstance(j.get("error"), str)
          and "start" in j["error"].lower(), repr(j.get("error")))
    print(f"       operation error: {str(j.get('error'))[:200]} (step {j.get('step')})")
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
    _, evs = vm_events(vm_id)
    check("the VM's events have an ERROR entry", any(
        e.get("type") == "ERROR" for e in evs or []), repr(evs))
    delete_vm(vm_id, what="DELETE of the failed VM")


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
        ("action wait not a number", "POST", f"/v1/vms/{rid}/start?wait=abc", None, None),
        ("action wait negative", "POST", f"/v1/vms/{rid}/stop?wait=-1", None, None),
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
        ("operation id not a UUID", "GET", "/v1/operations/not-a-uuid", None, None),
        ("operation unknown", "GET", f"/v1/operations/{rid}", None, None),
        ("wait not a number", "GET", f"/v1/operations/{rid}?wait=abc", None, None),
        ("wait over 60", "GET", f"/v1/operations/{rid}?wait=61", None, None),
        ("wait negative", "GET", f"/v1/operations/{rid}?wait=-1", None, None),
        ("wait empty", "GET", f"/v1/operations/{rid}?wait=", None, None),
        ("operation status unknown", "GET", "/v1/operations?status=bogus", None, None),
        ("operation target not a UUID", "GET", "/v1/operations?target_id=zzz", None, None),
        ("operations unknown param", "GET", "/v1/operations?kind=vm.create", None, None),
        ("events of an unknown VM", "GET", f"/v1/vms/{rid}/events", None, None),
        ("events limit not a number", "GET", f"/v1/vms/{rid}/events?limit=abc", None, None),
        ("events marker not a UUID", "GET", f"/v1/vms/{rid}/events?marker=zzz", None, None),
        ("orphans with a query", "GET", "/v1/admin/orphans?dry_run=true", None, None),
        ("collect dry_run bogus", "POST", "/v1/admin/orphans/collect?dry_run=maybe", None, None),
        ("collect with members", "POST", "/v1/admin/orphans/collect", b'{"dry_run":true}', J),
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


def timed(method, path, timeout=60):
    """(start, seconds, Resp or the exception) of one request."""
    t0 = time.time()
    try:
        r = request(method, path, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - reported as this request's outcome
        r = e
    return t0, time.time() - t0, r


def timed_get(path, timeout=60):
    """(start, seconds, Resp or the exception) of one GET."""
    return timed("GET", path, timeout)


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
    vm_id = create_vm({"name": f"drain-{tag}", "image_id": image_id, "vcpus": 1,
                       "memory_mib": 256, "disk_gib": 1})["id"]
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
    # ACPI, so the worker waits stop_timeout_s (5 s in e2e), then pulls the
    # plug; the request waits for that with ?wait=30.
    result = {}

    def stop():
        t0 = time.time()
        try:
            result["resp"] = post_action(vm_id, "stop", wait=30)
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
    check("the stop?wait=30 in flight at SIGTERM answers 200 (its operation ended meanwhile)",
          isinstance(r, Resp) and r.status == 200, repr(r))
    op = r.json.get("operation") if isinstance(r.json, dict) else None
    check("... with status stopped and its vm.stop operation succeeded",
          r.json.get("status") == "stopped" and is_op(op, "vm.stop", vm_id)
          and op["status"] == "succeeded", repr(r))
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
        delete_vm(vm_id, what="DELETE of the drained VM")


# --- (g) authentication -----------------------------------------------------

def protected_routes(rid):
    """Every route that needs credentials: (method, path, body), @rid where an id goes."""
    b = {}
    routes = [("GET", "/v1/vms", None), ("POST", "/v1/vms", b),
              ("GET", f"/v1/vms/{rid}", None), ("PATCH", f"/v1/vms/{rid}", b),
              ("DELETE", f"/v1/vms/{rid}", None)]
    routes += [("POST", f"/v1/vms/{rid}/{a}", None) for a in ACTIONS]
    routes += [("GET", f"/v1/vms/{rid}/events", None), ("GET", "/v1/operations", None),
               ("GET", f"/v1/operations/{rid}", None), ("GET", "/v1/admin/orphans", None),
               ("POST", "/v1/admin/orphans/collect", None)]
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
    check("the user document: id, nickname, active, roles [user], default quota, times, "
          "revision 1", isinstance(u.get("id"), str) and u.get("nickname") == f"n-{tag}"
          and u.get("status") == "active" and u.get("roles") == ["user"]
          and u.get("quota") == defaults and isinstance(u.get("created_at"), str)
          and isinstance(u.get("updated_at"), str) and revision(u) == 1, repr(u))
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
                               ("GET", "/v1/admin/orphans", None),
                               ("POST", "/v1/admin/orphans/collect", None),
                               ("POST", "/v1/admin/orphans/collect?dry_run=true", None),
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
    vm, op = submit_create({"name": f"ten-{tag}", "image_id": img, "vcpus": 1,
                            "memory_mib": 256, "disk_gib": 1}, token=a["token"],
                           what="A's POST /v1/vms")
    check("... owned by A", op.get("owner_id") == a["id"], repr(op))
    o = wait_op(op["id"], token=a["token"])
    check("A's create operation succeeds", op_succeeded(o), repr(o))
    r = request("GET", f"/v1/vms/{vm}", token=a["token"])
    check("A's VM is running, owned by A", r.status == 200 and r.json.get("status") == "running"
          and r.json.get("owner_id") == a["id"], repr(r))
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
             ("GET", "/v1/vms/{}/events", vm, None),
             ("GET", "/v1/operations/{}", op["id"], None),
             ("GET", "/v1/operations/{}?wait=1", op["id"], None),
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
    if ra.status in (201, 202) and isinstance(ra.json, dict):
        cleanup_vms.append(ra.json.get("id"))
    rr = request("POST", "/v1/vms", dict(steal, image_id=rid), token=bt, timeout=120)
    da = str((ra.json or {}).get("detail")).replace(img, "ID")
    dr = str((rr.json or {}).get("detail")).replace(rid, "ID")
    check("B: POST /v1/vms with A's image answers like a random image id (400, same type "
          "and detail)", ra.status == rr.status == 400 and full_problem(ra)
          and problem_key(ra) == problem_key(rr) and da == dr and "does not exist" in da,
          f"A's image {ra!r}; random {rr!r}")

    for path, their in (("/v1/vms?limit=200", vm), ("/v1/images?limit=200", img),
                        ("/v1/users/me/api-keys", key_id),
                        (f"/v1/operations?target_id={vm}", op["id"]),
                        ("/v1/operations?limit=200", op["id"])):
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
    r = request("GET", f"/v1/operations/{op['id']}")
    check("the admin can GET A's operation", r.status == 200 and is_op(r.json, "vm.create", vm)
          and r.json.get("owner_id") == a["id"], repr(r))
    dop = delete_vm(vm, what="the admin's DELETE of A's VM")
    check("... the delete operation is A's", dop.get("owner_id") == a["id"], repr(dop))
    r = request("GET", f"/v1/vms/{vm}", token=a["token"])
    check("... A sees it gone (404)", r.status == 404 and is_problem(r), repr(r))
    r = request("GET", f"/v1/operations/{dop['id']}", token=a["token"])
    check("... A can GET the delete operation", r.status == 200
          and r.json.get("status") == "succeeded", repr(r))
    r = request("GET", f"/v1/operations/{dop['id']}", token=bt)
    check("... B cannot (404, problem)", r.status == 404 and is_problem(r), repr(r))
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
    bvm, bop = submit_create({"name": f"pub-{tag}", "image_id": pub, "vcpus": 1,
                              "memory_mib": 128, "disk_gib": 1}, token=bt,
                             what="B's POST /v1/vms on it")
    check("... owned by B", bop.get("owner_id") == b["id"], repr(bop))
    r = request("DELETE", f"/v1/images/{pub}", token=bt)
    check("B may not delete the public image while its VM uses it (403, problem)",
          r.status == 403 and full_problem(r), repr(r))
    o = wait_op(bop["id"], token=bt)
    check("B's create operation succeeds", op_succeeded(o), repr(o))
    delete_vm(bvm, token=bt, what="B's DELETE of its VM")
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

    t0 = time.time()
    results = at_once(n, lambda i: request(
        "POST", "/v1/vms", {"name": f"q{tag}-{i}", "image_id": img, "vcpus": 1,
                            "memory_mib": mem, "disk_gib": 1}, timeout=600,
        token=u["token"]), 660)
    took = time.time() - t0
    good = [r for r in results if isinstance(r, Resp) and r.status == 202
            and isinstance(r.json, dict) and isinstance(r.json.get("id"), str)]
    created = [r.json["id"] for r in good]
    cleanup_vms.extend(created)
    refused = [r for r in results if isinstance(r, Resp) and r.status == 403]
    print(f"       {n} concurrent creates in {took:.1f} s: "
          f"{sorted((r.status if isinstance(r, Resp) else repr(r)) for r in results)}")
    check(f"exactly {cap} creates answer 202 and {n - cap} answer 403",
          len(created) == cap and len(refused) == n - cap,
          repr([r for r in results if not (isinstance(r, Resp) and r.status in (202, 403))]))
    check("... each 202 with the VM (creating), its operation and a Location",
          all(accepted(r, "vm.create", "creating") for r in good),
          repr([r for r in good if not accepted(r, "vm.create", "creating")]))

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
    for r in good:
        o = wait_op(r.json["operation"]["id"], token=u["token"])
        check(f"the create operation of VM {r.json['id'][:8]} succeeds", op_succeeded(o),
              repr(o))
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

    dops = [submit_delete(vm, token=u["token"]) for vm in created]
    for vm, op in zip(created, dops):
        o = wait_op(op["id"], token=u["token"])
        check(f"the delete operation of VM {vm[:8]} succeeds", op_succeeded(o), repr(o))
        cleanup_vms.remove(vm)
    r = request("GET", "/v1/vms?limit=100", token=u["token"])
    check("the user's list is empty", r.status == 200 and ids_of(r) == set(), repr(r))
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

    # Tamper with a copy: the verifier must name the entry.  The copy is made
    # by stratus-admin db copy into a fresh SQLite file, whichever store the
    # stack runs on (so the PostgreSQL run copies across stores).
    conf = os.path.join(STATE, "stratus.conf")
    live = api_setting("database", os.path.join(STATE, "db", "stratus.db"))
    tmp = tempfile.mkdtemp(prefix="stratus-e2e-audit-")
    try:
        copy = os.path.join(tmp, "stratus.db")
        rc, out = admin_cli("db", "copy", "--from", live, "--to", "sqlite://" + copy)
        check(f"stratus-admin db copy ({STORE} to SQLite) verifies counts and the chain",
              rc == 0 and "audit chain intact" in out and "db copy: done" in out
              and os.path.isfile(copy), f"exit {rc}: {out}")
        check("... and prints no database URL", "postgresql://" not in out
              and copy not in out, out)
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
        again = os.path.join(tmp, "again.db")
        rc, out = admin_cli("db", "copy", "--from", copy, "--to", again)
        check("db copy of the tampered copy fails naming the broken entry", rc != 0
              and f"breaks at entry {int(victim)}" in out, f"exit {rc}: {out}")
        rc, out = admin_cli("db", "copy", "--from", live, "--to", "sqlite://" + copy)
        check("db copy into a database that is not empty is refused", rc != 0
              and "not empty" in out, f"exit {rc}: {out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rc, out = admin_cli("audit", "verify")
    check("the live database still verifies intact", rc == 0 and "chain intact" in out,
          f"exit {rc}: {out}")


# --- (l) operations: 202, long polls, lists, conflicts, events ------------------

def parse_time(text):
    """An RFC 3339 time as seconds since the epoch, or None."""
    try:
        from datetime import datetime
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError, TypeError):
        return None


def op_ids(r):
    return [i.get("id") for i in (r.json or {}).get("items", [])] if r.status == 200 else None


def scenario_operations():
    tag = uuid.uuid4().hex[:8]
    a = new_user("ops-a")
    b = new_user("ops-b")
    at, bt = a["token"], b["token"]
    img = import_image("o" + tag, token=at)

    # The 202 and what it holds.
    r = request("POST", "/v1/vms", {"name": f"ops-{tag}", "image_id": img, "vcpus": 1,
                                     "memory_mib": 128, "disk_gib": 1}, token=at, timeout=120)
    check("POST /v1/vms answers 202 with the VM (creating), its operation and a Location",
          accepted(r, "vm.create", "creating"), repr(r))
    vm_id, op = r.json["id"], r.json["operation"]
    cleanup_vms.append(vm_id)
    print(f"       202 operation: {json.dumps(op)}")
    check("... the VM is the one asked for, owned by A", r.json.get("name") == f"ops-{tag}"
          and r.json.get("owner_id") == a["id"] and r.json.get("image_id") == img, repr(r))
    check("... the operation: A's, on the VM, no error, not finished",
          op["owner_id"] == a["id"] and op["target_id"] == vm_id and op["error"] is None
          and op["finished_at"] is None, repr(op))
    g = request("GET", r.header("Location"), token=at)
    check("GET the Location answers 200 with that operation", g.status == 200
          and is_op(g.json, "vm.create", vm_id) and g.json["id"] == op["id"], repr(g))

    # ?wait= returns as the operation ends, not at the bound.
    t0 = time.time()
    w = get_op(op["id"], wait=30, token=at)
    got = time.time()
    fin = parse_time((w.json or {}).get("finished_at")) if isinstance(w.json, dict) else None
    print(f"       ?wait=30 answered after {got - t0:.1f} s, "
          f"{(got - fin) if fin else float('nan'):.2f} s after finished_at")
    check("GET ?wait=30 answers the operation succeeded", op_succeeded(w)
          and w.json["id"] == op["id"], repr(w))
    check("... started_at and finished_at are RFC 3339 times, attempts >= 1",
          re.fullmatch(RFC3339, str(w.json.get("started_at"))) is not None
          and re.fullmatch(RFC3339, str(w.json.get("finished_at"))) is not None
          and w.json["attempts"] >= 1, repr(w.json))
    check("... well before the bound (under 25 s) and within 2 s of finished_at",
          got - t0 < 25 and fin is not None and got - fin < 2,
          f"{got - t0:.1f} s; finished_at {w.json.get('finished_at')}")
    t0 = time.time()
    w2 = get_op(op["id"], wait=30, token=at)
    secs = time.time() - t0
    check("?wait=30 on an ended operation answers at once (under 2 s), unchanged",
          w2.status == 200 and w2.json == w.json and secs < 2, f"{secs:.1f} s: {w2!r}")
    g = request("GET", f"/v1/vms/{vm_id}", token=at)
    check("the VM is running", g.status == 200 and g.json.get("status") == "running", repr(g))

    # Lists.
    r = request("GET", f"/v1/operations?target_id={vm_id}", token=at)
    check("GET /v1/operations?target_id=<VM> lists its create operation only",
          op_ids(r) == [op["id"]] and is_op(r.json["items"][0], "vm.create", vm_id), repr(r))
    r = request("GET", f"/v1/operations?target_id={vm_id}&status=succeeded", token=at)
    check("... &status=succeeded lists it", op_ids(r) == [op["id"]], repr(r))
    for st in ("queued", "running", "failed"):
        r = request("GET", f"/v1/operations?target_id={vm_id}&status={st}", token=at)
        check(f"... &status={st} lists nothing", op_ids(r) == [], repr(r))
    r = request("GET", "/v1/operations?status=succeeded&limit=200", token=at)
    check("GET /v1/operations?status=succeeded (A) has it; every item succeeded and A's",
          op_ids(r) is not None and op["id"] in op_ids(r)
          and all(i.get("status") == "succeeded" and i.get("owner_id") == a["id"]
                  for i in r.json["items"]), repr(r))
    r = request("GET", "/v1/operations?status=bogus", token=at)
    check("?status=bogus answers 400 (problem)", r.status == 400 and is_problem(r), repr(r))

    # Another user: nothing of A's.
    for path in (f"/v1/operations/{op['id']}", f"/v1/operations/{op['id']}?wait=5"):
        t0 = time.time()
        r = request("GET", path, token=bt)
        check(f"B: GET {path.replace(op['id'], '{A op}')} answers 404 (problem) at once",
              r.status == 404 and full_problem(r) and time.time() - t0 < 3, repr(r))
    r = request("GET", f"/v1/operations?target_id={vm_id}", token=bt)
    check("B: GET /v1/operations?target_id=<A's VM> lists nothing", op_ids(r) == [], repr(r))
    r = request("GET", "/v1/operations?limit=200", token=bt)
    check("B: GET /v1/operations lists none of A's", op_ids(r) is not None
          and op["id"] not in op_ids(r), repr(r))
    r = request("GET", f"/v1/operations/{op['id']}")
    check("the admin: GET A's operation answers 200", r.status == 200
          and r.json.get("id") == op["id"], repr(r))

    # Actions (operations too), then the events so far.
    sop = action(vm_id, "stop", "stopped", token=at)
    aop = action(vm_id, "start", "running", token=at)
    check("... the stop and start operations are A's, on the VM",
          all(o.get("owner_id") == a["id"] and o.get("target_id") == vm_id for o in (sop, aop)),
          repr([sop, aop]))
    r, evs = vm_events(vm_id, token=at)
    check("GET /v1/vms/{id}/events answers 200 with items", evs is not None, repr(r))
    print(f"       events: {[(e.get('type'), e.get('message')) for e in evs]}")
    check("... every item is an event of the VM (id, vm_id, at, type, message, data)",
          evs and all(is_event(e, vm_id) for e in evs), repr(evs))

    def find(events, etype, message):
        return next((e for e in events if e.get("type") == etype and e.get("message") == message),
                    None)

    want = [("INFO", "create accepted"), ("STATE_CHANGE", "created: running"),
            ("STATE_CHANGE", "stop: now stopped"), ("STATE_CHANGE", "start: now running")]
    hits = [find(evs, t, m) for t, m in want]
    check("... create accepted (INFO), created: running, stop: now stopped, start: now "
          "running (STATE_CHANGE)", all(hits), repr([w for w, h in zip(want, hits) if not h]))
    times = [parse_time(h["at"]) for h in hits]
    check("... in that order", all(x is not None for x in times) and times == sorted(times),
          repr([h["at"] for h in hits]))
    check("... create accepted names the operation",
          (hits[0].get("data") or {}).get("operation_id") == op["id"], repr(hits[0]))
    # The stop and start went through the API: nothing happened behind its back.
    behind = [e for e in evs if "seen by the hypervisor" in str(e.get("message"))]
    soft_check("... and no event says the API's own stop/start was seen by the hypervisor "
               "(behind stratus's back)", not behind,
               repr([(e["at"], e["message"]) for e in behind]))
    r1 = request("GET", f"/v1/vms/{vm_id}/events?limit=2", token=at)
    page1 = (r1.json or {}).get("items") if r1.status == 200 else None
    marker = (r1.json or {}).get("next_marker") if r1.status == 200 else None
    check("events ?limit=2: the first 2, and a next_marker", page1 is not None
          and [e["id"] for e in page1] == [e["id"] for e in evs[:2]] and bool(marker), repr(r1))
    r2 = request("GET", f"/v1/vms/{vm_id}/events?limit=2&marker={marker}", token=at)
    check("... the next page follows on", r2.status == 200
          and [e["id"] for e in r2.json.get("items", [])] == [e["id"] for e in evs[2:4]],
          repr(r2))
    r = request("GET", f"/v1/vms/{vm_id}/events", token=bt)
    check("B: GET A's VM's events answers 404 (problem)", r.status == 404 and full_problem(r),
          repr(r))

    # With no worker the delete stays queued: ?wait=1, the cut to 30 s, a second DELETE.
    stop_stack_worker()
    try:
        dop = submit_delete(vm_id, token=at)
        t0 = time.time()
        w = get_op(dop["id"], wait=1, token=at)
        secs = time.time() - t0
        print(f"       ?wait=1 on the queued delete answered after {secs:.2f} s")
        check("?wait=1 on a queued operation answers it queued after about 1 s",
              w.status == 200 and is_op(w.json, "vm.delete", vm_id)
              and w.json["status"] == "queued" and w.json["finished_at"] is None
              and 0.9 <= secs < 4, f"{secs:.2f} s: {w!r}")
        r = request("DELETE", f"/v1/vms/{vm_id}", token=at)
        check("a second DELETE while one is queued answers 409 (problem)",
              r.status == 409 and full_problem(r), repr(r))
        r = request("GET", f"/v1/operations?target_id={vm_id}&status=queued", token=at)
        check("?target_id=<VM>&status=queued lists just the delete", op_ids(r) == [dop["id"]],
              repr(r))
        r = request("GET", f"/v1/operations?target_id={vm_id}", token=at)
        check("?target_id=<VM> lists the create, the stop, the start and the delete",
              op_ids(r) is not None
              and sorted(op_ids(r)) == sorted([op["id"], sop["id"], aop["id"], dop["id"]]),
              repr(r))
        r = request("GET", f"/v1/operations/{dop['id']}", token=bt)
        check("B: GET A's queued operation answers 404 (problem)",
              r.status == 404 and full_problem(r), repr(r))
        g = request("GET", f"/v1/vms/{vm_id}", token=at)
        check("the VM shows deleting meanwhile", g.status == 200
              and g.json.get("status") == "deleting", repr(g))
        t0 = time.time()
        w = get_op(dop["id"], wait=60, token=at)
        secs = time.time() - t0
        print(f"       ?wait=60 on the queued delete answered after {secs:.1f} s")
        check("?wait=60 is cut to 30 s: the queued operation comes back after about 30 s",
              w.status == 200 and w.json.get("status") == "queued" and 28 <= secs < 40,
              f"{secs:.1f} s: {w!r}")
    finally:
        start_stack_worker()
    o = wait_op(dop["id"], token=at)
    check("once a worker runs again, the delete succeeds", op_succeeded(o)
          and o.json["kind"] == "vm.delete", repr(o))
    g = request("GET", f"/v1/vms/{vm_id}", token=at)
    check("... and the VM is gone (404)", g.status == 404 and is_problem(g), repr(g))
    cleanup_vms.remove(vm_id)

    # The events outlive the VM, for its owner only.
    r, evs2 = vm_events(vm_id, token=at)
    check("after the delete A still reads the VM's events (200)", evs2 is not None, repr(r))
    print(f"       events after delete: {[(e.get('type'), e.get('message')) for e in evs2]}")
    acc, gone = find(evs2, "INFO", "delete accepted"), find(evs2, "STATE_CHANGE", "deleted")
    check("... with delete accepted (INFO) and deleted (STATE_CHANGE), after the others",
          acc is not None and gone is not None
          and times[-1] <= parse_time(acc["at"]) <= parse_time(gone["at"])
          and {e["id"] for e in evs} <= {e["id"] for e in evs2}, repr(evs2))
    check("... delete accepted names the delete operation",
          (acc.get("data") or {}).get("operation_id") == dop["id"], repr(acc))
    r = request("GET", f"/v1/vms/{vm_id}/events", token=bt)
    check("B: the deleted VM's events answer 404 (problem)", r.status == 404 and full_problem(r),
          repr(r))
    r = request("GET", f"/v1/operations/{dop['id']}", token=bt)
    check("B: the ended delete operation answers 404 (problem)",
          r.status == 404 and full_problem(r), repr(r))
    r = request("DELETE", f"/v1/images/{img}", token=at, timeout=60)
    check("A deletes its image (204)", r.status == 204, repr(r))
    cleanup_images.remove(img)


# --- (m) a worker dies after each step; another finishes the operation ---------

CREATE_STEPS = ("disk", "define", "start", "finish")
DELETE_STEPS = ("destroy", "undefine", "disk")


def crash_case(kind, step, submit):
    """With the stack's worker stopped, a crash worker takes the operation that
    submit() queues and exits after @step; a normal worker then finishes it."""
    where = f"{kind}:{step}"
    stop_stack_worker()
    cw = None
    t0 = time.time()
    try:
        cw = start_crash_worker(where)
        op = submit()
        try:
            rc = cw.wait(60)
        except subprocess.TimeoutExpired:
            rc = None
        check(f"{where}: the crash worker exits with status 137", rc == 137,
              f"exit {rc}; see {CRASH_LOG}")
        r = get_op(op["id"])
        check(f"{where}: the operation is left running at step {step}", r.status == 200
              and r.json.get("status") == "running" and r.json.get("step") == step, repr(r))
    finally:
        end_crash_worker(cw)
        start_stack_worker()
    t1 = time.time()
    o = wait_op(op["id"], bound=75)
    j = o.json if isinstance(o.json, dict) else {}
    print(f"       {where}: crashed after {t1 - t0:.1f} s; taken again and finished "
          f"{time.time() - t1:.1f} s after the restart (attempts {j.get('attempts')}, "
          f"step {j.get('step')})")
    check(f"{where}: after a normal worker starts it ends succeeded, attempts >= 2",
          op_succeeded(o) and j["attempts"] >= 2, repr(o))
    return j


def no_orphan_of(vm_id):
    r, items = orphans()
    check("GET /v1/admin/orphans answers 200 with items", items is not None, repr(r))
    check("... none of them this VM's", not [i for i in items if i.get("vm_id") == vm_id],
          repr(items))


def scenario_crash():
    """Each case runs on (a failed case does not end the scenario; it still counts)."""
    tag = uuid.uuid4().hex[:8]
    img = import_image("c" + tag)
    made = []
    broken = []
    for step in CREATE_STEPS:
        box = {}

        def submit(step=step, box=box):
            vm_id, op = submit_create({"name": f"crash-{step}-{tag}", "image_id": img,
                                       "vcpus": 1, "memory_mib": 128, "disk_gib": 1},
                                      what=f"vm.create:{step}: POST /v1/vms")
            box["vm"] = vm_id
            return op

        try:
            crash_case("vm.create", step, submit)
        except Fail:
            broken.append(f"vm.create:{step}")
        vm_id = box.get("vm")
        if vm_id is None:
            continue
        made.append(vm_id)
        try:
            g = request("GET", f"/v1/vms/{vm_id}")
            check(f"vm.create:{step}: the VM is running", g.status == 200
                  and g.json.get("status") == "running", repr(g))
            rc, out = virsh("domstate", f"stratus-{vm_id}")
            check("... libvirt runs its domain", rc == 0 and out.strip() == "running",
                  out.strip())
            disks = files_with(vm_id)
            check("... its disk file is in the default pool", len(disks) == 1
                  and disks[0] == os.path.join(POOLS_DIR, "default", f"vm-{vm_id}.qcow2"),
                  repr(disks))
            no_orphan_of(vm_id)
        except Fail:
            broken.append(f"vm.create:{step} (after)")
    for step, vm_id in zip(DELETE_STEPS, made):
        try:
            crash_case("vm.delete", step, lambda vm_id=vm_id, step=step: submit_delete(
                vm_id, what=f"vm.delete:{step}: DELETE"))
        except Fail:
            broken.append(f"vm.delete:{step}")
        try:
            g = request("GET", f"/v1/vms/{vm_id}")
            check(f"vm.delete:{step}: the row is gone (404)", g.status == 404 and is_problem(g),
                  repr(g))
            cleanup_vms.remove(vm_id)
            doms = domains()
            check("... no domain is left", doms is not None and f"stratus-{vm_id}" not in doms,
                  repr(doms))
            check("... no disk file is left", not files_with(vm_id), repr(files_with(vm_id)))
            no_orphan_of(vm_id)
        except Fail:
            broken.append(f"vm.delete:{step} (after)")
    for vm_id in made[len(DELETE_STEPS):]:
        delete_vm(vm_id)
    print(f"       crash cases that failed: {', '.join(broken) or 'none'}")
    r = request("DELETE", f"/v1/images/{img}", timeout=60)
    check("the image is deleted (204)", r.status == 204, repr(r))
    cleanup_images.remove(img)


# --- (n) reconcile: orphans, and changes made behind stratus's back ------------

def scenario_reconcile():
    tag = uuid.uuid4().hex[:8]
    img = import_image("r" + tag)
    body = {"image_id": img, "vcpus": 1, "memory_mib": 128, "disk_gib": 1}
    x = create_vm(dict(body, name=f"rec-x-{tag}"))["id"]

    # An orphan: a domain of this installation, and its disk, with no row.
    new = str(uuid.uuid4())
    rc, xml = virsh("dumpxml", "--inactive", f"stratus-{x}")
    check("virsh dumpxml --inactive of a stratus VM", rc == 0 and "stratus-e2e" in xml
          and f"vm-{x}.qcow2" in xml, xml[-300:])
    xml = re.sub(r"<uuid>[^<]*</uuid>", f"<uuid>{new}</uuid>", xml, count=1)
    xml = re.sub(r"<backingStore.*?</backingStore>|<backingStore/>", "", xml, flags=re.S)
    xml = xml.replace(x, new)
    disk = os.path.join(POOLS_DIR, "default", f"vm-{new}.qcow2")
    check("the copy's disk is vm-<new>.qcow2 in the default pool", f"file='{disk}'" in xml,
          repr(re.findall(r"<source file='[^']+'", xml)))
    check("the guest image was built", bool(GUEST) and os.path.isfile(GUEST), GUEST)
    shutil.copyfile(GUEST, disk)
    os.chmod(disk, 0o644)
    dom = f"stratus-{new}"
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as f:
            f.write(xml)
        rc, out = virsh("define", f.name)
        os.unlink(f.name)
        check(f"virsh define {dom} behind stratus's back", rc == 0, out)
        r, items = orphans()
        mine = sorted((i.get("kind"), i.get("name")) for i in items or []
                      if i.get("vm_id") == new)
        print(f"       orphans: {json.dumps(r.json)[:400]}")
        check("GET /v1/admin/orphans lists its domain and its disk",
              mine == [("disk", f"vm-{new}.qcow2"), ("domain", dom)]
              and r.json.get("count") == len(items), repr(r))
        d = next(i for i in items if i.get("vm_id") == new and i.get("kind") == "domain")
        check("... the domain with the owner its metadata names", d.get("owner_id") == admin_id(),
              repr(d))
        r = request("POST", "/v1/admin/orphans/collect?dry_run=true")
        j = r.json if isinstance(r.json, dict) else {}
        mine = sorted((i.get("kind"), i.get("name")) for i in j.get("items", [])
                      if i.get("vm_id") == new)
        check("a dry-run collect answers 200, dry_run true, listing both", r.status == 200
              and j.get("dry_run") is True and mine == [("disk", f"vm-{new}.qcow2"),
                                                        ("domain", dom)]
              and j.get("count") == len(j.get("items", [])), repr(r))
        check("... and removes nothing (virsh has the domain, the file is there)",
              dom in (domains() or set()) and os.path.exists(disk))
        r = request("POST", "/v1/admin/orphans/collect")
        j = r.json if isinstance(r.json, dict) else {}
        mine = sorted((i.get("kind"), i.get("name")) for i in j.get("items", [])
                      if i.get("vm_id") == new)
        check("a collect answers 200, dry_run false, listing both", r.status == 200
              and j.get("dry_run") is False and mine == [("disk", f"vm-{new}.qcow2"),
                                                         ("domain", dom)], repr(r))
        doms = domains()
        check("... the domain is gone (virsh)", doms is not None and dom not in doms)
        check("... the disk file is gone", not os.path.exists(disk), disk)
        r, items = orphans()
        check("... and GET /v1/admin/orphans no longer lists them", items is not None
              and not [i for i in items if i.get("vm_id") == new], repr(r))
        g = request("GET", f"/v1/vms/{x}")
        check("the VM it was copied from is untouched (running)", g.status == 200
              and g.json.get("status") == "running", repr(g))
    finally:
        if dom in (domains() or set()):
            virsh("destroy", dom)
            virsh("undefine", dom)
        if os.path.exists(disk):
            os.unlink(disk)

    # Stopped behind stratus's back, and started again.
    _, evs = vm_events(x)
    seen = {e.get("id") for e in evs or []}
    t0 = time.time()
    rc, out = virsh("destroy", f"stratus-{x}")
    check(f"virsh destroy stratus-{x[:8]}...", rc == 0, out)
    g = None
    while time.time() - t0 < 3:
        g = request("GET", f"/v1/vms/{x}")
        if g.status == 200 and g.json.get("status") == "stopped":
            break
        time.sleep(0.1)
    check("GET shows stopped within 3 s", g is not None and g.status == 200
          and g.json.get("status") == "stopped", repr(g))
    secs, hit, evs = wait_event(x, lambda e: e.get("id") not in seen
                                and e.get("type") == "STATE_CHANGE"
                                and "stopped" in str(e.get("message")), 3 - (time.time() - t0))
    print(f"       {time.time() - t0:.1f} s after the destroy: {hit}")
    check("... and a new STATE_CHANGE event saying stopped within 3 s", hit is not None,
          repr([e for e in evs or [] if e.get("id") not in seen]))
    seen |= {e.get("id") for e in evs or []}
    rc, out = virsh("start", f"stratus-{x}")
    check("virsh start it again", rc == 0, out)
    g = wait_vm(x, "running", timeout=10)
    check("GET shows running", g.status == 200 and g.json.get("status") == "running", repr(g))
    secs, hit, _ = wait_event(x, lambda e: e.get("id") not in seen
                              and e.get("type") == "STATE_CHANGE", 3)
    print(f"       after virsh start: {hit}")

    # Undefined behind its back: missing, a WARNING, and the delete still works.
    y = create_vm(dict(body, name=f"rec-y-{tag}"))["id"]
    _, evs = vm_events(y)
    seen = {e.get("id") for e in evs or []}
    ydisk = files_with(y)
    t0 = time.time()
    virsh("destroy", f"stratus-{y}")
    rc, out = virsh("undefine", f"stratus-{y}")
    check(f"virsh destroy + undefine stratus-{y[:8]}...", rc == 0, out)
    g = None
    while time.time() - t0 < 10:
        g = request("GET", f"/v1/vms/{y}")
        if (g.status == 200 and g.json.get("status") == "missing"
                and g.json.get("fault") == VANISHED_FAULT):
            break
        time.sleep(0.2)
    print(f"       {time.time() - t0:.1f} s after the undefine: {g!r}"[:400])
    check(f"GET shows missing with fault '{VANISHED_FAULT}' within 10 s", g.status == 200
          and g.json.get("status") == "missing" and g.json.get("fault") == VANISHED_FAULT,
          repr(g))
    secs, hit, evs = wait_event(y, lambda e: e.get("id") not in seen
                                and e.get("type") == "WARNING", max(1, 10 - (time.time() - t0)))
    print(f"       {time.time() - t0:.1f} s after the undefine: {hit}")
    check("... and a WARNING event within a reconcile interval or so (10 s)", hit is not None,
          repr([e for e in evs or [] if e.get("id") not in seen]))
    delete_vm(y, what="DELETE of the missing VM")
    check("... its disk file is gone", ydisk and not files_with(y), repr(files_with(y)))
    delete_vm(x)
    r = request("DELETE", f"/v1/images/{img}", timeout=60)
    check("the image is deleted (204)", r.status == 204, repr(r))
    cleanup_images.remove(img)


# --- (o) Idempotency-Key ------------------------------------------------------------

def scenario_idempotency():
    tag = uuid.uuid4().hex[:8]
    img = import_image("i" + tag)
    body = {"name": f"idem-{tag}", "image_id": img, "vcpus": 1, "memory_mib": 128,
            "disk_gib": 1}
    key = f"e2e-{tag}-{uuid.uuid4()}"
    hk = {"Idempotency-Key": key}

    def named(name):
        r = request("GET", f"/v1/vms?name={name}&limit=100")
        return [i.get("id") for i in r.json.get("items", [])] if r.status == 200 else None

    r1 = request("POST", "/v1/vms", body, headers=hk, timeout=120)
    check("POST /v1/vms with an Idempotency-Key answers 202",
          accepted(r1, "vm.create", "creating"), repr(r1))
    vm1 = r1.json["id"]
    cleanup_vms.append(vm1)
    check("... without Idempotent-Replayed", r1.header("Idempotent-Replayed") is None,
          repr(r1.headers))
    r2 = request("POST", "/v1/vms", body, headers=hk, timeout=120)
    check("the same POST again: the same status and body (same VM id), Idempotent-Replayed: true",
          r2.status == r1.status and r2.json == r1.json
          and r2.header("Idempotent-Replayed") == "true"
          and r2.header("Location") == r1.header("Location"), f"{r2!r} {r2.headers}")
    o = wait_op(r1.json["operation"]["id"])
    check("the create succeeds", op_succeeded(o), repr(o))
    r3 = request("POST", "/v1/vms", body, headers=hk, timeout=120)
    check("... and a third time, after it ended: the first answer again", r3.status == r1.status
          and r3.json == r1.json and r3.header("Idempotent-Replayed") == "true", repr(r3))
    check(f"there is one VM named idem-{tag}", named(f"idem-{tag}") == [vm1],
          repr(named(f"idem-{tag}")))
    other = dict(body, name=f"idem-other-{tag}")
    r = request("POST", "/v1/vms", other, headers=hk, timeout=120)
    check("the same key with another body answers 422 (problem)", r.status == 422
          and full_problem(r), repr(r))
    check("... and makes no VM", named(f"idem-other-{tag}") == [], repr(named(f"idem-other-{tag}")))

    # Concurrent duplicates.  A duplicate that finds every waiting place
    # taken is told to come back (409 + Retry-After): it does, as a client
    # should.
    n = 5
    key2 = f"e2e-c-{tag}-{uuid.uuid4()}"
    body2 = dict(body, name=f"idem-c-{tag}")
    again = [0] * n

    def send(i):
        r, again[i] = request_again_after("POST", "/v1/vms", body2,
                                          headers={"Idempotency-Key": key2})
        return r

    results = at_once(n, send, 150)
    print(f"       sent again after Retry-After: {again}")
    resps = [r for r in results if isinstance(r, Resp)]
    ids = {(r.json or {}).get("id") for r in resps if isinstance(r.json, dict)}
    for i in ids:
        if isinstance(i, str) and i not in cleanup_vms:
            cleanup_vms.append(i)
    shown = [(r.status, r.header("Idempotent-Replayed")) if isinstance(r, Resp) else repr(r)
             for r in results]
    print(f"       {n} concurrent (status, Idempotent-Replayed): {shown}")
    check(f"{n} concurrent POSTs with one key: all answer 202 with the same VM id",
          len(resps) == n and all(accepted(r, "vm.create", "creating") for r in resps)
          and len(ids) == 1, repr(results))
    check("... the same body each time; all but the first say Idempotent-Replayed: true",
          all(r.json == resps[0].json for r in resps)
          and sum(r.header("Idempotent-Replayed") == "true" for r in resps) == n - 1,
          repr([r.header("Idempotent-Replayed") for r in resps]))
    vm2 = ids.pop()
    check(f"there is one VM named idem-c-{tag}", named(f"idem-c-{tag}") == [vm2],
          repr(named(f"idem-c-{tag}")))

    # Keys the API refuses, and the longest it takes.
    for what, k in (("with a space", "has space"), ("of 300 characters", "k" * 300),
                    ("of 256 characters", "k" * 256)):
        name = f"idem-bad-{uuid.uuid4().hex[:8]}"
        r = request("POST", "/v1/vms", dict(body, name=name), headers={"Idempotency-Key": k},
                    timeout=120)
        if r.status == 202 and isinstance(r.json, dict):
            cleanup_vms.append(r.json["id"])
        check(f"an Idempotency-Key {what} answers 400 (problem)", r.status == 400
              and full_problem(r), repr(r))
        check("... and makes no VM", named(name) == [], repr(named(name)))
    r = request("POST", "/v1/vms", dict(body, name=f"idem-255-{tag}"),
                headers={"Idempotency-Key": "k" * 255}, timeout=120)
    check("an Idempotency-Key of 255 characters is taken (202)",
          accepted(r, "vm.create", "creating"), repr(r))
    vm3 = r.json["id"]
    cleanup_vms.append(vm3)
    for vm in (vm2, vm3):
        ops = request("GET", f"/v1/operations?target_id={vm}")
        for op_id in op_ids(ops) or []:
            wait_op(op_id)
    for vm in (vm1, vm2, vm3):
        delete_vm(vm)
    r = request("DELETE", f"/v1/images/{img}", timeout=60)
    check("the image is deleted (204)", r.status == 204, repr(r))
    cleanup_images.remove(img)


# --- (p) the guest powers itself off -------------------------------------------------

def scenario_poweroff():
    tag = uuid.uuid4().hex[:8]
    img = import_image("p" + tag)
    vm_id = create_vm({"name": f"off-{tag}", "image_id": img, "vcpus": 1, "memory_mib": 256,
                       "disk_gib": 1})["id"]
    line = wait_new_boot(vm_id, "")
    check("the guest boots (marker in the console log)", line is not None)
    time.sleep(3)  # acpid starts right after the marker
    _, evs = vm_events(vm_id)
    seen = {e.get("id") for e in evs or []}
    t0 = time.time()
    rc, out = virsh("shutdown", f"stratus-{vm_id}")
    check("virsh shutdown (an ACPI power button press) behind stratus's back", rc == 0, out)
    g = None
    while time.time() - t0 < 15:
        g = request("GET", f"/v1/vms/{vm_id}")
        if g.status == 200 and g.json.get("status") == "stopped":
            break
        time.sleep(0.2)
    print(f"       stopped {time.time() - t0:.1f} s after the shutdown request")
    check("GET shows stopped within 15 s", g.status == 200
          and g.json.get("status") == "stopped", repr(g))
    check("... the guest powered itself off (console log)",
          "STRATUS-GUEST-POWEROFF" in console_log(vm_id))
    secs, hit, evs = wait_event(vm_id, lambda e: e.get("id") not in seen
                                and e.get("type") == "STATE_CHANGE"
                                and "stopped" in str(e.get("message")), 5)
    print(f"       {hit}")
    check("... and a STATE_CHANGE event says it stopped", hit is not None,
          repr([e for e in evs or [] if e.get("id") not in seen]))
    delete_vm(vm_id)
    r = request("DELETE", f"/v1/images/{img}", timeout=60)
    check("the image is deleted (204)", r.status == 204, repr(r))
    cleanup_images.remove(img)


# --- (q) 50 concurrent creates ------------------------------------------------------

def status_counts(items):
    out = {}
    for i in items:
        out[i.get("status")] = out.get(i.get("status"), 0) + 1
    return out


def wait_ops_ended(op_ids_, token, bound):
    """{op id: operation} once none is queued or running, or at @bound seconds."""
    want = set(op_ids_)
    t0 = time.time()
    said = t0
    seen = {}
    while True:
        items, marker = [], None
        for _ in range(20):
            r = request("GET", "/v1/operations?limit=1000" + (f"&marker={marker}" if marker
                                                               else ""), token=token)
            if not (r.status == 200 and isinstance((r.json or {}).get("items"), list)):
                check("GET /v1/operations answers 200", False, repr(r))
            items += r.json["items"]
            marker = r.json.get("next_marker")
            if not marker:
                break
        seen = {i["id"]: i for i in items if i.get("id") in want}
        if (len(seen) == len(want) and all(i.get("status") in OP_DONE for i in seen.values())
                or time.time() - t0 >= bound):
            return seen
        if time.time() - said >= 30:
            said = time.time()
            print(f"       ... {said - t0:.0f} s: {status_counts(seen.values())}, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
        time.sleep(2)


CONCURRENCY_BOUND = 420  # seconds for 50 creates (or deletes) of TCG guests on a small host


def scenario_concurrency():
    tag = uuid.uuid4().hex[:8]
    n = 50
    u = new_user("conc")
    ut = u["token"]
    quota = {"max_vms": 60, "max_vcpus": 64, "max_memory_mib": 65536, "max_disk_gib": 500}
    r = request("PATCH", f"/v1/users/{u['id']}", {"quota": quota})
    check("the admin raises the user's quota (max_vms 60)", r.status == 200
          and r.json.get("quota") == quota, repr(r))
    img = import_image("n" + tag, token=ut)

    probes = []          # (path, seconds, status or exception)
    stop = threading.Event()
    known = []

    def create(i):
        r = request("POST", "/v1/vms", {"name": f"c{tag}-{i}", "image_id": img, "vcpus": 1,
                                        "memory_mib": 64, "disk_gib": 1}, timeout=120, token=ut)
        if r.status == 202 and isinstance(r.json, dict):
            known.append(r.json["id"])
        return r

    def probe():
        k = 0
        while not stop.is_set() and k < 5000:
            path = "/v1/vms?limit=100" if k % 2 == 0 or not known else f"/v1/vms/{known[0]}"
            k += 1
            t0 = time.time()
            try:
                s = request("GET", path, token=ut, timeout=30).status
            except Exception as e:  # noqa: BLE001
                s = repr(e)
            probes.append((path, time.time() - t0, s))
            stop.wait(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    t0 = time.time()
    results = at_once(n, create, 150)
    took = time.time() - t0
    good = [r for r in results if isinstance(r, Resp) and accepted(r, "vm.create", "creating")]
    vms = [r.json["id"] for r in good]
    cleanup_vms.extend(vms)
    statuses = {}
    for r in results:
        k = r.status if isinstance(r, Resp) else type(r).__name__
        statuses[k] = statuses.get(k, 0) + 1
    print(f"       {n} concurrent creates answered in {took:.1f} s: {statuses}")
    check(f"all {n} concurrent POSTs answer 202 (no 5xx)", len(good) == n,
          repr([r for r in results if not (isinstance(r, Resp) and r.status == 202)][:5]))
    ops = {r.json["operation"]["id"]: r.json["id"] for r in good}
    ended = wait_ops_ended(ops, ut, CONCURRENCY_BOUND)
    stop.set()
    prober.join(40)
    print(f"       operations {time.time() - t0:.1f} s after the first POST: "
          f"{status_counts(ended.values())}")
    secs = sorted(p[1] for p in probes)
    bad = [p for p in probes if p[2] != 200 or p[1] > 30]
    if secs:
        print(f"       {len(probes)} GETs meanwhile: median {secs[len(secs) // 2]:.2f} s, "
              f"max {secs[-1]:.2f} s; not 200: {[p for p in probes if p[2] != 200][:5]}")
    check("GET /v1/vms and GET /v1/vms/{id} answer 200 within 30 s throughout",
          probes and not bad, repr(bad[:5]))
    check(f"every create operation has ended (none queued or running after "
          f"{CONCURRENCY_BOUND} s)",
          len(ended) == len(ops) and all(o.get("status") in OP_DONE for o in ended.values()),
          repr([o for o in ended.values() if o.get("status") not in OP_DONE][:5]))
    failed_ = [o for o in ended.values() if o.get("status") == "failed"]
    check("... each succeeded, or failed with an error", all(
        isinstance(o.get("error"), str) and o["error"] for o in failed_), repr(failed_[:5]))
    if failed_:
        print(f"       e.g. failed: {failed_[0].get('error')}")
    twice = sorted((o.get("attempts"), o["id"][:8]) for o in ended.values()
                   if o.get("attempts") != 1)
    soft_check("... each taken once (attempts 1): no worker died, so no lease may have run out "
               "under a live one", not twice, f"{len(twice)} of {len(ended)}: {twice[:10]}")
    r = request("GET", "/v1/vms?limit=100", token=ut)
    check(f"the user's list has the {n} VMs", r.status == 200 and ids_of(r) == set(vms), repr(r))

    t1 = time.time()
    dops = {}
    for vm in vms:
        r = request("DELETE", f"/v1/vms/{vm}", token=ut, timeout=120)
        if accepted(r, "vm.delete", "deleting", vm):
            dops[r.json["operation"]["id"]] = vm
        else:
            soft_check(f"DELETE VM {vm[:8]} answers 202", False, repr(r))
    check(f"all {len(vms)} DELETEs answer 202", len(dops) == len(vms), f"{len(dops)} of {len(vms)}")
    ended = wait_ops_ended(dops, ut, CONCURRENCY_BOUND)
    print(f"       deletes ended {time.time() - t1:.1f} s after the first DELETE")
    check("every delete operation succeeds", len(ended) == len(dops) and all(
        o.get("status") == "succeeded" for o in ended.values()),
        repr([o for o in ended.values() if o.get("status") != "succeeded"][:5]))
    twice = sorted((o.get("attempts"), o["id"][:8]) for o in ended.values()
                   if o.get("attempts") != 1)
    soft_check("... each taken once (attempts 1)", not twice,
               f"{len(twice)} of {len(ended)}: {twice[:10]}")
    for o in ended.values():
        if o.get("status") == "succeeded" and dops[o["id"]] in cleanup_vms:
            cleanup_vms.remove(dops[o["id"]])
    r = request("GET", "/v1/vms?limit=100", token=ut)
    check("the user has no VM left", r.status == 200 and ids_of(r) == set(), repr(r))
    doms = domains()
    left = [d for d in doms or [] if d[len("stratus-"):] in set(vms)]
    check("no stratus domain of the user is left", doms is not None and not left, repr(left))
    check("no disk file of the user's VMs is left",
          not [v for v in vms if files_with(v)], repr([v for v in vms if files_with(v)][:5]))
    r = request("DELETE", f"/v1/images/{img}", token=ut, timeout=60)
    check("the user deletes its image (204)", r.status == 204, repr(r))
    cleanup_images.remove(img)


# --- (r) scale-out: two API nodes and two workers on one PostgreSQL ----------

def node_request(node, method, path, body=None, token=None, timeout=60):
    """A request that nginx hands to API node @node alone (X-Stratus-Node)."""
    return request(method, path, body, token=token, timeout=timeout,
                   headers={"X-Stratus-Node": str(node)})


def run_pids(prefix, n):
    """The pids in run/<prefix>.pid, run/<prefix>-1.pid, ... (None where unreadable)."""
    pids = []
    for i in range(n):
        name = f"{prefix}.pid" if i == 0 else f"{prefix}-{i}.pid"
        try:
            with open(os.path.join(STATE, "run", name)) as f:
                pids.append(int(f.read().strip()))
        except (OSError, ValueError):
            pids.append(None)
    return pids


def scenario_scaleout():
    n = 40
    check(f"the stack runs on PostgreSQL with 2 API nodes and 2 worker processes "
          f"(store {STORE}, {NODES} nodes, {WORKER_PROCS} workers)",
          STORE == "postgresql" and NODES == 2 and WORKER_PROCS == 2)
    apis = run_pids("api", NODES)
    workers = run_pids("worker", WORKER_PROCS)
    check("two stratus-api masters and two stratus-worker processes run",
          all(p and proc_comm(p) == "stratus-api" for p in apis)
          and all(p and proc_comm(p) == "stratus-worker" for p in workers)
          and len(set(apis)) == 2 and len(set(workers)) == 2, f"{apis} {workers}")
    for node in range(NODES):
        r = node_request(node, "GET", "/v1/health", token=False)
        check(f"node {node} answers /v1/health with 200 (database ok)", r.status == 200
              and isinstance(r.json, dict) and r.json.get("database") == "ok", repr(r))
    tag = uuid.uuid4().hex[:8]
    u = new_user("scale")
    ut = u["token"]
    quota = {"max_vms": 50, "max_vcpus": 64, "max_memory_mib": 65536, "max_disk_gib": 500}
    r = request("PATCH", f"/v1/users/{u['id']}", {"quota": quota})
    check("the admin raises the user's quota (max_vms 50)", r.status == 200, repr(r))
    for node in range(NODES):
        r = node_request(node, "GET", "/v1/users/me", token=ut)
        check(f"node {node} accepts the token node-independent (same key file)",
              r.status == 200 and r.json.get("id") == u["id"], repr(r))
    img = import_image("s" + tag, token=ut)

    t0 = time.time()
    results = at_once(n, lambda i: request(
        "POST", "/v1/vms", {"name": f"s{tag}-{i}", "image_id": img, "vcpus": 1,
                            "memory_mib": 64, "disk_gib": 1}, timeout=120, token=ut), 150)
    good = [r for r in results if isinstance(r, Resp) and accepted(r, "vm.create", "creating")]
    vms = [r.json["id"] for r in good]
    cleanup_vms.extend(vms)
    check(f"all {n} concurrent POSTs through nginx's upstream answer 202", len(good) == n,
          repr([r for r in results if not (isinstance(r, Resp) and r.status == 202)][:5]))
    ops = {r.json["operation"]["id"]: r.json["id"] for r in good}
    ended = wait_ops_ended(ops, ut, CONCURRENCY_BOUND)
    print(f"       creates ended {time.time() - t0:.1f} s after the first POST: "
          f"{status_counts(ended.values())}")
    check(f"every one of the {n} create operations succeeded",
          len(ended) == n and all(o.get("status") == "succeeded" for o in ended.values()),
          repr([o for o in ended.values() if o.get("status") != "succeeded"][:5]))
    # Which worker ran each create: the runner id ("host:pid:runner") its
    # "created: running" event records.
    by_pid, once = {}, []
    for op_id, vm in ops.items():
        _, evs = vm_events(vm, token=ut)
        done = [e for e in evs or [] if e.get("message") == "created: running"]
        data = (done[0].get("data") or {}) if len(done) == 1 else {}
        parts = str(data.get("worker_id") or "").split(":")
        pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
        if len(done) != 1 or data.get("operation_id") != op_id or pid is None:
            once.append((vm[:8], [(e.get("data") or {}) for e in done]))
        by_pid.setdefault(pid, []).append(op_id)
    print(f"       operations per worker process: "
          f"{ {k: len(v) for k, v in by_pid.items()} }")
    check("each VM has exactly one 'created: running' event, naming its operation and the "
          "runner that did it", not once, repr(once[:5]))
    check("each operation was taken once (attempts 1), by a runner of one of the two workers",
          all(o.get("attempts") == 1 for o in ended.values()) and set(by_pid) <= set(workers),
          repr([(o["id"][:8], o.get("attempts")) for o in ended.values()
                if o.get("attempts") != 1][:5]) + f" pids {list(by_pid)} vs {workers}")
    check("both worker processes ran operations", len(set(by_pid) & set(workers)) == 2,
          repr(list(by_pid)))
    lists = []
    for node in range(NODES):
        r = node_request(node, "GET", "/v1/vms?limit=100", token=ut)
        items = (r.json or {}).get("items", []) if r.status == 200 else None
        lists.append(None if items is None else
                     [(v.get("id"), v.get("name"), v.get("status")) for v in items])
    check(f"the listing is identical through either node ({n} VMs, all running)",
          lists[0] is not None and lists[0] == lists[1] and len(lists[0]) == n
          and {v[0] for v in lists[0]} == set(vms)
          and all(v[2] == "running" for v in lists[0]), repr([l and l[:3] for l in lists]))
    for node in range(NODES):
        vm = vms[node % len(vms)] if vms else ""
        r = node_request(node, "GET", f"/v1/vms/{vm}", token=ut)
        check(f"node {node} reads VM {vm[:8]} as running", r.status == 200
              and r.json.get("status") == "running", repr(r))

    t1 = time.time()
    dops = {}
    for i, vm in enumerate(vms):
        r = node_request(i % NODES, "DELETE", f"/v1/vms/{vm}", token=ut, timeout=120)
        if accepted(r, "vm.delete", "deleting", vm):
            dops[r.json["operation"]["id"]] = vm
    check(f"all {len(vms)} DELETEs, spread over both nodes, answer 202", len(dops) == len(vms),
          f"{len(dops)} of {len(vms)}")
    ended = wait_ops_ended(dops, ut, CONCURRENCY_BOUND)
    print(f"       deletes ended {time.time() - t1:.1f} s after the first DELETE")
    check("every delete operation succeeded, each taken once", len(ended) == len(dops) and all(
        o.get("status") == "succeeded" and o.get("attempts") == 1 for o in ended.values()),
        repr([o for o in ended.values() if o.get("status") != "succeeded"
              or o.get("attempts") != 1][:5]))
    for o in ended.values():
        if o.get("status") == "succeeded" and dops[o["id"]] in cleanup_vms:
            cleanup_vms.remove(dops[o["id"]])
    for node in range(NODES):
        r = node_request(node, "GET", "/v1/vms?limit=100", token=ut)
        check(f"node {node} lists no VM of the user any more", r.status == 200
              and ids_of(r) == set(), repr(r))
    doms = domains()
    left = [d for d in doms or [] if d[len("stratus-"):] in set(vms)]
    check("no domain of the user's VMs is left", doms is not None and not left, repr(left))
    check("no disk file of the user's VMs is left",
          not [v for v in vms if files_with(v)], repr([v for v in vms if files_with(v)][:5]))
    r = request("DELETE", f"/v1/images/{img}", token=ut, timeout=60)
    check("the user deletes its image (204)", r.status == 204, repr(r))
    cleanup_images.remove(img)


# --- (s) the database goes away: 503, then back without a restart ------------

PG_DIR = os.environ.get("E2E_PG_DIR", "")
PG_PORT = os.environ.get("E2E_PG_PORT", "")


def pg_ctl(verb):
    p = subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), verb, PG_DIR]
                       + ([PG_PORT] if verb == "start" else []),
                       capture_output=True, text=True, timeout=120)
    return p.returncode, (p.stdout + p.stderr).strip()


def scenario_dbdown():
    check("the stack runs on PostgreSQL, whose server the test may stop",
          STORE == "postgresql" and PG_DIR and PG_PORT, f"{STORE} {PG_DIR!r}")
    tag = uuid.uuid4().hex[:8]
    img = import_image("d" + tag)
    workers = len(api_workers()[1]) or 4
    for _ in range(workers * 3):  # every API worker has used its connection
        r = request("GET", "/v1/vms?limit=5")
        check("GET /v1/vms answers 200 before", r.status == 200, repr(r))
    rc, out = pg_ctl("stop")
    check("the PostgreSQL server stops (pg_ctl stop -m fast)", rc == 0, out)
    try:
        seen = []
        for i in range(workers * 3):
            r = request("GET", "/v1/vms?limit=5" if i % 2 == 0 else "/v1/health",
                        timeout=60)
            seen.append(r)
        bad = [r for r in seen if not (r.status == 503 and is_problem(r)
                                       and r.header("Retry-After"))]
        check(f"with the database down, {len(seen)} requests answer 503 problems with "
              f"Retry-After (never 500, none hangs)", not bad, repr(bad[:3]))
        h = [r for r in seen if (r.json or {}).get("database") == "error"]
        check("... /v1/health names the database as the part that is down", h, repr(seen[1]))
    finally:
        rc, out = pg_ctl("start")
        check("the PostgreSQL server starts again", rc == 0, out)
    after = [request("GET", "/v1/vms?limit=5") for _ in range(workers * 3)]
    check(f"every API worker answers 200 again at once ({len(after)} GETs: the lost "
          f"connection is re-established and the statement retried once)",
          all(r.status == 200 for r in after), repr([r for r in after if r.status != 200][:3]))
    vm = create_vm({"name": f"d{tag}", "image_id": img, "vcpus": 1, "memory_mib": 64,
                    "disk_gib": 1}, what="POST /v1/vms after the outage")
    delete_vm(vm["id"])
    r = request("DELETE", f"/v1/images/{img}", timeout=60)
    check("the image is deleted (204)", r.status == 204, repr(r))
    cleanup_images.remove(img)


# --- (t) revisions: ETag on single resources, If-Match on PATCH, DELETE, actions ---

# If-Match values that are no entity tag at all.
BAD_IF_MATCH = ("nonsense", '"1')


def etag_check(what, r, rev=None):
    """@r answers 200 with ETag: "<the body's revision>" (and that revision is @rev)."""
    check(f"{what} answers 200 with ETag \"<revision>\" of the body"
          + (f" (revision {rev})" if rev is not None else ""),
          r.status == 200 and has_etag(r) and (rev is None or revision(r.json) == rev),
          f"ETag {r.header('ETag')!r}: {r!r}")


def vm_unchanged(vm_id, before, what, token=None):
    """The VM is as @before (a VM document) says and has no operation under way."""
    g = request("GET", f"/v1/vms/{vm_id}", token=token)
    keys = ("name", "status", "vcpus", "memory_mib", "revision")
    check(f"... {what}: the VM is unchanged ({', '.join(keys)})", g.status == 200
          and all(g.json.get(k) == before.get(k) for k in keys), f"before {before!r}; now {g!r}")
    busy = [i for st in ("queued", "running") for i in op_ids(request(
        "GET", f"/v1/operations?target_id={vm_id}&status={st}", token=token)) or []]
    check("... and no operation on it is queued or running", not busy, repr(busy))


def refused_if_match(what, vm_id, stale, send):
    """@send(headers) with the stale ETag @stale answers 412, with malformed
    If-Match values 400; none changes the VM."""
    g = request("GET", f"/v1/vms/{vm_id}")
    check("GET the VM answers 200", g.status == 200, repr(g))
    r = send({"If-Match": stale})
    check(f"{what} with If-Match: {stale} (stale; the VM is at {g.header('ETag')}) answers 412, "
          f"a precondition_failed problem", precondition_failed(r), repr(r))
    for bad in BAD_IF_MATCH:
        r = send({"If-Match": bad})
        check(f"{what} with If-Match: {bad} (malformed) answers 400 (problem)",
              r.status == 400 and full_problem(r), repr(r))
    vm_unchanged(vm_id, g.json, f"after the refused {what}s")


def scenario_ifmatch():
    tag = uuid.uuid4().hex[:8]
    img = import_image("e" + tag)
    etag_check("GET /v1/images/{id}", request("GET", f"/v1/images/{img}"))
    r = request("POST", "/v1/flavors", {"name": f"etag-{tag}", "vcpus": 1, "memory_mib": 128,
                                         "disk_gib": 1})
    check("POST /v1/flavors answers 201 with revision 1", r.status == 201
          and revision(r.json) == 1, repr(r))
    fid = r.json["id"]
    try:
        etag_check("GET /v1/flavors/{id}", request("GET", f"/v1/flavors/{fid}"), 1)
    finally:
        r = request("DELETE", f"/v1/flavors/{fid}")
        check("the flavor is deleted (204)", r.status == 204, repr(r))
    u = new_user("etag")
    etag_check("GET /v1/users/{id}", request("GET", f"/v1/users/{u['id']}"))
    etag_check("GET /v1/users/me", request("GET", "/v1/users/me", token=u["token"]))

    vm = create_vm({"name": f"etag-{tag}", "image_id": img, "vcpus": 1, "memory_mib": 128,
                    "disk_gib": 1}, etag=True)
    vm_id = vm["id"]
    r = request("GET", f"/v1/operations?target_id={vm_id}")
    check("its create operation is listed", op_ids(r) is not None and len(op_ids(r)) == 1,
          repr(r))
    etag_check("GET /v1/operations/{id}", get_op(op_ids(r)[0]))
    g = request("GET", f"/v1/vms/{vm_id}")
    etag_check("GET /v1/vms/{id}", g)
    first, rev0 = g.header("ETag"), revision(g.json)

    # PATCH (a rename): the current ETag, a stale one, malformed ones, *.
    r = request("PATCH", f"/v1/vms/{vm_id}", {"name": f"etag1-{tag}"},
                headers={"If-Match": first})
    check(f"PATCH rename with If-Match: {first} (current) answers 200: the new name, "
          f"revision {rev0 + 1}, ETag \"{rev0 + 1}\"", r.status == 200
          and r.json.get("name") == f"etag1-{tag}" and revision(r.json) == rev0 + 1
          and has_etag(r), f"ETag {r.header('ETag')!r}: {r!r}")
    second = r.header("ETag")
    refused_if_match("PATCH rename", vm_id, first, lambda h: request(
        "PATCH", f"/v1/vms/{vm_id}", {"name": f"etag-stale-{tag}"}, headers=h))
    r = request("PATCH", f"/v1/vms/{vm_id}", {"name": f"etag2-{tag}"}, headers={"If-Match": "*"})
    check(f"PATCH rename with If-Match: * answers 200: the new name, revision {rev0 + 2}",
          r.status == 200 and r.json.get("name") == f"etag2-{tag}"
          and revision(r.json) == rev0 + 2 and has_etag(r), repr(r))
    etag_check("GET the VM after the renames", request("GET", f"/v1/vms/{vm_id}"), rev0 + 2)

    # An action: stale and malformed refused; the current ETag with ?wait=30
    # answers 200 once the operation has ended; * goes through too.
    refused_if_match("POST pause", vm_id, second,
                     lambda h: post_action(vm_id, "pause", headers=h))
    g = request("GET", f"/v1/vms/{vm_id}")
    r = post_action(vm_id, "pause", headers={"If-Match": g.header("ETag")}, wait=30)
    op = r.json.get("operation") if isinstance(r.json, dict) else None
    check(f"POST pause?wait=30 with If-Match: {g.header('ETag')} (current) answers 200 with "
          f"the VM paused, its ended vm.pause operation (succeeded) and ETag its revision",
          r.status == 200 and r.json.get("status") == "paused" and is_op(op, "vm.pause", vm_id)
          and op["status"] == "succeeded" and has_etag(r)
          and revision(r.json) > revision(g.json), repr(r))
    check("... libvirt says paused", virsh("domstate", f"stratus-{vm_id}")[1].strip() == "paused")
    finish_op(submit_action(vm_id, "resume", headers={"If-Match": "*"}, etag=True))
    etag_check("GET the VM after resume", request("GET", f"/v1/vms/{vm_id}"))

    # A resize answers 202 with the VM's ETag too.
    action(vm_id, "force-stop")
    finish_op(submit_resize(vm_id, 2, 192, etag=True))
    live, defined = domain_sizes(vm_id)
    check("... the domain is redefined with 2 vCPUs and 192 MiB", live == defined == (2, 192),
          f"dominfo {live}, dumpxml {defined}")

    # DELETE: stale and malformed refused; the current ETag goes through.
    refused_if_match("DELETE", vm_id, second, lambda h: request(
        "DELETE", f"/v1/vms/{vm_id}", headers=h, timeout=120))
    g = request("GET", f"/v1/vms/{vm_id}")
    delete_vm(vm_id, headers={"If-Match": g.header("ETag")}, etag=True,
              what=f"DELETE with If-Match: {g.header('ETag')} (current)")
    r = request("DELETE", f"/v1/images/{img}", timeout=60)
    check("the image is deleted (204)", r.status == 204, repr(r))
    cleanup_images.remove(img)


# --- (u) races on one VM: resize, start, stop and rename at once ---------------

RACE_ROUNDS = 50
RACE_QUOTA = {"max_vms": 2, "max_vcpus": 4, "max_memory_mib": 1024, "max_disk_gib": 10}
RACE_FIT = ((2, 192), (1, 128))         # within RACE_QUOTA
RACE_OVER = ((6, 192), (1, 2048))       # past max_vcpus, past max_memory_mib


def over_quota(r):
    j = r.json if isinstance(r.json, dict) else {}
    return (r.status == 403 and full_problem(r) and j["type"].endswith("quota_exceeded")
            and j.get("quota") in ("max_vcpus", "max_memory_mib"))


def conflict(r):
    return r.status == 409 and full_problem(r)


def named_as(r, name):
    return isinstance(r.json, dict) and r.json.get("name") == name


def fit_other_than(sizes):
    return RACE_FIT[0] if sizes != RACE_FIT[0] else RACE_FIT[1]


def race_round(label, vm_id, token, reqs, counts):
    """Send @reqs ({what: (method, path under the VM, body, {status: test})})
    at once.  Each answer must have one of its statuses and pass that status's
    test; a 409 must name the VM (and, if it names an operation, one accepted
    in this round); every operation accepted must succeed.  Counts (what,
    status) in @counts.  ({what: Resp}, {what: ended operation})."""
    names = list(reqs)

    def send(i):
        method, sub, body, _ = reqs[names[i]]
        return request(method, f"/v1/vms/{vm_id}{sub}", body, token=token, timeout=120)

    out = dict(zip(names, at_once(len(names), send, 150)))
    for what, r in out.items():
        st = r.status if isinstance(r, Resp) else type(r).__name__
        counts[(what, st)] = counts.get((what, st), 0) + 1
        tests = reqs[what][3]
        check(f"{label}: {what} answers one of {sorted(tests)} as documented",
              isinstance(r, Resp) and r.status in tests and tests[r.status](r), repr(r),
              quiet=True)
    ops = {what: r.json["operation"] for what, r in out.items() if r.status == 202}
    for what, r in out.items():
        if r.status != 409:
            continue
        d = str(r.json.get("detail"))
        check(f"{label}: the 409 to {what} names the VM (and the operation in progress)",
              vm_id in d and ("operation" not in d or any(o["id"] in d for o in ops.values())),
              d, quiet=True)
    return out, {what: finish_op(op, token=token, quiet=True) for what, op in ops.items()}


def race_outcome(label, vm_id, token, want):
    """After a round: the row has @want (status, name, sizes), libvirt runs
    the domain in that state with the row's sizes, the owner's usage is the
    row's and within the quota."""
    g = request("GET", f"/v1/vms/{vm_id}", token=token)
    j = g.json if g.status == 200 and isinstance(g.json, dict) else {}
    got = {"status": j.get("status"), "name": j.get("name"), "sizes": vm_sizes(j)}
    check(f"{label}: the VM is {want['status']}, named as the last accepted rename, with the "
          f"sizes of the last accepted resize", got == want, f"want {want}; got {got}",
          quiet=True)
    live, defined = domain_sizes(vm_id)
    check(f"{label}: libvirt's vCPUs and max memory (dominfo, dumpxml) are the row's",
          live == defined == want["sizes"], f"dominfo {live}, dumpxml {defined}, row "
          f"{want['sizes']}", quiet=True)
    rc, out = virsh("domstate", f"stratus-{vm_id}")
    check(f"{label}: libvirt's domain state is {DOMSTATE[want['status']]}",
          rc == 0 and out.strip() == DOMSTATE[want["status"]], out.strip(), quiet=True)
    q = request("GET", "/v1/users/me/quota", token=token)
    usage = (q.json or {}).get("usage") if q.status == 200 else None
    check(f"{label}: the owner's usage is the VM's sizes, within the quota",
          usage == {"vms": 1, "vcpus": want["sizes"][0], "memory_mib": want["sizes"][1],
                    "disk_gib": 1} and usage["vcpus"] <= RACE_QUOTA["max_vcpus"]
          and usage["memory_mib"] <= RACE_QUOTA["max_memory_mib"], repr(q), quiet=True)


def race_resize_start(vm_id, token, tag, i, counts):
    """Round @i of race 1: on the stopped VM, a resize (fitting the quota or
    not), a start and a rename at once."""
    label = f"race 1 round {i + 1}"
    g = bring_to(vm_id, "stopped", token=token)
    sizes = vm_sizes(g.json)
    ask = RACE_OVER[(i // 3) % 2] if i % 3 == 2 else fit_other_than(sizes)
    name = f"r1-{tag}-{i}"
    out, _ = race_round(label, vm_id, token, {
        "resize": ("PATCH", "", {"vcpus": ask[0], "memory_mib": ask[1]}, {
            202: lambda r: (accepted(r, "vm.resize", "stopped", vm_id)
                            and vm_sizes(r.json) == ask and ask in RACE_FIT),
            403: lambda r: over_quota(r) and ask in RACE_OVER, 409: conflict}),
        "start": ("POST", "/start", None, {
            202: lambda r: accepted(r, "vm.start", ("stopped", "running"), vm_id),
            409: conflict}),
        "rename": ("PATCH", "", {"name": name}, {
            200: lambda r: named_as(r, name), 409: conflict})}, counts)
    race_outcome(label, vm_id, token, {
        "status": "running" if out["start"].status == 202 else "stopped",
        "name": name if out["rename"].status == 200 else g.json.get("name"),
        "sizes": ask if out["resize"].status == 202 else sizes})


def race_stop_rename(vm_id, token, tag, i, counts):
    """Round @i of race 2: on the running VM, a stop (a force-stop, but
    every tenth round the ACPI stop), a rename and a resize at once."""
    label = f"race 2 round {i + 1}"
    g = bring_to(vm_id, "running", token=token)
    sizes = vm_sizes(g.json)
    ask = fit_other_than(sizes)
    name = f"r2-{tag}-{i}"
    stop = "stop" if i % 10 == 9 else "force-stop"
    out, ended = race_round(label, vm_id, token, {
        stop: ("POST", f"/{stop}", None, {
            202: lambda r: accepted(r, "vm." + stop, ("running", "stopped"), vm_id),
            409: conflict}),
        "rename": ("PATCH", "", {"name": name}, {
            200: lambda r: named_as(r, name), 409: conflict}),
        # Only once the VM has stopped may a resize be taken.
        "resize": ("PATCH", "", {"vcpus": ask[0], "memory_mib": ask[1]}, {
            202: lambda r: (accepted(r, "vm.resize", "stopped", vm_id)
                            and vm_sizes(r.json) == ask), 409: conflict})},
        counts)
    if "resize" in ended:
        stopped_at = parse_time((ended.get(stop) or {}).get("finished_at"))
        asked_at = parse_time(ended["resize"].get("created_at"))
        check(f"{label}: the resize was taken only after the {stop} had ended",
              stopped_at is not None and asked_at is not None and stopped_at <= asked_at,
              f"{stop} {ended.get(stop)}; resize {ended['resize']}", quiet=True)
    race_outcome(label, vm_id, token, {
        "status": "stopped" if out[stop].status == 202 else "running",
        "name": name if out["rename"].status == 200 else g.json.get("name"),
        "sizes": ask if out["resize"].status == 202 else sizes})


def race_stage(what, run_round, held):
    """Run @run_round(i, counts) for RACE_ROUNDS rounds (a failed check ends
    the stage); print how long they took, what was answered and what @held:
    the counts of (request, status)."""
    counts = {}
    t0 = time.time()
    for i in range(RACE_ROUNDS):
        run_round(i, counts)
    shown = ", ".join(f"{w} {st}: {n}" for (w, st), n in sorted(counts.items(), key=str))
    print(f"       {what}: {RACE_ROUNDS} rounds in {time.time() - t0:.1f} s; {shown}")
    print(f"       in all {RACE_ROUNDS} rounds {held}")
    return counts


def scenario_races():
    tag = uuid.uuid4().hex[:8]
    u = new_user("races")
    ut = u["token"]
    r = request("PATCH", f"/v1/users/{u['id']}", {"quota": RACE_QUOTA})
    check(f"the admin gives the user a small quota ({RACE_QUOTA['max_vcpus']} vCPUs, "
          f"{RACE_QUOTA['max_memory_mib']} MiB)", r.status == 200
          and r.json.get("quota") == RACE_QUOTA, repr(r))
    img = import_image("x" + tag, token=ut)
    vm_id = create_vm({"name": f"race-{tag}", "image_id": img, "vcpus": 1, "memory_mib": 128,
                       "disk_gib": 1}, token=ut)["id"]

    c1 = race_stage("race 1 (resize + start + rename on a stopped VM)",
                    lambda i, c: race_resize_start(vm_id, ut, tag, i, c),
                    "every answer was documented, every operation succeeded, libvirt matched "
                    "the row, no rename was lost and the quota held")
    check("race 1: the resize was taken in some rounds and refused over the quota in some",
          c1.get(("resize", 202), 0) > 0 and c1.get(("resize", 403), 0) > 0, repr(c1))
    c2 = race_stage("race 2 (stop + rename + resize on a running VM)",
                    lambda i, c: race_stop_rename(vm_id, ut, tag, i, c),
                    "every answer was documented, no resize of the running VM was taken, "
                    "libvirt matched the row and no rename was lost")
    check("race 2: the resize was refused (409) in some rounds",
          c2.get(("resize", 409), 0) > 0, repr(c2))

    delete_vm(vm_id, token=ut)
    r = request("DELETE", f"/v1/images/{img}", token=ut, timeout=60)
    check("the user deletes its image (204)", r.status == 204, repr(r))
    cleanup_images.remove(img)


# --- (v) a worker dies after each step of an action or a resize -----------------

# Every (kind, step) of ACTION_STEPS, in an order that needs few extra actions
# in between: each case leaves the VM where the next one starts.
ACTION_CRASH_ORDER = (
    ("vm.pause", "suspend"), ("vm.resume", "resume"), ("vm.pause", "record"),
    ("vm.resume", "record"), ("vm.reboot", "reboot"), ("vm.reboot", "record"),
    ("vm.stop", "shutdown"), ("vm.resize", "define"), ("vm.start", "define"),
    ("vm.stop", "wait"), ("vm.resize", "record"), ("vm.start", "start"),
    ("vm.force-stop", "destroy"), ("vm.start", "record"), ("vm.stop", "destroy"),
    ("vm.stop", "record"), ("vm.force-stop", "record"))


def action_crash_case(vm_id, kind, step):
    """One crash case on the VM: it is brought to where @kind applies, a
    crash worker dies after @step, a normal worker finishes the operation;
    then the VM's status, domain state and sizes must be the outcome's."""
    name = kind[len("vm."):]
    if kind == "vm.resize":
        g = bring_to(vm_id, "stopped")
        want, sizes = "stopped", fit_other_than(vm_sizes(g.json))
    else:
        g = bring_to(vm_id, ACTION_FROM[name][0])
        want, sizes = ACTION_RESULT[name], vm_sizes(g.json)

    def submit():
        if kind == "vm.resize":
            return submit_resize(vm_id, *sizes, etag=True)
        return submit_action(vm_id, name, etag=True)

    _, evs = vm_events(vm_id)
    seen = {e.get("id") for e in evs or []}
    crash_case(kind, step, submit)
    g = request("GET", f"/v1/vms/{vm_id}")
    check(f"{kind}:{step}: the VM is {want} with {sizes[0]} vCPUs and {sizes[1]} MiB",
          g.status == 200 and g.json.get("status") == want and vm_sizes(g.json) == sizes,
          repr(g))
    rc, out = virsh("domstate", f"stratus-{vm_id}")
    check(f"... libvirt's domain state is {DOMSTATE[want]}", rc == 0
          and out.strip() == DOMSTATE[want], out.strip())
    live, defined = domain_sizes(vm_id)
    check("... and its vCPUs and max memory are the row's", live == defined == sizes,
          f"dominfo {live}, dumpxml {defined}")
    if kind == "vm.resize":
        return
    message = f"{name}: now {want}"
    _, evs = vm_events(vm_id)
    new = [e for e in evs or [] if e.get("id") not in seen and e.get("type") == "STATE_CHANGE"
           and e.get("message") == message]
    check(f"... a STATE_CHANGE event '{message}' was recorded", new, repr(evs))
    soft_check("... once, though a worker died on the way", len(new) == 1, repr(new))


def scenario_action_crash():
    """Each case runs on (a failed case does not end the scenario; it still counts)."""
    check("the cases cover every step of every action's and a resize's operation",
          sorted(ACTION_CRASH_ORDER) == sorted((k, s) for k, steps in ACTION_STEPS.items()
                                               for s in steps), repr(ACTION_CRASH_ORDER))
    tag = uuid.uuid4().hex[:8]
    img = import_image("k" + tag)
    vm_id = create_vm({"name": f"acrash-{tag}", "image_id": img, "vcpus": 1,
                       "memory_mib": 128, "disk_gib": 1})["id"]
    broken = []
    t0 = time.time()
    for kind, step in ACTION_CRASH_ORDER:
        try:
            action_crash_case(vm_id, kind, step)
        except Fail:
            broken.append(f"{kind}:{step}")
    print(f"       {len(ACTION_CRASH_ORDER)} crash cases in {time.time() - t0:.1f} s; "
          f"failed: {', '.join(broken) or 'none'}")
    no_orphan_of(vm_id)
    delete_vm(vm_id)
    r = request("DELETE", f"/v1/images/{img}", timeout=60)
    check("the image is deleted (204)", r.status == 204, repr(r))
    cleanup_images.remove(img)


# --- (w) no client occupies the API: bounded waits --------------------------------

QUICK_S = 1.0   # "at once"


def health_probes(stop, out):
    """GET /v1/health about every 100 ms until @stop is set; (start, seconds,
    Resp or exception) appended to @out."""
    for _ in range(6000):
        if stop.is_set():
            return
        out.append(timed_get("/v1/health", timeout=30))
        stop.wait(0.1)


def show_timed(x, t_ref):
    t0, secs, r = x
    what = (f"{r.status}{' RA=' + r.header('Retry-After') if r.header('Retry-After') else ''}"
            f" {(r.json or {}).get('status') if isinstance(r.json, dict) else ''}"
            if isinstance(r, Resp) else repr(r))
    return f"at {t0 - t_ref:+.1f}s took {secs:.1f}s: {what}"


def scenario_waitbound():
    n = 20
    tag = uuid.uuid4().hex[:8]
    wait_max = int(api_setting("wait_max_s", "30"))
    workers = int(api_setting("workers", "4"))
    max_waiting = int(api_setting("max_waiting_requests", str(max(1, workers // 2))))
    stop_timeout = float(api_setting("stop_timeout_s", "5"))
    print(f"       {workers} API workers, max_waiting_requests {max_waiting}, wait_max_s "
          f"{wait_max}, stop_timeout_s {stop_timeout:g}")
    img = import_image("w" + tag, guest=GUEST_NOACPI)
    body = {"image_id": img, "vcpus": 1, "memory_mib": 128, "disk_gib": 1}
    vm_id = create_vm(dict(body, name=f"wb-{tag}"))["id"]
    other = create_vm(dict(body, name=f"wb-other-{tag}"))["id"]
    line = wait_new_boot(vm_id, "")
    check("the guest boots and says it runs no acpid (it ignores the power button)",
          line is not None and "acpid=off" in line, repr(line))
    print(f"       {line}")

    probes, late = [], {}
    stop = threading.Event()
    prober = threading.Thread(target=health_probes, args=(stop, probes), daemon=True)

    def late_action():   # once the waiting places are taken
        time.sleep(0.5)
        late["x"] = timed("POST", f"/v1/vms/{other}/pause?wait={wait_max}",
                          timeout=wait_max + 60)

    prober.start()
    t_ref = time.time()
    sop = submit_action(vm_id, "stop")
    lt = threading.Thread(target=late_action, daemon=True)
    lt.start()
    results = at_once(n, lambda i: timed("GET", f"/v1/operations/{sop['id']}?wait=30",
                                         timeout=wait_max + 60), wait_max + 90)
    lt.join(wait_max + 90)
    stop.set()
    prober.join(30)
    shown = {}
    for x in results:
        k = show_timed(x, t_ref) if x else "still waiting"
        shown[k] = shown.get(k, 0) + 1
    print(f"       {n} GET ?wait=30: " + "; ".join(f"{k} (x{c})" for k, c in shown.items()))
    lx = late.get("x")
    print(f"       late POST pause?wait={wait_max}: {show_timed(lx, t_ref) if lx else None}")

    answered = [x for x in results if isinstance(x, tuple) and isinstance(x[2], Resp)
                and x[2].status == 200 and is_op(x[2].json, "vm.stop", vm_id)
                and x[2].json["id"] == sop["id"]]
    check(f"all {n} GET /v1/operations/{{stop}}?wait=30 answer 200 with the operation",
          len(answered) == n, repr([x for x in results if x not in answered][:5]))
    waited = [x for x in answered if x[1] > QUICK_S]
    quick = [x for x in answered if x[1] <= QUICK_S]
    check(f"at most max_waiting_requests ({max_waiting}), and at least one, waited longer than "
          f"{QUICK_S:g} s", 1 <= len(waited) <= max_waiting, f"{len(waited)} waited")
    check("... those answered once the stop had ended (succeeded)",
          all(x[2].json["status"] == "succeeded" for x in waited), repr([x[2] for x in waited]))
    check(f"the other {len(quick)} answered at once with Retry-After and the operation as it "
          f"was (queued or running)", all(retry_after(x[2]) is not None
                                          and x[2].json["status"] in ("queued", "running")
                                          for x in quick),
          repr([show_timed(x, t_ref) for x in quick]))
    check(f"while the waiting places were taken, POST pause?wait={wait_max} answered at once: "
          f"202 with its vm.pause operation and Retry-After",
          lx is not None and isinstance(lx[2], Resp) and lx[1] <= QUICK_S
          and accepted(lx[2], "vm.pause", ("running", "paused"), other)
          and retry_after(lx[2]) is not None, repr(lx))
    everything = [x for x in results + probes + [lx] if x]
    check(f"no request was held longer than wait_max_s + 2 s ({wait_max + 2} s)",
          len(everything) == len(results) + len(probes) + 1
          and all(x[1] < wait_max + 2 for x in everything),
          repr([show_timed(x, t_ref) for x in everything if x[1] >= wait_max + 2][:5]))
    slow = [x for x in probes if not (isinstance(x[2], Resp) and x[2].status == 200
                                      and x[1] < QUICK_S)]
    print(f"       {len(probes)} health probes, slowest "
          f"{max((x[1] for x in probes), default=0):.2f} s")
    check(f"every GET /v1/health meanwhile answered 200 within {QUICK_S:g} s",
          len(probes) >= 10 and not slow, repr([show_timed(x, t_ref) for x in slow][:5]))

    o = finish_op(sop)
    took = (parse_time(o.get("finished_at")) or 0) - (parse_time(o.get("started_at")) or 0)
    print(f"       the stop ran {took:.1f} s")
    check(f"... the guest ignored the power button: the stop took stop_timeout_s "
          f"({stop_timeout:g} s) and pulled the plug", took >= stop_timeout - 0.5
          and "STRATUS-GUEST-POWEROFF" not in console_log(vm_id), f"{took:.1f} s")
    g = request("GET", f"/v1/vms/{vm_id}")
    check("the VM is stopped", g.status == 200 and g.json.get("status") == "stopped", repr(g))
    rc, out = virsh("domstate", f"stratus-{vm_id}")
    check("... libvirt says shut off", rc == 0 and out.strip() == "shut off", out.strip())
    if lx and isinstance(lx[2], Resp) and lx[2].status == 202:
        finish_op(lx[2].json["operation"])
    for v in (vm_id, other):
        delete_vm(v)
    r = request("DELETE", f"/v1/images/{img}", timeout=60)
    check("the image is deleted (204)", r.status == 204, repr(r))
    cleanup_images.remove(img)


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
    "operations": scenario_operations,
    "crash": scenario_crash,
    "reconcile": scenario_reconcile,
    "idempotency": scenario_idempotency,
    "poweroff": scenario_poweroff,
    "concurrency": scenario_concurrency,
    "ifmatch": scenario_ifmatch,
    "races": scenario_races,
    "action_crash": scenario_action_crash,
    "waitbound": scenario_waitbound,
    "scaleout": scenario_scaleout,
    "dbdown": scenario_dbdown,
}
# Run only when named: it needs a stack of two API nodes and two workers on PostgreSQL.
ON_REQUEST = ("scaleout",)
# Part of the default run on PostgreSQL only: it stops the database server.
POSTGRES_ONLY = ("dbdown",)
# The longest scenarios run on one store each, to keep `make test` within its
# time budget; the service code they drive is the same on both, and the
# compare-and-set they lean on is raced on both stores by the contract suite.
# The races run where concurrent writers are truly concurrent.
ONE_STORE = {"races": "postgresql", "action_crash": "sqlite"}


def cleanup():
    if cleanup_vms:
        print(f"--- cleanup: {len(cleanup_vms)} VMs left by failed scenarios", flush=True)
    try:
        start_stack_worker()  # a scenario that failed may have left it stopped
    except Exception as e:  # noqa: BLE001
        soft_check("the stack's worker runs for the cleanup", False, repr(e))
    deadline = time.time() + 300
    pending = list(cleanup_vms)
    for _ in range(3):  # a VM whose create is still under way answers 409: wait, retry
        ops, retry = [], []
        for vm_id in pending:
            try:
                r = request("DELETE", f"/v1/vms/{vm_id}", timeout=120)
                if r.status == 202 and isinstance(r.json, dict):
                    ops.append(r.json["operation"]["id"])
                elif r.status == 409:
                    retry.append(vm_id)
                    for st in ("queued", "running"):
                        o = request("GET", f"/v1/operations?target_id={vm_id}&status={st}")
                        ops += op_ids(o) or []
            except Exception:  # noqa: BLE001
                pass
        for op_id in ops:
            try:
                wait_op(op_id, bound=max(1, deadline - time.time()))
            except Exception:  # noqa: BLE001
                pass
        pending = retry
        if not pending or time.time() >= deadline:
            break
    for image_id in cleanup_images:
        try:
            r = request("DELETE", f"/v1/images/{image_id}", timeout=60)
            soft_check(f"DELETE image {image_id[:8]} answers 204", r.status == 204, repr(r))
        except Exception as e:  # noqa: BLE001
            soft_check("DELETE image", False, repr(e))


def main():
    global failed
    names = sys.argv[1:] or [k for k in SCENARIOS if k not in ON_REQUEST
                             and (STORE == "postgresql" or k not in POSTGRES_ONLY)
                             and ONE_STORE.get(k, STORE) == STORE]
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
