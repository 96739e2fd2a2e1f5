#!/usr/bin/env python3
"""16 concurrent HTTP fetches of the root squashfs: rackforge's boot HTTP vs a plain server.

The baseline is Python's own ``http.server`` (ThreadingHTTPServer with
SimpleHTTPRequestHandler) serving the same file in the same run; both bind
to loopback only.  Each round starts N ``curl`` at once and times until the
last exits; rounds alternate between the servers and the best of each counts.
Every download's size is checked.  Printed: wall time, aggregate MB/s and the
ratio rackforge/baseline; written to ``bench/results/pxe_http.json``.

The squashfs is ``images/minimal/pxe/rootfs.squashfs`` when built (or
``--file``), else a 256 MiB file of random bytes.

Usage: bench/pxe_http.py [--clients 16] [--rounds 3] [--file PATH]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rackforge import registry  # noqa: E402
from rackforge.pxe.bootscript import ScriptRenderer  # noqa: E402
from rackforge.pxe.http import BootHttpServer  # noqa: E402

NAME = "rootfs.squashfs"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def baseline_server(directory):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(directory)))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, "http://127.0.0.1:%d/%s" % (srv.server_address[1], NAME)


def rackforge_server(directory):
    srv = BootHttpServer("127.0.0.1", 0, str(directory),
                         ScriptRenderer(directory / "boot.ipxe.j2"), registry.MemoryRegistry(),
                         seed="127.0.0.1", cluster="bench")
    srv.start()
    return srv, "http://127.0.0.1:%d/bundle/%s" % (srv.server_address[1], NAME)


def one_round(url, clients, size):
    start = time.monotonic()
    procs = [subprocess.Popen(["curl", "-s", "--noproxy", "*", "-m", "600", "-o", "/dev/null",
                               "-w", "%{size_download}", url], stdout=subprocess.PIPE)
             for _ in range(clients)]
    sizes = [int(p.communicate()[0] or 0) for p in procs]
    elapsed = time.monotonic() - start
    return elapsed, sum(1 for s in sizes if s != size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--file", type=Path, default=REPO / "images/minimal/pxe" / NAME)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rf-bench-http-") as tmp:
        d = Path(tmp)
        for name in ("vmlinuz", "initrd"):
            (d / name).write_bytes(b"x")
        (d / "boot.ipxe.j2").write_text("#!ipxe\n")
        if args.file.is_file():
            os.link(args.file, d / NAME) if args.file.stat().st_dev == d.stat().st_dev \
                else os.symlink(args.file.resolve(), d / NAME)
            source = str(args.file)
        else:
            with open(d / NAME, "wb") as f:
                for _ in range(256):
                    f.write(os.urandom(1024 * 1024))
            source = "256 MiB of random bytes"
        size = (d / NAME).stat().st_size
        servers = {"rackforge": rackforge_server(d), "baseline": baseline_server(d)}
        best, failed = {}, {k: 0 for k in servers}
        try:
            for _ in range(args.rounds):
                for name, (_, url) in servers.items():
                    elapsed, bad = one_round(url, args.clients, size)
                    failed[name] += bad
                    best[name] = min(best.get(name, elapsed), elapsed)
        finally:
            servers["rackforge"][0].stop()
            servers["baseline"][0].shutdown()

    total = size * args.clients / 1e6
    result = {"file": source, "bytes": size, "clients": args.clients, "rounds": args.rounds,
              "seconds": best, "mb_per_s": {k: total / v for k, v in best.items()},
              "failed": failed, "ratio_rackforge_vs_baseline": best["baseline"] / best["rackforge"]}
    for name in servers:
        print("%-10s %d x %.0f MB in %.2f s: %.0f MB/s, %d failed"
              % (name, args.clients, size / 1e6, best[name], result["mb_per_s"][name],
                 failed[name]))
    print("throughput ratio rackforge/baseline: %.2f" % result["ratio_rackforge_vs_baseline"])
    out = REPO / "bench/results"
    out.mkdir(exist_ok=True)
    (out / "pxe_http.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if not any(failed.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
