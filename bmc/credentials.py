"""BMC passwords: where they come from, what is refused, and how they are stored.

Passwords come from a file, an environment variable or a prompt, never from
the command line (``ps`` and shell history would show them).  A password
file is read like any small input: a regular file only (a FIFO is refused,
not waited on), at most :data:`MAX_PASSWORD_FILE` bytes, UTF-8 with a byte
order mark dropped.  In the registry
they are Fernet tokens under the cluster key (``cluster.key`` in the state
directory, or ``$RACKFORGE_CLUSTER_KEY_FILE``), created 0600 on first use.
"""

import getpass
import logging
import os
import stat
from pathlib import Path

from rackforge import fileutil, paths
from rackforge.bmc import errors

LOG = logging.getLogger(__name__)

DEFAULT_PASSWORD_ENV = "RACKFORGE_BMC_PASSWORD"
MAX_PASSWORD_FILE = 4096
KEY_ENV = "RACKFORGE_CLUSTER_KEY_FILE"

# Factory defaults still shipped on real hardware (user, password).
WELL_KNOWN_DEFAULTS = {
    ("root", "calvin"), ("ADMIN", "ADMIN"), ("admin", "admin"), ("root", "root"),
    ("USERID", "PASSW0RD"), ("Administrator", "password"), ("root", "0penBmc"),
    ("admin", "password"), ("root", "changeme"),
}


def read_password(file=None, env=None, prompt=False, environ=None, ask=getpass.getpass):
    """The password from the first source given: ``file``, ``env``, then ``prompt``.

    The file's first line is the password (the line end, and a UTF-8 byte
    order mark before it, are dropped).  A file that others can read draws a
    warning.  With no source given, the variable :data:`DEFAULT_PASSWORD_ENV`
    is used if set.

    :raises: PasswordFileError, PasswordMissing
    """
    environ = os.environ if environ is None else environ
    if file:
        try:
            data = fileutil.read_limited(file, MAX_PASSWORD_FILE)
            st = os.stat(file)
            text = data.decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise errors.PasswordFileError(path=file, why=getattr(e, "strerror", None) or
                                           "not UTF-8 text") from None
        if st.st_mode & (stat.S_IRGRP | stat.S_IROTH):
            LOG.warning("BMC password file %s is readable by other users; chmod 600 it", file)
        lines = text.splitlines()
        return lines[0] if lines else ""
    if env:
        if env not in environ:
            raise errors.PasswordMissing()
        return environ[env]
    if prompt:
        return ask("BMC password: ")
    if DEFAULT_PASSWORD_ENV in environ:
        return environ[DEFAULT_PASSWORD_ENV]
    raise errors.PasswordMissing()


def check_login(username, password, label, insecure=False):
    """Refuse anonymous and empty-password logins unless ``insecure``; warn about defaults.

    :raises: InsecureRefused
    """
    if not insecure:
        if not username:
            raise errors.InsecureRefused(what="an anonymous login", bmc=label)
        if not password:
            raise errors.InsecureRefused(what="an empty password", bmc=label)
    if (username, password) in WELL_KNOWN_DEFAULTS:
        LOG.warning("BMC %s uses the factory-default password of user '%s': anyone who "
                    "knows the model can log in; set a per-node password", label, username)


# -- the cluster key -------------------------------------------------------------
def key_path():
    env = os.environ.get(KEY_ENV)
    return Path(env) if env else paths.state_dir() / "cluster.key"


def load_key(path=None, create=True):
    """The cluster key's bytes; created (0600, atomically, never clobbering) if missing.

    :raises: ClusterKeyError
    """
    from cryptography.fernet import Fernet

    path = Path(path) if path else key_path()
    try:
        return _read_key(path)
    except FileNotFoundError:
        if not create:
            raise errors.ClusterKeyError(path=path, why="missing; enroll creates it, or copy "
                                         "it from the seed node")
    try:
        fileutil.make_dirs(path.parent, 0o700)
        tmp = path.with_name(".%s.%d.new" % (path.name, os.getpid()))
        fileutil.atomic_write(tmp, Fernet.generate_key() + b"\n", mode=0o600)
        try:
            os.link(tmp, path)      # fails if another process created it first
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        LOG.info("created the cluster key %s", path)
        return _read_key(path)
    except OSError as e:
        raise errors.ClusterKeyError(path=path, why=e.strerror or str(e))


def _read_key(path):
    with open(path, "rb") as f:
        key = f.read().strip()
    if len(key) != 44:
        raise errors.ClusterKeyError(path=path, why="not a Fernet key (44 base64 characters)")
    return key


def encrypt(password, key):
    """A Fernet token (str) of ``password`` under ``key``."""
    from cryptography.fernet import Fernet
    return Fernet(key).encrypt(password.encode("utf-8")).decode("ascii")


def decrypt(token, key, node="the node", path=None):
    """The password from a token made by :func:`encrypt`.  :raises: CredentialDecryptError"""
    from cryptography.fernet import Fernet, InvalidToken
    try:
        return Fernet(key).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError, AttributeError):
        raise errors.CredentialDecryptError(node=node, path=path or key_path())


class RedactingFilter(logging.Filter):
    """Replaces the given secrets by ``***`` in every record that passes a handler."""

    def __init__(self, secrets):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record):
        if self.secrets:
            text = record.getMessage()
            clean = errors.redact(text, self.secrets)
            if clean != text:
                record.msg, record.args = clean, ()
        return True
