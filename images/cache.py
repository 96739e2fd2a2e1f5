"""The base cache: diskimage-builder's root tar, kept by what determines it.

A base is the operating system part of an image: the distribution release,
the elements and their files, the extra packages, diskimage-builder's version
and rackforge's release (which the banner names).  rackforge's own Python
code is not part of it (the pipeline adds the code afterwards), so changing
that code reuses the base; changing an element, a package or the release
builds a new one.

Layout: ``<cache>/base/<key>/root.tar`` beside ``meta.json`` (the inputs of
the key, when it was built).  An entry appears by renaming a finished
directory into place, so a crash never leaves a half entry behind.  Bases
older than ``max_age`` are rebuilt to pick up security updates.
"""

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

KEY_FORMAT = 1
TAR_NAME = "root.tar"
META_NAME = "meta.json"
DEFAULT_MAX_AGE_DAYS = 7
DEFAULT_KEEP = 3


def tree_digest(directory):
    """sha256 over every file's relative path, mode and content under ``directory``.

    Symlinks count by their target; ``__pycache__`` and editor backups are
    ignored, since diskimage-builder ignores them too.
    """
    directory = Path(directory)
    h = hashlib.sha256()
    if not directory.is_dir():
        return h.hexdigest()
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if "__pycache__" in path.parts or rel.endswith(("~", ".pyc", ".swp")):
            continue
        st = path.lstat()
        h.update(rel.encode() + b"\0")
        h.update(b"%o\0" % st.st_mode)
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        elif path.is_file():
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def key_inputs(profile, element_dirs, dib_version, rackforge_version):
    """Everything that decides the base's content, as a JSON-able dict."""
    return {
        "format": KEY_FORMAT,
        "profile": profile.name,
        "distro": profile.distro.name,
        "release": profile.distro.release,
        "elements": list(profile.elements),
        "packages": sorted(profile.packages),
        # content only: a clone elsewhere shares the cache
        "element_trees": [tree_digest(d) for d in element_dirs],
        "diskimage_builder": dib_version,
        "rackforge": rackforge_version,
    }


def base_key(inputs):
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


class BaseCache:
    def __init__(self, root, max_age_days=DEFAULT_MAX_AGE_DAYS, keep=DEFAULT_KEEP,
                 clock=time.time):
        self.root = Path(root) / "base"
        self.max_age = max_age_days * 86400
        self.keep = keep
        self.clock = clock

    def _entry(self, key):
        return self.root / key

    def lookup(self, key):
        """The cached tar for ``key``, or None if absent, unreadable or too old."""
        entry = self._entry(key)
        try:
            meta = json.loads((entry / META_NAME).read_text())
        except (OSError, ValueError):
            return None
        tar = entry / TAR_NAME
        if not tar.is_file() or self.clock() - meta.get("created", 0) > self.max_age:
            return None
        return tar

    def store(self, key, tar, inputs):
        """Move ``tar`` into the cache under ``key``; returns its new path."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".%s." % key, dir=self.root))
        try:
            try:
                os.replace(tar, staging / TAR_NAME)
            except OSError:  # another file system
                shutil.copyfile(tar, staging / TAR_NAME)
            meta = {"key": key, "created": self.clock(), "inputs": inputs}
            (staging / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True))
            entry = self._entry(key)
            if entry.exists():
                shutil.rmtree(entry)
            os.rename(staging, entry)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.prune(protect=key)
        return entry / TAR_NAME

    def entries(self):
        """[(created, key)] of complete entries, newest first."""
        found = []
        if not self.root.is_dir():
            return found
        for entry in self.root.iterdir():
            if entry.name.startswith("."):
                continue
            try:
                meta = json.loads((entry / META_NAME).read_text())
            except (OSError, ValueError):
                continue
            found.append((meta.get("created", 0), entry.name))
        return sorted(found, reverse=True)

    def prune(self, protect=None):
        """Drop entries beyond the newest ``keep``, expired ones and stale staging dirs."""
        now = self.clock()
        for i, (created, key) in enumerate(self.entries()):
            if key == protect:
                continue
            if i >= self.keep or now - created > self.max_age:
                shutil.rmtree(self._entry(key), ignore_errors=True)
        for stale in self.root.glob(".*"):
            if now - stale.stat().st_mtime > 86400:
                shutil.rmtree(stale, ignore_errors=True)
