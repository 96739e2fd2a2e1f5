#!/usr/bin/env python3
"""Cold build vs warm rebuild after a change to one Python file of rackforge.

Both builds run here, one after the other, on a copy of the source tree:

1. cold: empty rackforge base cache and empty diskimage-builder cache
   (``DIB_IMAGE_CACHE``), so debootstrap and every package download happen;
2. a marker comment is appended to ``firstboot/__init__.py`` of the copy;
3. warm: the same profile again.

The result is the ratio warm/cold (the issue asks for at most 0.40), and a
check that the warm image really carries the changed file.  Figures are
printed and written to ``bench/results/build_cache.json``.

Usage: bench/build_cache.py [PROFILE]   (default: minimal; needs root)
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHANGED = "firstboot/__init__.py"


def copy_source(dest):
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def build(profile, env):
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "rackforge", "build", profile], env=env,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if res.returncode != 0:
        sys.exit("bench: build failed: %s" % res.stderr.strip())
    return elapsed


def image_has_marker(images, profile, marker):
    squashfs = images / profile / "pxe" / "rootfs.squashfs"
    text = subprocess.run(["unsquashfs", "-cat", str(squashfs),
                           "usr/lib/rackforge/rackforge/" + CHANGED], capture_output=True,
                          text=True).stdout
    return marker in text


def main():
    profile = sys.argv[1] if len(sys.argv) > 1 else "minimal"
    if os.geteuid() != 0:
        sys.exit("bench: run as root (the builds need it)")
    work = Path(tempfile.mkdtemp(prefix="rackforge-bench-", dir=REPO / "images"))
    try:
        src = copy_source(work / "src")
        images = work / "images"
        env = dict(os.environ, RACKFORGE_SOURCE=str(src), RACKFORGE_IMAGES=str(images),
                   RACKFORGE_CACHE=str(work / "cache"), DIB_IMAGE_CACHE=str(work / "dib-cache"))
        print("bench: cold build of %s (empty caches) ..." % profile, flush=True)
        cold = build(profile, env)
        marker = "# bench marker %d" % time.time_ns()
        with open(src / CHANGED, "a") as f:
            f.write(marker + "\n")
        print("bench: warm rebuild after changing %s ..." % CHANGED, flush=True)
        warm = build(profile, env)
        landed = image_has_marker(images, profile, marker)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)])
    result = {"profile": profile, "cold_s": round(cold, 1), "warm_s": round(warm, 1),
              "ratio": round(warm / cold, 3), "change_in_image": landed, "target_ratio": 0.40}
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "build_cache.json").write_text(json.dumps(result, indent=2) + "\n")
    print("profile  cold      warm     warm/cold  change in image")
    print("%-8s %6.1fs  %6.1fs   %6.3f     %s" % (profile, cold, warm, warm / cold,
                                                  "yes" if landed else "NO"))
    return 0 if landed and warm / cold <= 0.40 else 1


if __name__ == "__main__":
    sys.exit(main())
