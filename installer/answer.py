"""The installer's answers: what to install where, from an answer file or the TUI.

One model, two front ends (subiquity's idea): an answer file is read into
:class:`Answers` with :func:`load`; the TUI fills the same object one screen
at a time with :meth:`Answers.set`, which checks that section alone.  The
install plan (``plan.py``) is made from an :class:`Answers` and nothing else.

The answer file, ``version: 1``::

    version: 1
    hostname: node1                       # an RFC 1123 label
    disk:
      match: {serial: "S64GNE0R8*"}       # or an ordered list of such mappings
      wipe: never                         # or force (disks.py says when it applies)
    network: {interface: eno1, address: 10.0.0.11/24, gateway: 10.0.0.1}
    cluster:
      create: {name: rack1, vip: 10.0.0.100}      # the first node (the seed), or:
      # join: {endpoints: [https://10.0.0.11:9443], token: ID.SECRET, ca_sha256: sha256:...}
    ssh_authorized_keys: ["ssh-ed25519 AAAA... op@laptop"]   # optional: root's keys

``network`` *is* firstboot's ``management`` mapping and is checked by
:func:`rackforge.firstboot.netspec.parse`; ``cluster`` maps onto firstboot's
bootstrap file (:meth:`Answers.bootstrap`), which
:func:`rackforge.firstboot.bootstrap.parse` checks once every section is
right, so the installed node reads what was validated here.

The schema is strict: an unknown key, a value of the wrong type or a bad
value is a :class:`Problem`, and every problem of the file is collected into
one :class:`AnswerInvalid`, one line each: ``FILE:LINE: key.path: what is
wrong; what to do``.  A file of another ``version`` is reported for that
alone.  The file may hold the cluster's join token, so it is read under
``yamlfile.NODE`` limits (no aliases, nothing quoted from the file in a YAML
error); no value under ``cluster.join`` is ever quoted, any other value that
looks like a join token is not quoted either, an unknown key is shown only
if it is a plain word, and the token itself is scrubbed from every line.
"""

import base64
import binascii
import copy
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from rackforge import errors, yamlfile
from rackforge.firstboot import bootstrap, netspec
from rackforge.installer import disks

VERSION = 1
LIMITS = yamlfile.NODE              # 64 KiB, no aliases, nothing quoted: it holds a token
EXAMPLES = Path(__file__).resolve().parent / "examples"

TOP_KEYS = ("version", "hostname", "disk", "network", "cluster", "ssh_authorized_keys")
SECTIONS = ("hostname", "disk", "network", "cluster", "ssh_authorized_keys")
REQUIRED = ("hostname", "disk", "network", "cluster")
DISK_KEYS = ("match", "wipe")
CLUSTER_KEYS = ("create", "join")
CREATE_KEYS = ("name", "vip")
JOIN_KEYS = ("endpoints", "token", "ca_sha256")

HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
SSH_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                 "ecdsa-sha2-nistp521", "ssh-rsa")
#: anything that could be a join token (ID.SECRET) is never quoted, wherever it is
TOKEN_LIKE = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}", re.I)
PLAIN_KEY = re.compile(r"[a-z_]{1,32}\Z")
FROM_TOKEN = "copy it from 'rackforge cluster token create --json' on a controller"


# -- problems and errors -----------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One thing wrong with the answers.

    ``key`` is the dotted key as shown (``disk.match[1].size``; "" for the whole
    file), ``text`` what is wrong and what to do, ``at`` the real key, for its
    line, where ``key`` hides part of it (an unknown key that is not a plain word).
    """

    key: str
    text: str
    at: Optional[str] = None

    def __str__(self):
        return errors.printable(": ".join(p for p in (self.key, self.text) if p))

    def line(self, where=None, lines=None):
        """``FILE:LINE: key: text`` (the line from ``lines``, see ``yamlfile.key_lines``)."""
        number = _line_of(lines or {}, self.at if self.at is not None else self.key)
        head = where and ("%s:%d" % (where, number) if number else str(where))
        return errors.printable(": ".join(p for p in (head, self.key, self.text) if p))


def _line_of(lines, key):
    """The line of ``key``, or of the nearest key above it that has one; 0 for none."""
    while key:
        if key in lines:
            return lines[key]
        parent = re.sub(r"(\.[^.\[\]]*|\[\d+\])\Z", "", key)
        if parent == key:
            break
        key = parent
    return 0


class AnswerInvalid(errors.ConfigError):
    """One or more problems in the answers.

    ``problems`` holds every :class:`Problem`; ``lines`` one line per problem
    (the first ``errors.MAX_LINES``, then "... and N more") with the file and
    line where known.  ``str()`` joins them with newlines and the CLI prints one
    per line.  ``secrets`` (the join token) are scrubbed from every line.
    """

    def __init__(self, problems, where="answers", lines=None, secrets=()):
        self.problems = list(problems)
        self.where = where
        shown = [_scrub(p.line(where, lines), secrets) for p in self.problems]
        self.lines = errors.capped(shown)
        super().__init__(self.lines[0] if self.lines else "%s: invalid answers" % where)
        self.args = ("\n".join(self.lines),)


class AnswerUnreadable(errors.ConfigError):
    message = "{where}: {problem}; fix the answer file"


class AnswerMissing(errors.ConfigError):
    message = "{path}: no such answer file; give the path of one (examples: {examples})"


def _scrub(text, secrets):
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= 6:
            text = text.replace(secret, "(not shown)")
    return text


def _shown(key):
    """A key as it may be shown: only a plain word (a misplaced token is a key too)."""
    key = str(key)
    return key if PLAIN_KEY.match(key) else "(an unknown key)"


def _got(value):
    """How a value looks, for a message; never a string that could be a token."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        if TOKEN_LIKE.search(value):
            return "a value (not shown)"
        text = repr(value)
        return text if len(text) <= 42 else text[:39] + "..."
    return "a list" if isinstance(value, list) else "a mapping"


def _join(prefix, key):
    return "%s.%s" % (prefix, key) if prefix else str(key)


class _Report:
    """Collects problems: ``report(key, text, at=None)``."""

    def __init__(self):
        self.problems = []

    def __call__(self, key, text, at=None):
        self.problems.append(Problem(key, text, at))


def _mapping(value, key, keys, report, fix):
    """``value`` if it is a mapping (unknown keys reported), else None (reported)."""
    if not isinstance(value, dict):
        report(key, "must be a mapping, got %s; %s" % (_got(value), fix))
        return None
    for name in value:
        if str(name) not in keys:
            report(_join(key, _shown(name)), "is not a key of %s; use only %s"
                   % (key or "the answer file", ", ".join(keys)), at=_join(key, name))
    return value


def _string(value, key, report, fix):
    """``value`` if it is a non-empty string, else None (reported)."""
    if isinstance(value, str) and value:
        return value
    report(key, "must be a non-empty string, got %s; %s" % (_got(value), fix))
    return None


def _number(value, key, report, fix):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        report(key, "must be a number above 0, got %s; %s" % (_got(value), fix))
        return None
    return value


def _choice(value, key, choices, report):
    if isinstance(value, str) and value in choices:
        return value
    name = key.rsplit(".", 1)[-1]
    report(key, "%s is not one of %s; write %s" % (
        _got(value), ", ".join(choices), " or ".join("%s: %s" % (name, c) for c in choices)))
    return None


# -- the sections ------------------------------------------------------------------------
@dataclass
class Create:
    """``cluster.create``: this node is the seed of a new cluster."""
    name: str
    vip: Optional[str] = None

    def to_dict(self):
        return {"name": self.name, **({"vip": self.vip} if self.vip else {})}


@dataclass
class Join:
    """``cluster.join``: this node joins a cluster (the token is never in a repr)."""
    endpoints: list
    token: str = field(repr=False)
    ca_sha256: str = None

    def to_dict(self):
        return {"endpoints": list(self.endpoints), "token": self.token,
                "ca_sha256": self.ca_sha256}


def _parse_hostname(value, report):
    fix = "use 1 to 63 letters, digits and '-', not starting or ending with '-'"
    name = _string(value, "hostname", report, fix)
    if name is not None and not HOSTNAME_RE.match(name):
        report("hostname", "%s is not a host name (an RFC 1123 label); %s" % (_got(name), fix))
        return None
    return name


def _parse_disk(value, report):
    d = _mapping(value, "disk", DISK_KEYS, report,
                 "write 'disk: {match: {serial: ...}, wipe: never}'")
    if d is None:
        return None
    specs, listed = _match(d.get("match"), report)
    wipe = _choice(d.get("wipe", "never"), "disk.wipe", disks.WIPE_POLICIES, report)
    if wipe is None or not specs or None in specs:
        return None
    return disks.DiskAnswer(match=specs, wipe=wipe, listed=listed)


def _match(match, report):
    """``([MatchSpec or None], listed)`` of ``disk.match``."""
    if match is None:
        report("disk.match", "is missing; name the target disk, like 'match: {serial: "
               "S3Z*}' or 'match: {size: largest}' (see 'rackforge firstboot inventory')")
        return [], False
    if isinstance(match, dict):
        return [_spec(match, "disk.match", report)], False
    if isinstance(match, list):
        if not match:
            report("disk.match", "is an empty list; give at least one match")
        return [_spec(m, "disk.match[%d]" % i, report) for i, m in enumerate(match)], True
    report("disk.match", "must be a mapping or a list of mappings, got %s; write "
           "'match: {serial: ...}'" % _got(match))
    return [], False


def _spec(value, key, report):
    m = _mapping(value, key, disks.MATCH_KEYS, report,
                 "write it like {serial: 'S3Z*'} or {wwn: ..., size: largest}")
    if m is None:
        return None
    before = len(report.problems)
    given = {}
    for name in disks.GLOB_KEYS:
        if name in m:
            given[name] = _string(m[name], _join(key, name), report,
                                  "write a glob like 'S3Z*' (see 'rackforge firstboot "
                                  "inventory' for this machine's disks)")
    for name in disks.SIZE_KEYS:
        if name in m:
            given[name] = _number(m[name], _join(key, name), report, "write a size in GiB")
    if "size" in m:
        given["size"] = _choice(m["size"], _join(key, "size"), disks.SIZES, report)
    low, high = given.get("min_gib"), given.get("max_gib")
    if low is not None and high is not None and low > high:
        report(_join(key, "min_gib"), "is larger than max_gib (%s > %s); swap them" % (low, high))
    if not m:
        report(key, "names no disk; give serial, wwn, model, vendor, by_path, min_gib, "
               "max_gib or size")
    if len(report.problems) > before or not m:
        return None
    return disks.MatchSpec(**given)


def _parse_network(value, report):
    """firstboot's management mapping, checked by ``netspec.parse`` (its first problem)."""
    try:
        netspec.parse(value)
    except netspec.NetworkSpecError as e:
        k = e.kwargs
        got = "" if TOKEN_LIKE.search(k.get("got", "")) else k.get("got", "")
        report(_join("network", k["field"]) if k.get("field") else "network",
               "%s%s; %s" % (k["problem"], got, k["fix"]),
               at=_join("network", k["key"]) if k.get("key") else "network")
        return None
    return copy.deepcopy(value)


def _parse_cluster(value, report):
    c = _mapping(value, "cluster", CLUSTER_KEYS, report,
                 "write 'cluster: {create: {name: rack1, vip: ...}}' or 'cluster: {join: "
                 "{endpoints, token, ca_sha256}}'")
    if c is None:
        return None
    if "create" in c and "join" in c:
        report("cluster", "has both create and join; keep 'create' on the first node (the "
               "seed) and 'join' on every other node")
    elif "create" not in c and "join" not in c:
        report("cluster", "needs 'create: {name, vip}' on the first node or 'join: "
               "{endpoints, token, ca_sha256}' on every other node")
    before = len(report.problems)
    create = _create(c["create"], report) if "create" in c else None
    joins = _join_section(c["join"], report) if "join" in c else None
    if len(report.problems) > before or (create is None) == (joins is None):
        return None
    return create or joins


def _create(value, report):
    c = _mapping(value, "cluster.create", CREATE_KEYS, report,
                 "write 'create: {name: rack1, vip: 10.0.0.100}'")
    if c is None:
        return None
    fix = "use 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-', like rack1"
    name = c.get("name")
    if name is None:
        report("cluster.create.name", "is missing; name the new cluster, like 'name: rack1'")
    elif not isinstance(name, str) or not bootstrap.CLUSTER_RE.match(name):
        report("cluster.create.name", "%s is not a cluster name; %s" % (_got(name), fix))
        name = None
    vip = c.get("vip")
    if vip is not None:
        try:
            vip = str(ipaddress.IPv4Address(vip)) if isinstance(vip, str) else None
        except ValueError:
            vip = None
        if vip is None:
            report("cluster.create.vip", "%s is not an IPv4 address; write the management "
                   "VIP like 'vip: 10.0.0.100' (a free address of the management network)"
                   % _got(c["vip"]))
            return None
    return Create(name=name, vip=vip) if name else None


def _join_section(value, report):
    """``cluster.join``: no value of it is ever quoted (the token is a secret)."""
    if not isinstance(value, dict):
        report("cluster.join", "must be a mapping; write 'join: {endpoints: [https://...], "
               "token: ..., ca_sha256: sha256:...}' (%s)" % FROM_TOKEN)
        return None
    _mapping(value, "cluster.join", JOIN_KEYS, report, "")
    for key in JOIN_KEYS:
        if value.get(key) in (None, "", []):
            report("cluster.join." + key, "is missing; " + FROM_TOKEN)
    endpoints = value.get("endpoints")
    if endpoints not in (None, "", []):
        if not isinstance(endpoints, list):
            report("cluster.join.endpoints", "must be a list of https:// URLs; write "
                   "'endpoints: [https://10.0.0.11:9443]'")
        else:
            for i, endpoint in enumerate(endpoints):
                if not isinstance(endpoint, str) or not bootstrap.ENDPOINT_RE.fullmatch(endpoint):
                    report("cluster.join.endpoints[%d]" % i, "is not an https:// URL with a "
                           "host and port; write it like https://10.0.0.11:9443")
    token = value.get("token")
    if token not in (None, "") and (not isinstance(token, str)
                                    or not bootstrap.TOKEN_RE.match(token)):
        report("cluster.join.token", "is not a join token (ID.SECRET: 6 and 16 of a-z, "
               "0-9); copy the token printed by 'rackforge cluster token create'")
    pin = value.get("ca_sha256")
    if pin not in (None, ""):
        pin = pin.lower() if isinstance(pin, str) else None
        if pin is None or not bootstrap.PIN_RE.match(pin):
            report("cluster.join.ca_sha256", "is not a CA pin (sha256: and 64 hex digits); "
                   + FROM_TOKEN)
    return Join(endpoints=list(endpoints), token=token, ca_sha256=pin) \
        if isinstance(endpoints, list) and token and pin else None


def _parse_ssh_keys(value, report):
    if not isinstance(value, list):
        report("ssh_authorized_keys", "must be a list of public keys, got %s; write "
               "'ssh_authorized_keys: [\"ssh-ed25519 AAAA... you@laptop\"]'" % _got(value))
        return None
    before = len(report.problems)
    seen = set()
    keys = []
    for i, line in enumerate(value):
        key = "ssh_authorized_keys[%d]" % i
        problem = ssh_key_problem(line)
        if problem:
            report(key, problem)
            continue
        parts = line.split()
        if tuple(parts[:2]) in seen:
            report(key, "is the same key as one above it; list each key once")
        seen.add(tuple(parts[:2]))
        keys.append(" ".join(parts))
    return keys if len(report.problems) == before else None


def ssh_key_problem(line):
    """What is wrong with the authorized_keys line ``line`` (type, base64 key, optional
    comment; no options), or None.  The key itself is never quoted."""
    fix = ("paste one public key line, like 'ssh-ed25519 AAAA... you@laptop' (the "
           "content of ~/.ssh/id_ed25519.pub)")
    if not isinstance(line, str) or not line.strip():
        return "must be a public key line, got %s; %s" % (_got(line), fix)
    if any(ch in line for ch in "\r\n\0"):
        return "holds a line break; " + fix
    parts = line.split()
    kind = parts[0]
    if kind not in SSH_KEY_TYPES:
        return "does not start with a key type (%s); %s" % (", ".join(SSH_KEY_TYPES), fix)
    if len(parts) < 2:
        return "has no key after %s; %s" % (kind, fix)
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return "the key after %s is not base64; %s" % (kind, fix)
    # the key's first field is its own type, length-prefixed (RFC 4253, 6.6)
    name = kind.encode()
    if blob[:4] != len(name).to_bytes(4, "big") or blob[4:4 + len(name)] != name:
        return "the key after %s is not a %s key (cut or mixed up?); %s" % (kind, kind, fix)
    return None


PARSERS = {"hostname": _parse_hostname, "disk": _parse_disk, "network": _parse_network,
           "cluster": _parse_cluster, "ssh_authorized_keys": _parse_ssh_keys}


def parse_section(name, value):
    """``(parsed value or None, [Problem])`` of one section, for one TUI screen.

    ``name`` is one of :data:`SECTIONS`; ``value`` as an answer file holds it
    (``parse_section("disk", {"match": {"serial": "S3Z*"}})``).
    """
    report = _Report()
    parsed = PARSERS[name](value, report)
    return (None if report.problems else parsed), report.problems


def check_section(name, value):
    """The problems of one section (empty if it is right)."""
    return parse_section(name, value)[1]


# -- the answers ---------------------------------------------------------------------------
@dataclass
class Answers:
    """Everything the installer needs to know; filled from a file or by the TUI.

    Each section holds checked data or None (not answered yet): ``disk`` a
    :class:`disks.DiskAnswer`, ``network`` firstboot's management mapping as
    written, ``cluster`` a :class:`Create` or :class:`Join`.
    """

    hostname: Optional[str] = None
    disk: Optional[disks.DiskAnswer] = None
    network: Optional[dict] = None
    cluster: Union[Create, Join, None] = None
    ssh_authorized_keys: list = field(default_factory=list)
    version: int = VERSION
    where: str = field(default="answers", compare=False, repr=False)   # for messages
    lines: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def mode(self):
        """create, join, or None before the cluster section is answered."""
        return {Create: "create", Join: "join"}.get(type(self.cluster))

    def set(self, name, value):
        """Check ``value`` as section ``name`` and keep it if right; the problems."""
        parsed, problems = parse_section(name, value)
        if not problems:
            setattr(self, name, parsed)
        return problems

    def missing(self):
        """The required sections not answered yet."""
        return [name for name in REQUIRED if getattr(self, name) is None]

    def problems(self):
        """Every problem of the answers as they stand: sections missing, then what only
        the whole shows (firstboot's bootstrap check: the VIP in the management network)."""
        problems = [Problem(name, "is missing; " + MISSING_FIX[name])
                    for name in self.missing()]
        if not problems:
            problems = _bootstrap_problems(self.bootstrap())
        return problems

    def check(self):
        """``self`` if complete and right, else raise :class:`AnswerInvalid`."""
        problems = self.problems()
        if problems:
            raise AnswerInvalid(problems, self.where, self.lines, self.secrets())
        return self

    def secrets(self):
        return (self.cluster.token,) if isinstance(self.cluster, Join) else ()

    def bootstrap(self):
        """The bootstrap mapping firstboot reads on the installed node
        (``firstboot/bootstrap.py``), a new dict: seed or join, and the management
        network.  It holds the join token: write it 0600, never log it."""
        if isinstance(self.cluster, Create):
            out = {"seed": True, "cluster": self.cluster.name}
            if self.cluster.vip:
                out["vip"] = self.cluster.vip
        elif isinstance(self.cluster, Join):
            out = {"join": self.cluster.to_dict()}
        else:
            out = {}
        if self.network is not None:
            out["management"] = copy.deepcopy(self.network)
        return out

    def to_dict(self):
        """The answers as an answer file holds them (``from_dict`` reads it back)."""
        out = {"version": self.version}
        if self.hostname is not None:
            out["hostname"] = self.hostname
        if self.disk is not None:
            out["disk"] = self.disk.to_dict()
        if self.network is not None:
            out["network"] = copy.deepcopy(self.network)
        if self.cluster is not None:
            out["cluster"] = {self.mode: self.cluster.to_dict()}
        if self.ssh_authorized_keys:
            out["ssh_authorized_keys"] = list(self.ssh_authorized_keys)
        return out

    @classmethod
    def from_dict(cls, data, where="answers", lines=None):
        """Checked :class:`Answers` from an answer file's data.

        :raises: :class:`AnswerInvalid` with every problem found.
        """
        lines = lines or {}
        secrets = _secrets_in(data)
        problems = _document_problems(data)
        if problems is not None:
            raise AnswerInvalid(problems, where, lines, secrets)
        report = _Report()
        _version(data, report)
        if _other_version(data):
            # another schema: its keys would all be wrong here, so that alone is said
            raise AnswerInvalid(report.problems, where, lines, secrets)
        _mapping(data, "", TOP_KEYS, report, "")
        answers = cls(where=where, lines=lines)
        for name in SECTIONS:
            if name in data:
                parsed, problems = parse_section(name, data[name])
                report.problems += problems
                setattr(answers, name, parsed)
            elif name in REQUIRED:
                report(name, "is missing; " + MISSING_FIX[name])
        if not report.problems:
            report.problems = _bootstrap_problems(answers.bootstrap())
        if report.problems:
            ordered = sorted(report.problems, key=lambda p: _line_of(
                lines, p.at if p.at is not None else p.key))
            raise AnswerInvalid(ordered, where, lines, secrets)
        return answers


MISSING_FIX = {
    "hostname": "add 'hostname: NAME' (this node's name)",
    "disk": "add 'disk: {match: {serial: ...}}' (the disk to install to)",
    "network": "add 'network: {interface: eno1, address: 10.0.0.11/24}' (the management "
               "network, or address: dhcp)",
    "cluster": "add 'cluster: {create: {name: rack1, vip: ...}}' on the first node or "
               "'cluster: {join: {...}}' on the others",
}


def _document_problems(data):
    """The one problem of a file that is not a mapping at all, or None."""
    if data is None:
        return [Problem("", "the file is empty; an answer file is a mapping that starts "
                            "with 'version: %d' (see installer/examples/)" % VERSION)]
    if not isinstance(data, dict):
        return [Problem("", "the top level must be a mapping, got %s; start the file with "
                            "'version: %d'" % (_got(data), VERSION))]
    return None


def _version(data, report):
    fix = "write 'version: %d' at the top (the schema is in installer/README.md)" % VERSION
    if "version" not in data:
        report("version", "is missing; " + fix)
        return
    version = data["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        report("version", "must be a whole number, got %s; %s" % (_got(version), fix))
    elif version != VERSION:
        report("version", "%d is not a version this installer reads (it reads %d); %s"
               % (version, VERSION, fix))


def _other_version(data):
    version = data.get("version")
    return isinstance(version, int) and not isinstance(version, bool) and version != VERSION


def _secrets_in(data):
    """The join token of the file's data, wherever the file is wrong, for scrubbing."""
    try:
        token = data["cluster"]["join"]["token"]
    except (TypeError, KeyError, IndexError):
        return ()
    return (token,) if isinstance(token, str) else ()


def _bootstrap_problems(mapping):
    """firstboot's own check of the bootstrap the answers make, as problems."""
    try:
        bootstrap.parse(mapping, where="answers")
    except bootstrap.BootstrapError as e:
        k = e.kwargs
        key = _ANSWER_KEY.get(str(k.get("key", "")).split(".")[0], "cluster")
        if str(k.get("key", "")).startswith(("management.", "join.")):
            key += "." + k["key"].split(".", 1)[1]
        if "problem" in k:
            text = "%s; %s" % (k["problem"], k["fix"])
        else:
            text = str(e).split(": ", 1)[-1]
        return [Problem(key, text)]
    return []


# the bootstrap file's keys, as the answer file calls them
_ANSWER_KEY = {"seed": "cluster.create", "cluster": "cluster.create.name",
               "vip": "cluster.create.vip", "join": "cluster.join", "management": "network"}


def load(path):
    """The checked :class:`Answers` of the answer file ``path``.

    :raises: :class:`AnswerMissing`, :class:`AnswerUnreadable` (not YAML within
        :data:`LIMITS`), :class:`AnswerInvalid` (every problem, one line each).
    """
    try:
        data, lines = yamlfile.load_with_lines(path, LIMITS)
    except FileNotFoundError:
        raise AnswerMissing(path=path, examples=EXAMPLES) from None
    except yamlfile.YamlError as e:
        raise AnswerUnreadable(where=e.kwargs["where"], problem=e.kwargs["problem"]) from None
    return Answers.from_dict(data, where=str(path), lines=lines)


def examples():
    """The example answer files shipped with the installer (``examples/*.yaml``)."""
    return sorted(EXAMPLES.glob("*.yaml"))
