"""Small file helpers: atomic writes and hashing."""

import hashlib
import os
import tempfile
from pathlib import Path


def atomic_write(path, data, mode=0o644):
    """Write ``data`` (str or bytes) to ``path`` so readers see old or new, never half.

    The content goes to a temporary file in the same directory, is flushed to
    disk, and is renamed over the target.
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
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def sha256_file(path, bufsize=4 * 1024 * 1024):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(bufsize)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()
