"""Configuration files from the catalogue's templates: rendered with jinja2, written only
when something changed (content, mode or owner), atomically, never half.

``root`` prefixes every path (tests render into a directory; on a node it is ``/``).
A template that uses a name the context lacks fails (``StrictUndefined``) with one
line naming the template and the name, and nothing is written.
"""

import grp
import json
import os
import pwd
from pathlib import Path

from rackforge import errors
from rackforge.fileutil import atomic_write, make_dirs

from rackforge.nodeagent.catalogue import TEMPLATES_DIR


class RenderFailed(errors.RackforgeError):
    message = "config {path} from {template}: {detail}"


def environment(templates=TEMPLATES_DIR):
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["from_json"] = json.loads      # a secret that is a key set (Keystone's)
    return env


def render(env, config, context):
    """The text of ``config`` (a :class:`catalogue.Config`) for ``context``."""
    import jinja2

    try:
        return env.get_template(config.template).render(**context)
    except jinja2.TemplateError as exc:
        raise RenderFailed(path=config.path, template=config.template,
                           detail=str(exc).splitlines()[0][:200]) from None


def _table(path, name):
    """The id of ``name`` in a passwd or group file, or None."""
    try:
        for line in Path(path).read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[0] == name:
                return int(fields[2])
    except (OSError, ValueError):
        return None
    return None


def _ids(config, root="/"):
    """(uid, gid) of the config's owner and group, as the tree at ``root`` names them;
    None where a tree other than this system's has no such files (nothing to chown to)."""
    if str(root) != "/":
        uid = _table(Path(root) / "etc/passwd", config.owner)
        gid = _table(Path(root) / "etc/group", config.group)
        return (uid, gid) if uid is not None and gid is not None else None
    try:
        uid = pwd.getpwnam(config.owner).pw_uid
        gid = grp.getgrnam(config.group).gr_gid
    except KeyError as exc:
        raise RenderFailed(path=config.path, template=config.template,
                           detail="no user or group %s on this node (is its package "
                           "installed?)" % exc) from None
    return uid, gid


def differs(path, text, config, ids):
    """True if ``path`` does not hold ``text`` with ``config``'s mode and owner."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            same = f.read() == text.encode()
    except FileNotFoundError:
        return True
    mode_ok = (st.st_mode & 0o7777) == config.mode
    owner_ok = ids is None or (st.st_uid, st.st_gid) == ids
    return not (same and mode_ok and owner_ok)


def significant(text, free):
    """The lines of ``text`` but blank ones and those setting a key of ``free``
    (``key = value``; a key ``a.b`` covers ``a.b.1`` too): what a restart-free change
    leaves alone."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key = line.split("=", 1)[0].strip() if "=" in line else None
        if key is None or not any(key == f or key.startswith(f + ".") for f in free):
            out.append(line)
    return out


def restart_free_change(path, text, config):
    """True if ``path`` exists and differs from ``text`` only in lines of
    ``config.restart_free``, with the same mode."""
    if not config.restart_free:
        return False
    try:
        if (os.stat(path).st_mode & 0o7777) != config.mode:
            return False
        with open(path) as f:
            old = f.read()
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    return significant(old, config.restart_free) == significant(text, config.restart_free)


def write(root, config, text, before=None):
    """Write ``text`` to ``root + config.path`` if it differs, calling ``before()`` first
    (to record what the change will owe); returns True if it wrote."""
    path = Path(root) / config.path.lstrip("/")
    ids = _ids(config, root) if os.geteuid() == 0 else None
    if not differs(path, text, config, ids):
        return False
    if before is not None:
        before()
    if not path.parent.is_dir():
        make_dirs(path.parent, 0o755)
    atomic_write(path, text, mode=config.mode, owner=ids)
    return True
