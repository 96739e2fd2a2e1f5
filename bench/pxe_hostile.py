#!/usr/bin/env python3
"""The boot services under a hostile boot network: before (a git revision) vs after (this tree).

Every server runs in a child process limited to 1,024 open files (systemd's
default), bound to loopback; clients use distinct loopback addresses
(127.x.y.z), as machines on a rack network would.  "before" is the code of
``--before`` (default ``main``) taken from git; "after" is this tree; "nginx"
(when an nginx binary is found, ``--nginx``) serves the same files for the
choice between an in-process server and nginx in front.  Figures:

1. idle: an honest client's time for ``/boot.ipxe`` (20 fetches, a new
   connection each), alone and while 1,100 idle connections from 70
   addresses are held open, and the server's CPU while they are;
2. burst: 64 clients connect at the same moment and fetch ``/boot.ipxe``:
   p50 and max (3 rounds);
3. download: 16 clients fetch a 64 MiB file at once with curl: MB/s;
4. tftp: an honest fetch of ``ipxe.efi`` alone, and right after 256 requests
   that are never answered (as spoofed ones) fill the transfer slots; bytes
   the server sent for those 256 requests (the amplification);
5. etcd: etcd's database size (a real etcd per variant) after 10,000 bogus
   ``/ipxe/node`` requests (random MACs, half of them with a 1 KB platform)
   from 1,000 addresses.

Ratios are printed against the baseline of the same run (alone; before).
Figures go to ``bench/results/pxe_hostile.json``.  Bounded: every wait has a
deadline; the whole run takes 3 to 6 minutes.

Usage: bench/pxe_hostile.py [--before main] [--nginx PATH] [--only idle,burst,...]
"""

import argparse
import json
import os
import random
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "lib"))
FILES = 1024
IPXE = Path("/usr/lib/ipxe/ipxe.efi")

SERVER = r"""
import logging, os, signal, sys, threading
logging.basicConfig(level=logging.CRITICAL)
kind, root, etcd = sys.argv[1], sys.argv[2], sys.argv[3]
if kind == "http":
    from rackforge import registry
    from rackforge.pxe.bootscript import ScriptRenderer
    from rackforge.pxe.http import BootHttpServer
    reg = registry.connect(etcd) if etcd != "-" else registry.MemoryRegistry()
    srv = BootHttpServer("127.0.0.1", 0, root, ScriptRenderer(os.path.join(root, "boot.ipxe.j2")),
                         reg, seed="127.0.0.1", cluster="bench")
    srv.start()
    port = srv.server_address[1]
else:
    from rackforge.pxe.tftp import TftpServer
    srv = TftpServer(root, "127.0.0.1", port=0)
    srv.start()
    port = srv.port
print(port, flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
done.wait()
srv.stop()
"""

NGINX_CONF = """
daemon off; worker_processes auto; pid {dir}/nginx.pid; error_log {dir}/error.log crit;
events {{ worker_connections 4096; }}
http {{
  access_log off; sendfile on; tcp_nopush on;
  client_header_timeout 10s; keepalive_timeout 10s; send_timeout 30s;
  limit_conn_zone $binary_remote_addr zone=addr:1m;
  client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
  uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
  server {{
    listen 127.0.0.1:{port} backlog=128; limit_conn addr 16;
    location = /boot.ipxe {{ root {root}; }}
    location /bundle/ {{ alias {root}/; }}
  }}
}}
"""


def limit_files():
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILES, FILES))


def source_tree(rev, work):
    """The packages of ``rev`` laid out for import (as pyproject's package-dir maps them)."""
    src, pkg = work / "src", work / "pkg"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    mapping = tomllib.loads((src / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    for name, folder in sorted(mapping.items()):
        shutil.copytree(src / folder, pkg / name.replace(".", "/"))
    return pkg


class Child:
    """A server in a child process: ``port``, ``pid``, ``stop()``."""

    def __init__(self, kind, root, code_dir, etcd="-"):
        env = dict(os.environ, PYTHONPATH=str(code_dir))
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, kind, str(root), etcd],
                                     cwd=code_dir, env=env, stdout=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL, stderr=self.log,
                                     preexec_fn=limit_files)
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            sys.exit("bench: the %s server did not start" % kind)
        self.port, self.pid = int(line), self.proc.pid

    def pids(self):
        return [self.pid]

    def tracebacks(self):
        """Tracebacks the server wrote to its stderr so far."""
        self.log.seek(0)
        return self.log.read().count(b"Traceback")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Nginx(Child):
    def tracebacks(self):
        return 0

    def __init__(self, binary, root, work):
        conf = work / "nginx.conf"
        (work / "tmp").mkdir(exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf.write_text(NGINX_CONF.format(dir=work, port=self.port, root=root))
        self.proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(work)],
                                     stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=limit_files)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 10
        while fetch(self.port, "/boot.ipxe", timeout=1)[0] != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                sys.exit("bench: nginx did not start")

    def pids(self):
        kids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.pid:
                kids.append(int(stat.parent.name))
        return [self.pid] + kids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def fetch(port, path, source="127.0.0.1", timeout=5):
    """(status, seconds) of one GET on a new connection; status None on failure."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                      source_address=(source, 0)) as s:
            s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                      % path.encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return int(data.split(b" ", 2)[1]), time.monotonic() - start
    except (OSError, ValueError, IndexError):
        return None, time.monotonic() - start


def honest(port, count=20):
    times, failed = [], 0
    for _ in range(count):
        status, took = fetch(port, "/boot.ipxe", "127.0.9.1")
        times.append(took)
        failed += status != 200
    return {"p50_ms": round(statistics.median(times) * 1000, 2),
            "max_ms": round(max(times) * 1000, 2), "failed": failed}


def idle_flood(port, count=1100, addresses=70, deadline=20):
    """``count`` connections that send nothing, from ``addresses`` addresses, opened one
    by one about every 0.5 ms (as a client loop would: faster, a backlog of 5 would drop
    most of them before the server sees them) and waited for, ``deadline`` s in all."""
    socks, sel = [], selectors.DefaultSelector()
    end = time.monotonic() + deadline
    for i in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.bind(("127.0.10.%d" % (i % addresses + 1), 0))
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE)
        time.sleep(0.0005)
        while len(sel.get_map()) >= 4 and time.monotonic() < end:    # 4 in flight at most
            for key, _ in sel.select(0.5):
                sel.unregister(key.fileobj)
    while sel.get_map() and time.monotonic() < end:
        for key, _ in sel.select(0.5):
            sel.unregister(key.fileobj)
    sel.close()
    opened = sum(1 for s in socks if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
    return socks, opened


def bench_idle(server):
    alone = honest(server.port)
    socks, opened = idle_flood(server.port)
    try:
        cpu0, t0 = cpu_seconds(server.pids()), time.monotonic()
        time.sleep(2.0)
        cpu = (cpu_seconds(server.pids()) - cpu0) / (time.monotonic() - t0)
        flooded = honest(server.port)
    finally:
        for s in socks:
            s.close()
    after = honest(server.port, 5)
    return {"alone": alone, "flooded": flooded, "server_cpu_while_idle_flood": round(cpu, 2),
            "idle_connections_open": opened,
            "after_flood": after,
            "ratio_flooded_vs_alone_max": round(flooded["max_ms"] / alone["max_ms"], 1)}


def burst(port, clients=64, timeout=30):
    """``clients`` connect at once and GET /boot.ipxe; the seconds each took (None: failed)."""
    sel, start, took = selectors.DefaultSelector(), time.monotonic(), {}
    request = b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    for i in range(clients):
        s = socket.socket()
        s.setblocking(False)
        s.bind(("127.0.11.%d" % (i + 1), 0))
        s.connect_ex(("127.0.0.1", port))
        sel.register(s, selectors.EVENT_WRITE, [i, b""])
    while sel.get_map() and time.monotonic() - start < timeout:
        for key, _ in sel.select(0.5):
            s, state = key.fileobj, key.data
            try:
                if key.events == selectors.EVENT_WRITE:
                    s.sendall(request)
                    sel.modify(s, selectors.EVENT_READ, state)
                    continue
                chunk = s.recv(65536)
            except OSError:
                chunk = b""
            state[1] += chunk
            if not chunk:
                ok = state[1].startswith(b"HTTP/1.1 200") or state[1].startswith(b"HTTP/1.0 200")
                took[state[0]] = time.monotonic() - start if ok else None
                sel.unregister(s)
                s.close()
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    sel.close()
    return [took.get(i) for i in range(clients)]


def bench_burst(server, rounds=3):
    out = []
    for _ in range(rounds):
        times = burst(server.port)
        good = sorted(t for t in times if t is not None)
        out.append({"p50_ms": round(statistics.median(good) * 1000, 1) if good else None,
                    "max_ms": round(good[-1] * 1000, 1) if good else None,
                    "failed": len(times) - len(good)})
    return {"rounds": out, "worst_max_ms": max(r["max_ms"] or 1e9 for r in out),
            "median_p50_ms": statistics.median(r["p50_ms"] or 1e9 for r in out)}


def bench_download(server, clients=16, size=64 << 20):
    url = "http://127.0.0.1:%d/bundle/rootfs.squashfs" % server.port
    start = time.monotonic()
    procs = [subprocess.Popen(["curl", "-s", "--noproxy", "*", "-m", "120", "-o", "/dev/null",
                               "--interface", "127.0.12.%d" % (i + 1),
                               "-w", "%{size_download}", url], stdout=subprocess.PIPE)
             for i in range(clients)]
    sizes = [int(p.communicate()[0] or 0) for p in procs]
    took = time.monotonic() - start
    return {"seconds": round(took, 2), "mb_per_s": round(clients * size / 1e6 / took),
            "failed": sum(1 for s in sizes if s != size)}


def tftp_fetch(port, out, deadline):
    """Seconds until one curl fetch of ipxe.efi succeeds, retrying until ``deadline``."""
    start = time.monotonic()
    while time.monotonic() < deadline:
        res = subprocess.run(["curl", "-s", "--max-time", "5", "--interface", "127.0.13.1",
                              "-o", str(out), "tftp://127.0.0.1:%d/ipxe.efi" % port],
                             stdin=subprocess.DEVNULL)
        if res.returncode == 0 and out.read_bytes() == IPXE.read_bytes():
            return round(time.monotonic() - start, 2)
    return None


def bench_tftp(server, work, flood=256):
    out = work / "got.efi"
    alone = tftp_fetch(server.port, out, time.monotonic() + 30)
    rrq = b"\0\1ipxe.efi\0octet\0"
    socks = []
    for i in range(flood):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.14.%d" % (i % 250 + 1), 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        s.sendto(rrq, ("127.0.0.1", server.port))
        socks.append(s)
    t0 = time.monotonic()
    flooded = tftp_fetch(server.port, out, t0 + 40)
    time.sleep(max(0.0, t0 + 25 - time.monotonic()))    # every unanswered transfer is over
    received = 0
    for s in socks:
        s.setblocking(False)
        try:
            while True:
                received += len(s.recv(65536))
        except BlockingIOError:
            pass
        s.close()
    return {"honest_alone_s": alone, "honest_after_flood_s": flooded,
            "request_bytes": len(rrq), "bytes_sent_per_request": round(received / flood),
            "amplification": round(received / flood / len(rrq), 1)}


def etcd_status(url):
    req = urllib.request.Request(url + "/v3/maintenance/status", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(json.loads(r.read())["dbSize"])


def boot_keys(url):
    import base64
    body = json.dumps({"key": base64.b64encode(b"/rackforge/boots/").decode(),
                       "range_end": base64.b64encode(b"/rackforge/boots0").decode(),
                       "count_only": True}).encode()
    req = urllib.request.Request(url + "/v3/kv/range", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(json.loads(r.read()).get("count", 0))


def bench_etcd(code_dir, root, work, count=10000, addresses=1000, threads=8):
    from etcd import etcd_server
    with etcd_server(work) as url:
        server = Child("http", root, code_dir, etcd=url)
        try:
            before = etcd_status(url)
            rng = random.Random(17)
            jobs = []
            for i in range(count):
                mac = "52:%02x:%02x:%02x:%02x:%02x" % tuple(rng.randrange(256) for _ in range(5))
                platform = "".join(rng.choice("abcdefgh") for _ in range(1024)) if i % 2 \
                    else "efi"
                jobs.append(("/ipxe/node?mac=%s&platform=%s" % (mac, platform),
                             "127.%d.%d.%d" % (20 + i % addresses // 250, i % addresses % 250,
                                               1 + i // addresses % 250)))
            statuses = {}
            lock = threading.Lock()
            start = time.monotonic()

            def work_on(part):
                for path, source in part:
                    status, _ = fetch(server.port, path, source, timeout=30)
                    with lock:
                        statuses[status] = statuses.get(status, 0) + 1
            pool = [threading.Thread(target=work_on, args=(jobs[i::threads],))
                    for i in range(threads)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            took = time.monotonic() - start
            after = etcd_status(url)
            keys = boot_keys(url)
        finally:
            server.stop()
    return {"requests": count, "seconds": round(took, 1), "answers": statuses,
            "db_bytes_before": before, "db_bytes_after": after, "boot_records": keys,
            "growth_mb": round((after - before) / 1e6, 2)}


HTTP_PARTS = (("idle", bench_idle), ("burst", bench_burst), ("download", bench_download))


def make_bundle(root):
    root.mkdir()
    (root / "boot.ipxe.j2").write_text("#!ipxe\nkernel {{ kernel_args }}\n")
    (root / "boot.ipxe").write_text("#!ipxe\nchain /ipxe/node\n")   # for nginx
    for name in ("vmlinuz", "initrd"):
        (root / name).write_bytes(b"x" * 4096)
    with open(root / "rootfs.squashfs", "wb") as f:
        f.write(os.urandom(64 << 20))
    tftp = root.parent / "tftp"
    tftp.mkdir()
    shutil.copy(IPXE, tftp / "ipxe.efi")
    return root, tftp


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="git revision of the 'before' code")
    parser.add_argument("--nginx", default=shutil.which("nginx"), help="an nginx binary")
    parser.add_argument("--only", default="idle,burst,download,tftp,etcd")
    parser.add_argument("--bogus", type=int, default=10000)
    args = parser.parse_args()
    parts = args.only.split(",")
    results = {"before_rev": args.before, "files_limit": FILES}
    with tempfile.TemporaryDirectory(prefix="rf-bench-hostile-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)           # nginx's workers read the bundle as nobody
        root, tftp = make_bundle(work / "bundle")
        variants = {"before": source_tree(args.before, work / "before"), "after": REPO}
        for name, code in variants.items():
            res = results[name] = {}
            for part, run in HTTP_PARTS:
                if part in parts:                  # a fresh server for each part
                    server = Child("http", root, code)
                    try:
                        res[part] = run(server)
                        res[part]["server_tracebacks"] = server.tracebacks()
                    finally:
                        server.stop()
                    print(name, part, json.dumps(res[part]), flush=True)
            if "tftp" in parts:
                server = Child("tftp", tftp, code)
                try:
                    res["tftp"] = bench_tftp(server, work)
                finally:
                    server.stop()
                print(name, "tftp", json.dumps(res["tftp"]), flush=True)
            if "etcd" in parts and shutil.which("etcd") is None:
                print("bench: etcd not installed (apt-get install etcd-server): no etcd figure")
                parts.remove("etcd")
            if "etcd" in parts:
                (work / ("etcd-" + name)).mkdir()
                res["etcd"] = bench_etcd(code, root, work / ("etcd-" + name), args.bogus)
                print(name, "etcd", json.dumps(res["etcd"]), flush=True)
        if args.nginx and {"idle", "burst", "download"} & set(parts):
            res = results["nginx"] = {}
            for part, run in HTTP_PARTS:
                if part in parts:
                    nginx_dir = work / ("nginx-" + part)
                    nginx_dir.mkdir()
                    server = Nginx(args.nginx, root, nginx_dir)
                    try:
                        res[part] = run(server)
                    finally:
                        server.stop()
                    print("nginx", part, json.dumps(res[part]), flush=True)
    summary(results)
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "pxe_hostile.json").write_text(json.dumps(results, indent=2) + "\n")


def summary(r):
    print("\n== summary (ratios: after against before unless said)")
    b, a = r["before"], r["after"]
    if "idle" in a:
        for name in ("before", "after", "nginx"):
            if name in r and "idle" in r[name]:
                i = r[name]["idle"]
                print("idle flood  %-6s honest p50 %.1f ms max %.1f ms (alone %.1f ms), %d/20"
                      " failed, server CPU %d%%" % (name, i["flooded"]["p50_ms"],
                                                    i["flooded"]["max_ms"], i["alone"]["max_ms"],
                                                    i["flooded"]["failed"],
                                                    100 * i["server_cpu_while_idle_flood"]))
    if "burst" in a:
        for name in ("before", "after", "nginx"):
            if name in r and "burst" in r[name]:
                x = r[name]["burst"]
                print("64 at once  %-6s p50 %.1f ms, worst max %.1f ms"
                      % (name, x["median_p50_ms"], x["worst_max_ms"]))
        print("64 at once  worst max before/after: %.1fx"
              % (b["burst"]["worst_max_ms"] / a["burst"]["worst_max_ms"]))
    if "download" in a:
        for name in ("before", "after", "nginx"):
            if name in r and "download" in r[name]:
                print("download    %-6s %d MB/s" % (name, r[name]["download"]["mb_per_s"]))
    if "tftp" in a:
        for name in ("before", "after"):
            t = r[name]["tftp"]
            print("tftp        %-6s honest alone %s s, after 256 spoofed %s s; %d bytes sent"
                  " per 17-byte request (%.0fx)" % (name, t["honest_alone_s"],
                                                    t["honest_after_flood_s"],
                                                    t["bytes_sent_per_request"],
                                                    t["amplification"]))
    if "etcd" in a:
        for name in ("before", "after"):
            e = r[name]["etcd"]
            print("etcd        %-6s +%.2f MB after %d bogus requests, %d boot records"
                  % (name, e["growth_mb"], e["requests"], e["boot_records"]))


if __name__ == "__main__":
    main()
