"""No secret leaves the build: what package scripts generate at install time is found here.

Element ``rackforge-base`` removes what Debian's package scripts create at
install time (its ``finalise.d/90-rackforge-node-identity``); this check,
run on every root tree before anything is packed, fails the build if any of
it is still there, or any other PEM private key under the directories where
configuration and state live.  A new package that makes a secret of its own
therefore stops the build instead of shipping it to every rack.
"""

import re
from pathlib import Path

#: files that must never be in an image (relative to its root), globs allowed
KNOWN = (
    "var/lib/rabbitmq/.erlang.cookie",
    "etc/ssl/private/ssl-cert-snakeoil.key",
    "etc/ssh/ssh_host_*_key",
    "var/lib/openstack-dashboard/secret-key/.secret_key_store",
    "etc/keystone/fernet-keys/*",
    "etc/keystone/credential-keys/*",
    "etc/ceph/*.keyring",
    "var/lib/ceph/*/*/keyring",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
)
#: where any PEM private key is a finding
SCANNED = ("etc", "var/lib", "root", "home", "srv", "opt")
MAX_SCAN_BYTES = 1 << 20
# a real PEM block: the header on a line of its own and base64 below it (a
# JavaScript library that mentions the header in a string is not a key)
PEM_KEY = re.compile(rb"(?m)^-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n"
                     rb"(?:[A-Za-z0-9-]+: [^\n]*\n)*\r?\n?[A-Za-z0-9+/=]{40,}")


def _pem_keys(root):
    for top in SCANNED:
        base = root / top
        if not base.is_dir():
            continue
        for path in base.rglob("*"):
            try:
                if path.is_symlink() or not path.is_file() or \
                        path.stat().st_size > MAX_SCAN_BYTES:
                    continue
                with open(path, "rb") as f:
                    head = f.read(MAX_SCAN_BYTES)
            except OSError:
                continue
            if PEM_KEY.search(head):
                yield path


def find(root):
    """Sorted paths (relative to ``root``) of secrets left in the tree, and a
    machine-id that is not ``uninitialized`` or empty."""
    root = Path(root)
    found = set()
    for pattern in KNOWN:
        found.update(p for p in root.glob(pattern) if p.is_file() or p.is_symlink())
    found.update(_pem_keys(root))
    out = sorted(str(p.relative_to(root)) for p in found)
    machine_id = root / "etc" / "machine-id"
    if machine_id.is_file() and machine_id.read_text().strip() not in ("", "uninitialized"):
        out.append("etc/machine-id (holds an id: every node would share it)")
    return out
