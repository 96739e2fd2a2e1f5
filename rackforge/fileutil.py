"""Small file helpers: atomic writes, private directories, bounded reads and hashing.

Every directory rackforge makes for state, configuration or keys goes through
:func:`make_dirs`, so its mode never depends on the caller's umask; every
small input file (a password, a YAML file) is read with :func:`read_limited`,
so a FIFO, a device or a huge file is one error instead of a hang or an
exhausted memory.
"""

import errno
import hashlib
import os
import stat
import tempfile
from pathlib import Path

#: the mode of a parent directory that make_dirs creates on the way (/var/lib/rackforge)
PARENT_MODE = 0o755


def atomic_write(path, data, mode=0o644, owner=None):
    """Write ``data`` (str or bytes) to ``path`` so readers see old or new, never half.

    The content goes to a temporary file in the same directory, is flushed to
    disk, given ``mode`` and ``owner`` (``(uid, gid)``), renamed over the
    target, and the directory is flushed too, so the new name survives a power
    cut.  On any failure (a full or read-only file system) the temporary file
    is removed and the target is unchanged.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    fd, tmp = tempfile.mkstemp(prefix=".%s." % path.name, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if owner is not None:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def fsync_dir(directory):
    """Flush ``directory``'s entries (a rename or a new file in it) to disk.

    A file system that cannot sync a directory (EINVAL) is left as it is.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def make_dirs(path, mode=0o700, parent_mode=PARENT_MODE):
    """Create the directory ``path`` with exactly ``mode``, whatever the umask.

    Missing parents are created with ``parent_mode``.  A directory that
    already exists keeps its mode (the operator may have chosen it).  Returns
    ``path`` as a :class:`Path`.
    """
    path = Path(path)
    missing = []
    at = path
    while not at.is_dir():
        missing.append(at)
        if at.parent == at:
            break
        at = at.parent
    for each in reversed(missing):
        want = mode if each == path else parent_mode
        try:
            os.mkdir(each, 0o700)       # never wider than 0700 before the chmod
        except FileExistsError:
            if not each.is_dir():
                raise
            continue                    # made by someone else meanwhile: theirs
        os.chmod(each, want)
    return path


def read_limited(path, limit):
    """The bytes of the regular file ``path``, refusing more than ``limit`` of them.

    A FIFO, a device or a directory is refused without reading (opening a FIFO
    does not wait for a writer), so the caller never hangs or reads without
    end.  Raises ``OSError`` (with the file name and a one-line reason) for
    that, for a file larger than ``limit`` bytes and for any failure to read.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise OSError(errno.EFBIG, "larger than the %d-byte limit" % limit,
                          os.fspath(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


def sha256_file(path, bufsize=4 * 1024 * 1024):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(bufsize)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()
