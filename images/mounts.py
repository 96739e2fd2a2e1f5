"""Find and release mounts left under a build's work directory.

diskimage-builder mounts tmpfs, /proc, /sys and /dev into its chroot and
unmounts them in its own exit traps.  A build killed hard (or a bug in an
element) can leave them behind; deleting a directory with a live bind mount
of /dev in it would delete the host's device nodes.  So the pipeline always
unmounts whatever is left below its work directory before removing it.
"""

import os
import subprocess
from pathlib import Path

MOUNTINFO = "/proc/self/mountinfo"


def _unescape(field):
    # mountinfo escapes space, tab, newline and backslash as octal
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")


def mounts_under(path, mountinfo=MOUNTINFO):
    """Mount points at or below ``path``, deepest first."""
    base = os.path.realpath(path)
    found = []
    with open(mountinfo) as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point == base or point.startswith(base.rstrip("/") + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def release(path, run=subprocess.run):
    """Unmount everything below ``path``; returns the mount points that stay."""
    for point in mounts_under(path):
        res = run(["umount", point], capture_output=True)
        if res.returncode != 0:
            # busy: detach now, the kernel frees it when the last user goes
            run(["umount", "--lazy", point], capture_output=True)
    return mounts_under(path)


def remove_tree(path, run=subprocess.run):
    """Unmount, then delete ``path``; refuses to delete while anything is mounted."""
    path = Path(path)
    if not path.exists():
        return []
    left = release(path, run)
    if left:
        return left
    # files of diskimage-builder's chroot are root's; we are root here
    run(["rm", "-rf", "--one-file-system", str(path)], check=False)
    return []
