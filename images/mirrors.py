"""Debian mirrors for the build, read from the build host's own apt configuration.

No mirror host is written in rackforge: a build uses whatever the host's apt
uses (deb822 ``*.sources`` files or one-line ``sources.list`` entries), so it
works behind a local mirror or proxy exactly as apt does.  Settings already in
the environment (``DIB_DISTRIBUTION_MIRROR``, ``DIB_DEBIAN_SECURITY_MIRROR``)
win.
"""

import os
import re
from pathlib import Path

APT_DIR = Path("/etc/apt")


def _deb822_uris(text):
    """(uri, suites) pairs from a deb822 sources file."""
    pairs = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.split()
        if "deb" not in fields.get("types", []):
            continue
        for uri in fields.get("uris", []):
            pairs.append((uri, fields.get("suites", [])))
    return pairs


def _one_line_uris(text):
    pairs = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) < 3 or parts[0] != "deb":
            continue
        # skip an options block such as [arch=amd64 signed-by=...]
        if parts[1].startswith("["):
            while parts and not parts[1].endswith("]"):
                parts.pop(1)
            parts.pop(1)
        if len(parts) >= 3:
            pairs.append((parts[1], [parts[2]]))
    return pairs


def apt_sources(apt_dir=APT_DIR):
    apt_dir = Path(apt_dir)
    pairs = []
    for path in sorted(apt_dir.glob("sources.list.d/*.sources")):
        pairs.extend(_deb822_uris(path.read_text(errors="replace")))
    for path in [apt_dir / "sources.list", *sorted(apt_dir.glob("sources.list.d/*.list"))]:
        if path.exists():
            pairs.extend(_one_line_uris(path.read_text(errors="replace")))
    return pairs


def debian_mirrors(apt_dir=APT_DIR):
    """The distribution and security mirror URIs the host uses, or None each."""
    main = security = None
    for uri, suites in apt_sources(apt_dir):
        uri = uri.rstrip("/")
        if any(s.endswith("-security") or s.endswith("/updates") for s in suites):
            security = security or uri
        elif any(suites):
            main = main or uri
    return main, security


def dib_mirror_env(environ=None, apt_dir=APT_DIR):
    """Environment for diskimage-builder's debian elements."""
    environ = os.environ if environ is None else environ
    env = {}
    main, security = debian_mirrors(apt_dir)
    if "DIB_DISTRIBUTION_MIRROR" not in environ and main:
        env["DIB_DISTRIBUTION_MIRROR"] = main
    if "DIB_DEBIAN_SECURITY_MIRROR" not in environ and security:
        env["DIB_DEBIAN_SECURITY_MIRROR"] = security
    return env
