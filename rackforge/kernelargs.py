"""The ``rackforge.*`` kernel arguments: written by the boot service, read by the node.

The PXE service (``pxe/bootscript.py``) puts what a booting node needs to find
the seed on its kernel command line, and first boot (``firstboot/bootstrap.py``)
reads it back.  Both go through this module, so the names are written once::

    rackforge.mode=discover|install|local   what this boot is for
    rackforge.seed=ADDRESS                  the seed's address
    rackforge.server=URL                    the boot server (http://SEED:PORT)
    rackforge.cluster=NAME                  the cluster's name
    rackforge.node=ID                       the node's registry id, once known
    rackforge.answer=URL                    the installer's answer file (https only)
    rackforge.answer_pin=SHA256             the certificate that URL must present
    rackforge.join=URL                      a PXE install or discovery boot: the join
                                            service that answers the install and discovery
                                            APIs (https://SEED:PORT)
    rackforge.ca=PIN                        a PXE install or discovery boot: the cluster
                                            CA's pin (sha256:...), checked before anything
                                            is sent

Never a secret: the command line is readable by every user of the node and
travels in clear over the boot network.  Values are single words (no blanks
and no quotes, which the kernel's own splitting would mangle).  A node
installing over PXE proves who it is to the install API
(``bringup/installapi.py``) with its MACs and serial and gets its join token
there, over TLS pinned by ``rackforge.ca``: never on the command line.  A
discovery boot reports the machine (``bringup/discoverapi.py``) the same way.
"""

import re
import shlex

from rackforge import errors

PREFIX = "rackforge."
#: argument name -> what it carries, in the order they are written
FIELDS = {
    "mode": "what this boot is for",
    "seed": "the seed's address",
    "server": "the boot server's URL",
    "cluster": "the cluster's name",
    "node": "the node's registry id",
    "answer": "the installer's answer file (an https:// URL)",
    "answer_pin": "the SHA-256 of that server's certificate",
    "join": "the join service's URL, for the install and discovery APIs (PXE install and "
            "discovery boots)",
    "ca": "the cluster CA's sha256 pin (PXE install and discovery boots)",
}
_VALUE_RE = re.compile(r"^[^\s\"'\\]{1,512}\Z")


class BadKernelArg(errors.ConfigError):
    message = "kernel argument {prefix}{name}={value!r} cannot be written: {why}"


def format(**values):
    """``rackforge.K=V ...`` for the given fields (None values are left out)."""
    words = []
    for name in FIELDS:
        value = values.pop(name, None)
        if value is None:
            continue
        value = str(value)
        if not _VALUE_RE.match(value):
            raise BadKernelArg(prefix=PREFIX, name=name, value=value,
                               why="a value is one word of at most 512 characters")
        words.append("%s%s=%s" % (PREFIX, name, value))
    if values:
        name = sorted(values)[0]
        raise BadKernelArg(prefix=PREFIX, name=name, value=values[name],
                           why="known names are " + ", ".join(FIELDS))
    return " ".join(words)


def parse(text):
    """The ``rackforge.*`` fields of a kernel command line, as a dict; others ignored."""
    try:
        words = shlex.split(text or "")
    except ValueError:
        words = (text or "").split()
    out = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key.startswith(PREFIX) or not value:
            continue
        name = key[len(PREFIX):]
        if name in FIELDS:
            out[name] = value
    return out
