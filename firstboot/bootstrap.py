"""The node's bootstrap file: is it the seed, or which cluster does it join, and how.

``/etc/rackforge/bootstrap.yaml`` (``$RACKFORGE_BOOTSTRAP`` overrides the path)
is written by the installer, an answer file or the kernel command line
generator.  Two forms::

    # the first node
    seed: true
    cluster: rack1                  # [a-z0-9-], 1 to 63 characters
    management: {interface: eno1, address: 10.0.0.5/24}   # netspec.py; optional
    role: controller                # optional pin: controller | compute

    # every other node
    join:
      endpoint: https://10.0.0.5:9443
      token: abcdef.0123456789abcdef
      ca_sha256: sha256:<64 hex>
    management: {...}
    role: compute

The file is read by ``rackforge.yamlfile`` under its ``NODE`` limits (64 KiB,
no aliases, bounded nesting, dates kept as text).  Every error is one
:class:`BootstrapError` line naming the file, the line where known, the
field and what to fix, and never a value from the file: the line goes to the
world-readable console banner, and a misplaced token is a value too.

:func:`from_cmdline` reads the ``rackforge.*`` kernel arguments that
``pxe/bootscript.py`` writes (``rackforge.seed=ADDRESS``,
``rackforge.cluster=NAME``, ``rackforge.mode=KIND``, ``rackforge.server=URL``,
``rackforge.node=ID``) into a *partial* bootstrap: never a secret, so never
enough to join alone; :func:`load` merges it under the file (the file wins).
"""

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from rackforge import errors, kernelargs, yamlfile
from rackforge.firstboot import netspec

DEFAULT_PATH = "/etc/rackforge/bootstrap.yaml"
CMDLINE = "/proc/cmdline"
TOP_KEYS = {"seed", "cluster", "join", "management", "role", "boot", "vip"}
JOIN_KEYS = {"endpoints", "endpoint", "token", "ca_sha256"}
ENDPOINT_RE = re.compile(r"https://[A-Za-z0-9.:\[\]-]+/?")      # host or [v6], port
BOOT_KEYS = set(kernelargs.FIELDS) - {"cluster"}
ROLES = ("controller", "compute")
CLUSTER_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}\Z")
PIN_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")


class BootstrapError(errors.ConfigError):
    """A field of the bootstrap file is missing or wrong."""
    message = "bootstrap file {path}: '{field}' {problem}; {fix}"


class BootstrapUnreadable(BootstrapError):
    """The file cannot be read or is not YAML within the limits."""
    message = "bootstrap file {where}: {problem}; fix the file (or what wrote it)"


class BootstrapMissing(errors.ConfigError):
    message = ("no bootstrap file at {path}: waiting for one (the installer, an answer "
               "file or the kernel command line writes it)")


@dataclass
class Join:
    endpoints: list
    token: str
    ca_sha256: str


@dataclass
class Bootstrap:
    seed: bool = False
    cluster: str = None
    join: Join = None
    management: netspec.NetworkSpec = None
    management_raw: dict = None
    role: str = None
    vip: str = None                             # the seed's: the cluster's management VIP
    boot: dict = field(default_factory=dict)    # from the kernel command line
    path: str = None

    @property
    def mode(self):
        return "seed" if self.seed else "join"


def path():
    return Path(os.environ.get("RACKFORGE_BOOTSTRAP", DEFAULT_PATH))


def read_cmdline():
    """This boot's kernel command line (:data:`CMDLINE`); empty if it cannot be read."""
    try:
        return Path(CMDLINE).read_text()
    except OSError:
        return ""


def boot_mode(cmdline=None):
    """What this boot is for (``rackforge.mode=``: discover, install, local), or None."""
    return kernelargs.parse(read_cmdline() if cmdline is None else cmdline).get("mode")


def _bad(where, field_, problem, fix, key=None):
    """The error for ``field_`` (as shown); ``key`` is the real dotted key, for its line."""
    return BootstrapError(path=where, field=field_, problem=problem, fix=fix,
                          key=key or field_)


def from_cmdline(text):
    """The ``rackforge.*`` kernel arguments of ``text`` as a partial bootstrap mapping.

    ``{"cluster": NAME, "boot": {"mode", "seed", "server", "node"}}`` with only
    the keys present; other arguments are ignored.
    """
    fields = kernelargs.parse(text)
    out = {"cluster": fields.pop("cluster")} if "cluster" in fields else {}
    if fields:
        out["boot"] = fields
    return out


def _shown(key):
    """A key as it may be shown in an error: only a plain word.  The console banner is
    world-readable, and a misplaced token is a key too (``abcdef.0123...: x``)."""
    return key if re.fullmatch(r"[a-z_]{1,32}", key) else "(an unknown key)"


def parse(data, where="bootstrap.yaml"):
    """A validated :class:`Bootstrap` from the mapping ``data``."""
    if not isinstance(data, dict):
        raise _bad(where, "(top)", "must be a mapping",
                   "write 'seed: true' and 'cluster: NAME', or a 'join:' mapping")
    unknown = sorted(set(map(str, data)) - TOP_KEYS)
    if unknown:
        raise _bad(where, _shown(unknown[0]), "is not a bootstrap key",
                   "use only %s" % ", ".join(sorted(TOP_KEYS)), key=unknown[0])
    seed = data.get("seed", False)
    if not isinstance(seed, bool):
        raise _bad(where, "seed", "must be true or false",
                   "write 'seed: true' on the first node only")
    joins = data.get("join")
    if seed and joins is not None:
        raise _bad(where, "join", "is set on a seed",
                   "remove 'join:' (the seed creates the cluster) or 'seed: true'")
    if not seed and joins is None:
        raise _bad(where, "join", "is missing",
                   "add 'join: {endpoint, token, ca_sha256}' from 'rackforge cluster token "
                   "create --json', or 'seed: true' and 'cluster: NAME' on the first node")
    result = Bootstrap(seed=seed, path=str(where))
    cluster = data.get("cluster")
    if seed and cluster is None:
        raise _bad(where, "cluster", "is missing", "name the new cluster, like 'cluster: rack1'")
    if cluster is not None:
        if not isinstance(cluster, str) or not CLUSTER_RE.match(cluster):
            raise _bad(where, "cluster", "is not a cluster name",
                       "use 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'")
        result.cluster = cluster
    if joins is not None:
        result.join = _parse_join(joins, where)
    role = data.get("role")
    if role is not None:
        if role not in ROLES:
            raise _bad(where, "role", "is not a role",
                       "write 'role: controller' or 'role: compute', or remove it")
        result.role = role
    boot = data.get("boot") or {}
    if not isinstance(boot, dict) or set(map(str, boot)) - BOOT_KEYS:
        raise _bad(where, "boot", "must be a mapping of %s" % ", ".join(sorted(BOOT_KEYS)),
                   "remove it (the kernel command line fills it)")
    result.boot = {str(k): str(v) for k, v in boot.items()}
    mgmt = data.get("management")
    if mgmt is not None:
        try:
            result.management = netspec.parse(mgmt)
        except netspec.NetworkSpecError as exc:
            # the spec's own line quotes values; here none is shown
            raise BootstrapError("bootstrap file %s: %s" % (where, netspec.without_values(exc)),
                                 key="management." + exc.kwargs["key"]) from None
        result.management_raw = mgmt
    vip = data.get("vip")
    if vip is not None:
        if not seed:
            raise _bad(where, "vip", "is set on a joining node",
                       "remove it: the seed's bootstrap file names the cluster's VIP")
        try:
            parsed = ipaddress.IPv4Address(vip) if isinstance(vip, str) else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise _bad(where, "vip", "is not an IPv4 address",
                       "write the management VIP like 'vip: 10.0.0.100'")
        spec = result.management
        if spec is not None and not spec.dhcp:
            iface = ipaddress.ip_interface(spec.address)
            if parsed not in iface.network or parsed == iface.ip:
                raise _bad(where, "vip", "is not a free address of the management network "
                           "(%s)" % iface.network,
                           "pick an unused address of %s, not this node's" % iface.network)
        result.vip = str(parsed)
    return result


def _parse_join(joins, where):
    if not isinstance(joins, dict):
        raise _bad(where, "join", "must be a mapping",
                   "write 'join: {endpoints: [https://...], token: ID.SECRET, "
                   "ca_sha256: sha256:...}'")
    unknown = sorted(set(map(str, joins)) - JOIN_KEYS)
    if unknown:
        raise _bad(where, "join." + _shown(unknown[0]), "is not a join key",
                   "use only endpoints (or endpoint), token and ca_sha256",
                   key="join." + unknown[0])
    if "endpoint" in joins and "endpoints" in joins:
        raise _bad(where, "join.endpoint", "is given beside join.endpoints",
                   "keep one: endpoints lists every controller's join service")
    endpoints = joins.get("endpoints", joins.get("endpoint"))
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    for key in ("token", "ca_sha256"):
        if not joins.get(key):
            raise _bad(where, "join." + key, "is missing",
                       "copy it from 'rackforge cluster token create --json' on a controller")
    given = "join.endpoints" if "endpoints" in joins else "join.endpoint"
    if not endpoints or not isinstance(endpoints, list):
        raise _bad(where, "join.endpoints", "is missing",
                   "copy it from 'rackforge cluster token create --json' on a controller",
                   key=given)
    for endpoint in endpoints:
        if not isinstance(endpoint, str) or not ENDPOINT_RE.fullmatch(endpoint):
            raise _bad(where, "join.endpoints", "holds something that is not an https:// URL",
                       "write each like https://10.0.0.5:9443", key=given)
    token = joins["token"]
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        raise _bad(where, "join.token", "is not a join token (ID.SECRET, 6 + 16 of a-z0-9)",
                   "copy the token printed by 'rackforge cluster token create'")
    # a hash's hex digits may come in either case: folded before it is checked
    pin = joins["ca_sha256"].lower() if isinstance(joins["ca_sha256"], str) else None
    if pin is None or not PIN_RE.match(pin):
        raise _bad(where, "join.ca_sha256", "is not a CA pin (sha256:<64 lower-case hex>)",
                   "copy ca_sha256 from 'rackforge cluster token create --json'")
    return Join(endpoints=[e.rstrip("/") for e in endpoints], token=token, ca_sha256=pin)


def merge(base, over):
    """``over`` on top of ``base`` (both bootstrap mappings); ``boot`` merged key by key."""
    out = dict(base)
    for key, value in over.items():
        if key == "boot" and isinstance(value, dict):
            out["boot"] = {**(base.get("boot") or {}), **value}
        else:
            out[key] = value
    return out


def load(where=None, cmdline=None):
    """The bootstrap of this node; raises :class:`BootstrapMissing` when there is none.

    Any other problem is a :class:`BootstrapError` (one line, no value from the
    file in it); nothing else is raised for what the file holds.

    :param cmdline: kernel command line text (default: :data:`CMDLINE`), whose
        ``rackforge.*`` arguments fill what the file leaves out.
    """
    where = Path(where) if where else path()
    try:
        data, lines = yamlfile.load_with_lines(where, yamlfile.NODE)
    except FileNotFoundError:
        raise BootstrapMissing(path=where) from None
    except yamlfile.YamlError as exc:
        raise BootstrapUnreadable(where=exc.kwargs["where"], problem=exc.kwargs["problem"],
                                  path=where) from None
    if data is None:
        data = {}
    if cmdline is None:
        cmdline = read_cmdline()
    if isinstance(data, dict):
        data = merge(from_cmdline(cmdline), data)
    try:
        return parse(data, where)
    except BootstrapError as exc:
        line = lines.get(exc.kwargs.get("key"))
        if not line:
            raise
        # the same line with the file's line number: "bootstrap file PATH:LINE: ..."
        text = str(exc).replace(str(where), "%s:%d" % (where, line), 1)
        raise BootstrapError(text, **exc.kwargs) from None
