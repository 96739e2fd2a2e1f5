"""Rebuilding from a manifest: every Debian package pinned to the version an earlier build had.

``rackforge build PROFILE --like images/PROFILE/manifest.json`` reads the
manifest's package list (:func:`load`), writes it as APT preferences
(:func:`preferences`, applied inside the build by element ``rackforge-pins``)
and afterwards compares the rebuild's packages with the manifest's
(:func:`compare`).  The PyPI packages are pinned by hash in any build
(``images/image-requirements.txt``).  A Debian mirror keeps only current
versions: a package updated since can no longer be pinned, and the
comparison names it (a snapshot mirror, set in the host's apt sources,
serves the old ones).
"""

import json
from pathlib import Path

from rackforge import errors

ELEMENT = "rackforge-pins"
PRIORITY = 1001             # above 1000: apt downgrades to reach the pinned version


class BadManifest(errors.ConfigError):
    message = "--like {path}: {why}"


def load(path, profile):
    """``{name: version}`` of the manifest at ``path``, which must be a build of ``profile``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadManifest(path=path, why="no such file; give an earlier build's "
                          "images/PROFILE/manifest.json") from None
    except (OSError, ValueError) as exc:
        raise BadManifest(path=path, why="not a readable manifest (%s)" % exc) from None
    try:
        built = data["profile"]
        packages = {p["name"]: p["version"] for p in data["packages"]}
    except (KeyError, TypeError):
        raise BadManifest(path=path, why="not a rackforge manifest (no profile or "
                          "packages)") from None
    if built.get("name") != profile.name:
        raise BadManifest(path=path, why="it is a build of profile '%s', not '%s'"
                          % (built.get("name"), profile.name))
    release = (built.get("distro") or {}).get("release")
    if release != profile.distro.release:
        raise BadManifest(path=path, why="it is %s, the profile builds %s"
                          % (release, profile.distro.release))
    if not packages:
        raise BadManifest(path=path, why="it lists no packages")
    return packages


def preferences(packages):
    """APT preferences pinning each package of ``{name: version}``."""
    blocks = ["Package: %s\nPin: version %s\nPin-Priority: %d\n" % (name, version, PRIORITY)
              for name, version in sorted(packages.items())]
    return "\n".join(blocks)


def compare(wanted, got):
    """Lines naming each package whose version differs, is missing or is extra (sorted)."""
    lines = []
    for name in sorted(set(wanted) | set(got)):
        old, new = wanted.get(name), got.get(name)
        if old == new:
            continue
        if old is None:
            lines.append("%s %s: not in the manifest" % (name, new))
        elif new is None:
            lines.append("%s %s: missing from the rebuild" % (name, old))
        else:
            lines.append("%s: %s in the manifest, %s in the rebuild" % (name, old, new))
    return lines
