"""Where things live: the source tree's rooms, outputs and caches.

Every path is computed from the environment at call time (no module-level
state), so tests can point rackforge at a scratch tree with environment
variables alone.
"""

import os
from pathlib import Path


def source_root():
    """The repository (or installed tree) that holds profiles/ and elements/."""
    env = os.environ.get("RACKFORGE_SOURCE")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent


def profiles_dir():
    return Path(os.environ.get("RACKFORGE_PROFILES", source_root() / "profiles"))


def elements_dir():
    return source_root() / "elements"


def images_dir():
    """Where built profiles land: images/<profile>/ (git-ignored)."""
    return Path(os.environ.get("RACKFORGE_IMAGES", source_root() / "images"))


def cache_dir():
    """Build caches: base root file systems keyed by what determines them."""
    env = os.environ.get("RACKFORGE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "rackforge"


def config_dir():
    """Per-node configuration on an appliance (bootstrap file, etcd's files)."""
    return Path(os.environ.get("RACKFORGE_CONFIG", "/etc/rackforge"))


def state_dir():
    """Persistent per-node state on an appliance."""
    return Path(os.environ.get("RACKFORGE_STATE", "/var/lib/rackforge"))


def issue_dir():
    """Where the console banner's pieces go (agetty shows /etc/issue.d/*.issue)."""
    return Path(os.environ.get("RACKFORGE_ISSUE_DIR", "/etc/issue.d"))
