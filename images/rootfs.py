"""The root tree between diskimage-builder and the artifacts.

diskimage-builder's tar output is the cached base.  For every build it is
unpacked here, completed (API mount points that the tar leaves out), given
rackforge's own Python code (the "code layer", kept out of the base so that a
code change does not rebuild the operating system), and stamped with a
release file.  Disk, ISO and PXE outputs are all made from this one tree.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from rackforge import errors

# Where the element rackforge-base expects the code (see elements/README.md).
CODE_DIR = "usr/lib/rackforge"
RELEASE_FILE = "etc/rackforge/release.json"
PROFILE_FILE = "usr/lib/rackforge/profile.json"
API_DIRS = {"proc": 0o555, "sys": 0o555, "dev": 0o755, "run": 0o755, "tmp": 0o1777}


def extract(tarball, root, run=subprocess.run):
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    run(["tar", "-xpf", str(tarball), "-C", str(root), "--numeric-owner",
         "--xattrs", "--xattrs-include=*"], check=True, capture_output=True, text=True)
    complete_api_dirs(root)


def complete_api_dirs(root):
    """Create the mount points systemd and the initramfs expect to find."""
    for name, mode in API_DIRS.items():
        path = Path(root) / name
        path.mkdir(exist_ok=True)
        os.chmod(path, mode)


# Runtime libraries Debian does not package, pinned by version and hash;
# everything else comes from Debian packages listed by the elements.
REQUIREMENTS = Path(__file__).parent / "image-requirements.txt"
_PIN_RE = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;]+)\s+--hash=sha256:([0-9a-f]{64})\s*\Z")
# Rooms that build images or simulate a rack: never on a node (DESIGN.md).  The
# core CLI skips their commands where they are absent.
BUILD_SIDE = ("images", "virt")


def install_code(root, source_root, run=subprocess.run):
    """Install the rackforge package from ``source_root`` into the tree.

    Pure Python, no dependencies pulled (the image gets them from Debian
    packages listed by the elements) except the hash-pinned ``REQUIREMENTS``,
    no byte-code compiled with the host's interpreter, and without the
    ``BUILD_SIDE`` rooms.
    """
    target = Path(root) / CODE_DIR
    if target.exists():
        shutil.rmtree(target)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
           "--disable-pip-version-check", "--no-warn-script-location", "--target", str(target)]
    for what, args in (("rackforge", [str(source_root)]),
                       ("the pinned PyPI packages", ["--require-hashes", "--only-binary",
                                                     ":all:", "-r", str(REQUIREMENTS)])):
        res = run(pip + args, capture_output=True, text=True)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
            raise errors.BuildFailed(step="installing %s into the image" % what,
                                     detail=tail[0], log="the build log")
    # console scripts made by pip point at the host's interpreter; the image
    # has its own /usr/bin/rackforge from rackforge-base.
    shutil.rmtree(target / "bin", ignore_errors=True)
    for room in BUILD_SIDE:
        shutil.rmtree(target / "rackforge" / room, ignore_errors=True)


def write_release(root, release):
    path = Path(root) / RELEASE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(release, indent=2, sort_keys=True) + "\n")


def write_profile(root, profile):
    """The merged profile as ``usr/lib/rackforge/profile.json``: first boot and the join
    service read the cluster and storage policy from it (firstboot/nodeprofile.py)."""
    path = Path(root) / PROFILE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile.as_dict(), indent=2, sort_keys=True) + "\n")
    path.chmod(0o644)


def write_live_fstab(root):
    """A live system's root is an overlay set up by live-boot: no disk entries."""
    (Path(root) / "etc" / "fstab").write_text(
        "# live system: the root file system is set up by live-boot\n")


_KVER = re.compile(r"^vmlinuz-(.+)\Z")


def kernel_and_initrd(root):
    """(kernel, initrd) file names in /boot of the tree, newest kernel first."""
    boot = Path(root) / "boot"
    versions = sorted((m.group(1) for p in boot.glob("vmlinuz-*")
                       if (m := _KVER.match(p.name))), key=_version_key, reverse=True)
    for ver in versions:
        initrd = boot / ("initrd.img-%s" % ver)
        if initrd.exists():
            return "vmlinuz-%s" % ver, initrd.name
    raise errors.BuildFailed(step="finding the kernel",
                             detail="no vmlinuz-*/initrd.img-* pair in %s" % boot,
                             log="the build log")


def _version_key(ver):
    return [int(x) if x.isdigit() else x for x in re.split(r"[.-]", ver)]


class BadPin(errors.ConfigError):
    message = ("{path}:{line}: '{text}' is not 'NAME==VERSION --hash=sha256:HEX'; every "
               "package an image takes from PyPI is pinned by version and hash")


def pypi_packages(requirements=None):
    """[{name, version, sha256}] of the PyPI packages an image carries (the pins)."""
    path = Path(requirements or REQUIREMENTS)
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        m = _PIN_RE.match(text)
        if m is None:
            raise BadPin(path=path, line=number, text=text)
        out.append({"name": m.group(1), "version": m.group(2), "sha256": m.group(3)})
    return sorted(out, key=lambda p: p["name"].lower())


def installed_packages(root, run=subprocess.run):
    """[{name, version}] of the Debian packages installed in the tree."""
    res = run(["dpkg-query", "--admindir=%s" % (Path(root) / "var/lib/dpkg"), "-W",
               "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n"],
              capture_output=True, text=True, check=True)
    pkgs = []
    for line in res.stdout.splitlines():
        name, version, status = (line.split("\t") + ["", ""])[:3]
        if status.startswith("ii"):
            pkgs.append({"name": name, "version": version})
    return sorted(pkgs, key=lambda p: p["name"])
