#!/usr/bin/env python3
"""64 concurrent TFTP fetches of ipxe.efi: rackforge's TftpServer vs dnsmasq's TFTP.

Both servers serve the same copy of Debian's ``/usr/lib/ipxe/ipxe.efi`` in the
same run, inside a network namespace this script creates (loopback only) and
deletes.  Each round starts N ``curl --tftp-blksize 1468`` at once and times
until the last one exits; rounds alternate between the servers and the best
round of each counts.  Every download is checked against the original's
sha256.  Printed: wall time, MB/s, the ratio rackforge/dnsmasq, failed
downloads and rackforge's resent packets; written to
``bench/results/pxe_tftp.json``.

Usage: bench/pxe_tftp.py [--clients 64] [--rounds 5]   (needs root)
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = Path("/usr/lib/ipxe/ipxe.efi")
FILE = "ipxe.efi"
ADDR = "127.0.0.1"
BLKSIZE = 1468
CURL_MAX_TIME = 30           # seconds, per download
INNER_MAX_TIME = 600         # seconds, the whole run

SERVER = """
import json, logging, signal, sys, threading
from rackforge.pxe.tftp import TftpServer
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
srv = TftpServer(sys.argv[1], sys.argv[2], port=0, blksize_max=%d)
srv.start()
print(srv.port, flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
done.wait()
srv.stop()
print(json.dumps(srv.stats()), flush=True)
""" % BLKSIZE


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fetch_round(port, clients, outdir, digest):
    """Start ``clients`` curls at once; return (seconds, failures)."""
    outs = [outdir / ("%d.efi" % i) for i in range(clients)]
    for out in outs:
        out.unlink(missing_ok=True)
    url = "tftp://%s:%d/%s" % (ADDR, port, FILE)
    start = time.monotonic()
    procs = [subprocess.Popen(["curl", "-sS", "--max-time", str(CURL_MAX_TIME),
                               "--tftp-blksize", str(BLKSIZE), "-o", str(out), url],
                              stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for out in outs]
    codes = [p.wait() for p in procs]
    elapsed = time.monotonic() - start
    failures = sum(1 for code, out in zip(codes, outs)
                   if code != 0 or not out.exists() or sha256(out) != digest)
    return elapsed, failures


def start_rackforge(root):
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(root), ADDR],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()      # printed once the socket is bound
    if not line.strip().isdigit():
        proc.kill()
        sys.exit("bench: rackforge TFTP server did not start")
    return proc, int(line)


def start_dnsmasq(root, work):
    pidfile = work / "dnsmasq.pid"
    proc = subprocess.Popen(["dnsmasq", "--port=0", "--enable-tftp", "--tftp-root=%s" % root,
                             "--listen-address=%s" % ADDR, "--bind-interfaces",
                             "--keep-in-foreground", "--conf-file=/dev/null", "--tftp-max=100",
                             "--quiet-tftp", "--pid-file=%s" % pidfile, "--log-facility=-"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():   # written once bound
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit("bench: dnsmasq did not start")
        time.sleep(0.02)
    return proc, 69


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def inner(clients, rounds):
    """Runs inside the namespace: both servers, the rounds, the figures."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = Path(tempfile.mkdtemp(prefix="rf-bench-tftp-"))
    work.chmod(0o755)           # dnsmasq drops root and reads as its own user
    procs = []
    try:
        root = work / "root"
        root.mkdir()
        shutil.copy(SOURCE, root / FILE)
        digest = sha256(SOURCE)
        outdir = work / "out"
        outdir.mkdir()
        rf, rf_port = start_rackforge(root)
        procs.append(rf)
        dq, dq_port = start_dnsmasq(root, work)
        procs.append(dq)
        results = {"rackforge": [], "dnsmasq": []}
        for _ in range(rounds):
            for name, port in (("dnsmasq", dq_port), ("rackforge", rf_port)):
                results[name].append(fetch_round(port, clients, outdir, digest))
        stats = json.loads(stop(rf).splitlines()[-1])
        stop(dq)
        procs.clear()
        return report(results, stats, clients, SOURCE.stat().st_size)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def report(results, stats, clients, size):
    total_mb = clients * size / 1e6
    figures = {"clients": clients, "file": FILE, "file_bytes": size, "blksize": BLKSIZE,
               "rackforge_stats": stats}
    for name, rounds in results.items():
        best = min(t for t, _ in rounds)
        figures[name] = {"rounds_s": [round(t, 3) for t, _ in rounds], "best_s": round(best, 3),
                         "mb_per_s": round(total_mb / best, 1),
                         "failed_downloads": sum(f for _, f in rounds)}
    figures["ratio_rackforge_over_dnsmasq"] = round(
        figures["rackforge"]["mb_per_s"] / figures["dnsmasq"]["mb_per_s"], 2)
    for name in ("dnsmasq", "rackforge"):
        f = figures[name]
        print("%-10s %d x %s: best %.2f s (rounds %s), %.1f MB/s, failed downloads %d"
              % (name, clients, FILE, f["best_s"], f["rounds_s"], f["mb_per_s"],
                 f["failed_downloads"]))
    print("ratio rackforge/dnsmasq: %.2f; rackforge resent %d packets, %d failed transfers,"
          " %d refused" % (figures["ratio_rackforge_over_dnsmasq"], stats["resent"],
                           stats["failed"], stats["refused"]))
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        figures = inner(args.clients, args.rounds)
        print("JSON " + json.dumps(figures))
        return
    if os.geteuid() != 0:
        sys.exit("bench: needs root (network namespace)")
    for tool in ("dnsmasq", "curl", "ip"):
        if shutil.which(tool) is None:
            sys.exit("bench: %s missing; run make setup-test" % tool)
    netns = "rf-bench-tftp-%s" % uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        res = subprocess.run(["ip", "netns", "exec", netns, sys.executable, __file__, "--inner",
                              "--clients", str(args.clients), "--rounds", str(args.rounds)],
                             stdout=subprocess.PIPE, text=True, timeout=INNER_MAX_TIME)
    finally:
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
    lines = res.stdout.splitlines()
    print("\n".join(line for line in lines if not line.startswith("JSON ")))
    if res.returncode != 0:
        sys.exit("bench: failed (%d)" % res.returncode)
    figures = json.loads(next(line[5:] for line in lines if line.startswith("JSON ")))
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "pxe_tftp.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
