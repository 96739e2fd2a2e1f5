"""A load loop against the cloud's API through the VIP, run inside a node (``python3 -``
on its stdin, the admin password in its environment): a token, then the server list,
again and again until a file appears, one JSON line per request on stdout.  The cloud's
end-to-end test counts the failed requests while a controller loses power; the
benchmark takes latencies from the same lines."""

SCRIPT = r'''
import json, os, sys, time, urllib.error, urllib.request
base, stop = sys.argv[1], sys.argv[2]
body = json.dumps({"auth": {"identity": {"methods": ["password"], "password": {"user": {
    "name": "admin", "domain": {"id": "default"}, "password": os.environ["OS_PASSWORD"]}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}).encode()


def call(kind, req):
    t = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            out = res.status, res.headers.get("X-Subject-Token"), res.read()
        ok = out[0] < 400
    except (urllib.error.URLError, OSError) as exc:
        out, ok = (getattr(exc, "code", 0), None, b""), False
    print(json.dumps({"kind": kind, "at": time.time(), "ok": ok, "status": out[0],
                      "ms": round((time.monotonic() - t) * 1000, 1)}), flush=True)
    return out if ok else None


while not os.path.exists(stop):
    got = call("token", urllib.request.Request(base + ":5000/v3/auth/tokens", data=body,
               headers={"Content-Type": "application/json"}))
    if got:
        call("servers", urllib.request.Request(base + ":8774/v2.1/servers",
             headers={"X-Auth-Token": got[1]}))
    time.sleep(0.2)
'''


def start(node, base, stop_file, password, out):
    """The loop on ``node`` against ``base`` (``http://VIP``), its lines into the host's
    file ``out`` (not a pipe: nobody reads a pipe while the loop runs, and a full one
    would stop it); returns the Popen."""
    import subprocess

    leader = node.leader()
    with open(out, "w") as sink:
        proc = subprocess.Popen(
            ["nsenter", "-t", str(leader), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--",
             "python3", "-", base, stop_file],
            stdin=subprocess.PIPE, stdout=sink, text=True,
            env={"OS_PASSWORD": password, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    proc.stdin.write(SCRIPT)
    proc.stdin.close()
    return proc


def results(out):
    """The loop's requests so far, from its file."""
    import json

    with open(out) as f:
        return [json.loads(line) for line in f if line.startswith("{") and
                line.endswith("}\n")]


def percentile(values, p):
    values = sorted(values)
    if not values:
        return None
    k = (len(values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)
