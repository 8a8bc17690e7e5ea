#!/usr/bin/env python3
"""Durable operations through nginx, against a running bench stack.

  bench_http_ops.py URL TOKEN IMAGE_ID CONSOLE_DIR [N]

Prints the latency of the 202 that POST /v1/vms answers (p50, p99 over N
sequential creates, default 30), then the time from POST to `running` and
to the guest's boot marker on its serial console for one tiny guest, and
deletes every VM it made.  Figures only: nothing here fails on timing.
Standard library only.
"""

import http.client
import json
import os
import sys
import time
import urllib.parse

MARKER = "STRATUS-GUEST-BOOTED"


def call(url, token, method, path, body=None, timeout=120):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    headers = {"Authorization": "Bearer " + token}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)
    finally:
        conn.close()


def wait_op(url, token, op_id, bound=240):
    deadline = time.time() + bound
    while time.time() < deadline:
        status, op = call(url, token, "GET", f"/v1/operations/{op_id}?wait=30", timeout=60)
        if status == 200 and op["status"] in ("succeeded", "failed"):
            return op
    return None


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def main():
    url, token, image, console = sys.argv[1:5]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 30
    spec = {"image_id": image, "vcpus": 1, "memory_mib": 128, "disk_gib": 1}
    status, me = call(url, token, "GET", "/v1/users/me")
    quota = {"max_vms": n + 10, "max_vcpus": n + 10, "max_memory_mib": 128 * (n + 10)}
    status, _ = call(url, token, "PATCH", f"/v1/users/{me['id']}", {"quota": quota})
    if status != 200:
        print(f"cannot raise the quota: {status}")
        return 1
    made, ops, lat = [], [], []
    for i in range(n):
        t0 = time.perf_counter()
        status, doc = call(url, token, "POST", "/v1/vms", dict(spec, name=f"bench-op-{i}"))
        lat.append((time.perf_counter() - t0) * 1000)
        if status != 202:
            print(f"POST /v1/vms answered {status}: {doc}")
            break
        made.append(doc["id"])
        ops.append(doc["operation"]["id"])
    if lat:
        print(f"POST /v1/vms 202, {len(lat)} sequential: p50 {pct(lat, 50):.1f} ms, "
              f"p99 {pct(lat, 99):.1f} ms")
    for op in ops:
        wait_op(url, token, op)
    # The timed guest boots alone: the others go first.
    deletes = []
    for vm in made:
        status, doc = call(url, token, "DELETE", f"/v1/vms/{vm}")
        if status == 202:
            deletes.append(doc["operation"]["id"])
    for op in deletes:
        wait_op(url, token, op)
    made = []

    t0 = time.time()
    status, doc = call(url, token, "POST", "/v1/vms", dict(spec, name="bench-op-timed"))
    if status == 202:
        made.append(doc["id"])
        op = wait_op(url, token, doc["operation"]["id"])
        running = time.time() - t0
        log = os.path.join(console, doc["id"] + ".log")
        booted = None
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                with open(log, "rb") as f:
                    if MARKER.encode() in f.read():
                        booted = time.time() - t0
                        break
            except OSError:
                pass
            time.sleep(0.2)
        print(f"create to running (tiny guest): {running:.2f} s (operation {op and op['status']}); "
              f"to its boot marker: {'%.2f s' % booted if booted else 'not seen in 180 s'}")

    deletes = []
    for vm in made:
        status, doc = call(url, token, "DELETE", f"/v1/vms/{vm}")
        if status == 202:
            deletes.append(doc["operation"]["id"])
    for op in deletes:
        wait_op(url, token, op)
    call(url, token, "PATCH", f"/v1/users/{me['id']}",
         {"quota": {"max_vms": None, "max_vcpus": None, "max_memory_mib": None}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
