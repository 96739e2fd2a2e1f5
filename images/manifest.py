"""manifest.json: what a build produced, from what, and how to check it.

The manifest names the profile (fully merged), rackforge's version and git
commit, diskimage-builder's version, the build's start and end (UTC), the
base cache key, every artifact with its size and sha256, the Debian
packages installed with their versions, and the packages taken from PyPI
with their versions and the sha256 pip checked them against.  Paths are relative to the
manifest's directory, so the output folder can be moved or served as is.
"""

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from rackforge.fileutil import atomic_write, sha256_file

MANIFEST_NAME = "manifest.json"
FORMAT = 1


def utc_now():
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def git_revision(source_root, run=subprocess.run):
    """{"commit", "dirty"} of the source tree, or None outside a git checkout."""
    def git(*args):
        return run(["git", "-C", str(source_root), *args], capture_output=True, text=True)
    try:
        head = git("rev-parse", "HEAD")
    except OSError:
        return None
    if head.returncode != 0:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def artifact_entry(path, base_dir):
    path = Path(path)
    return {
        "path": path.relative_to(base_dir).as_posix(),
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def collect_artifacts(out_dir, exclude=(MANIFEST_NAME,)):
    """Entries for every regular file under ``out_dir`` except ``exclude``, sorted."""
    out_dir = Path(out_dir)
    return [artifact_entry(p, out_dir) for p in sorted(out_dir.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name not in exclude]


def build_manifest(*, profile, version, git, dib_version, started, finished, base, artifacts,
                   packages, pypi=()):
    return {
        "format": FORMAT,
        "profile": profile,
        "rackforge": {"version": version, "git": git},
        "diskimage_builder": dib_version,
        "build": {"started": started, "finished": finished},
        "base": base,
        "artifacts": artifacts,
        "packages": packages,
        "pypi": list(pypi),
    }


def write_manifest(out_dir, manifest):
    path = Path(out_dir) / MANIFEST_NAME
    atomic_write(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def verify(out_dir):
    """Problems found checking every artifact of the manifest in ``out_dir``; [] if none."""
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / MANIFEST_NAME).read_text())
    problems = []
    for art in manifest["artifacts"]:
        path = out_dir / art["path"]
        if not path.is_file():
            problems.append("%s: missing" % art["path"])
        elif path.stat().st_size != art["size"]:
            problems.append("%s: size %d, manifest says %d"
                            % (art["path"], path.stat().st_size, art["size"]))
        elif sha256_file(path) != art["sha256"]:
            problems.append("%s: sha256 differs from the manifest" % art["path"])
    return problems
