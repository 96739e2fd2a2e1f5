"""A small declarative schema for profile YAML, with line numbers.

Profiles are validated on the YAML node tree (``rackforge.yamlfile``'s
bounded composer), not on the loaded dict, so every problem carries the line
it is on.  A schema is built
from a handful of node checkers (``Str``, ``Int``, ``Enum``, ``List``,
``Map``, ``ListOrDelta``); each appends a ``Problem`` instead of raising, so
one run reports everything that is wrong in a file, one line each.

``parse(text, path)`` checks one profile file on its own.  What only the
merged ``extends`` chain can show (required keys, elements that exist) is
checked in ``rackforge.profile``.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from rackforge import errors, yamlfile

TAG = "tag:yaml.org,2002:"


def shown(path):
    """``path`` as the operator should read it: relative if under the current directory."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


@dataclass(frozen=True)
class Problem:
    """One thing wrong, printed as ``FILE:LINE: dotted.key: text``."""

    path: Path
    line: int       # 1-based; 0 when no line applies (an unreadable file)
    key: str        # dotted key, e.g. disk.esp_mib or elements[2]; "" for the whole file
    text: str

    def __str__(self):
        where = "%s:%d" % (shown(self.path), self.line) if self.line else shown(self.path)
        return errors.printable(": ".join(part for part in (where, short(self.key, 80),
                                                            self.text) if part))

    @classmethod
    def of(cls, error):
        """The problem a :class:`yamlfile.YamlError` reports."""
        k = error.kwargs
        return cls(k["path"], k["line"], k["key"], k["problem"])


def line_of(node):
    return node.start_mark.line + 1


def short(text, width=60):
    """``text`` cut to ``width`` characters for a message (a key or value may be huge)."""
    return text if len(text) <= width else text[:width - 3] + "..."


def describe(node):
    """How a value looks in the file, for messages: 'big', true, null, a list."""
    if isinstance(node, yaml.ScalarNode):
        return short(repr(node.value) if node.tag == TAG + "str" else node.value or "null")
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"


def is_scalar(node, kind):
    return isinstance(node, yaml.ScalarNode) and node.tag == TAG + kind


# -- checkers ----------------------------------------------------------------
class Checker:
    """Base: ``check(node, key, report)``; ``report(node, key, text)`` records a problem."""

    def check(self, node, key, report):
        raise NotImplementedError


class Str(Checker):
    def __init__(self, pattern=None, hint=""):
        self.pattern = re.compile(pattern) if pattern else None
        self.hint = hint

    def check(self, node, key, report):
        if not is_scalar(node, "str"):
            report(node, key, "must be a string, got %s" % describe(node))
        elif self.pattern and not self.pattern.fullmatch(node.value):
            report(node, key, "%r is not %s" % (node.value, self.hint))


class Int(Checker):
    """An integer in ``low..high`` (no upper bound if ``high`` is None); a YAML bool is not one."""

    def __init__(self, low, high=None, odd=False):
        self.low, self.high, self.odd = low, high, odd

    def check(self, node, key, report):
        if self.high is None:
            want = "an integer >= %d" % self.low
        else:
            want = "an integer between %d and %d" % (self.low, self.high)
        if not is_scalar(node, "int"):
            report(node, key, "must be %s, got %s" % (want, describe(node)))
            return
        # YAML 1.1 ints include 0777 (octal), 1_000 and 1:30; let PyYAML read them
        try:
            value = yaml.constructor.SafeConstructor().construct_yaml_int(node)
        except ValueError:          # 0b_, 0x, or more digits than Python converts
            report(node, key, "must be %s, got %s" % (want, describe(node)))
            return
        if value < self.low or (self.high is not None and value > self.high):
            report(node, key, "must be %s, got %d" % (want, value))
        elif self.odd and value % 2 == 0:
            report(node, key, "must be odd (a quorum needs a majority), got %d" % value)


class Bool(Checker):
    """true or false (YAML's bool)."""

    def check(self, node, key, report):
        if not is_scalar(node, "bool"):
            report(node, key, "must be true or false, got %s" % describe(node))


class Enum(Checker):
    def __init__(self, *values):
        self.values = values

    def check(self, node, key, report):
        if not (is_scalar(node, "str") and node.value in self.values):
            report(node, key, "must be one of %s, got %s"
                   % (", ".join(self.values), describe(node)))


class List(Checker):
    def __init__(self, item, non_empty=False):
        self.item, self.non_empty = item, non_empty

    def check(self, node, key, report):
        if not isinstance(node, yaml.SequenceNode):
            report(node, key, "must be a list, got %s" % describe(node))
            return
        if self.non_empty and not node.value:
            report(node, key, "must not be empty")
        seen = set()
        for i, item in enumerate(node.value):
            ikey = "%s[%d]" % (key, i)
            self.item.check(item, ikey, report)
            if isinstance(item, yaml.ScalarNode):
                if item.value in seen:
                    report(item, ikey, "%r is listed twice" % item.value)
                seen.add(item.value)


class Map(Checker):
    """A mapping with known keys; ``keys`` maps each key to its checker."""

    def __init__(self, keys):
        self.keys = keys

    def check(self, node, key, report):
        if not isinstance(node, yaml.MappingNode):
            report(node, key, "must be a mapping, got %s" % describe(node))
            return
        seen = set()
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                report(knode, key, "keys must be plain names, got %s" % describe(knode))
                continue
            sub = "%s.%s" % (key, knode.value) if key else knode.value
            if knode.value in seen:
                report(knode, sub, "given twice")
            seen.add(knode.value)
            checker = self.keys.get(knode.value)
            if checker is None:
                report(knode, sub, "unknown key; allowed: %s" % ", ".join(sorted(self.keys)))
            else:
                checker.check(vnode, sub, report)


class ListOrDelta(Checker):
    """A list, or ``{add: [...], remove: [...]}`` relative to the parent profile's list."""

    def __init__(self, item):
        self.as_list = List(item)
        self.as_delta = Map({"add": List(item), "remove": List(item)})

    def check(self, node, key, report):
        if isinstance(node, yaml.MappingNode):
            self.as_delta.check(node, key, report)
        else:
            self.as_list.check(node, key, report)


# -- the profile schema --------------------------------------------------------
ROLES = ("controller", "compute", "storage")
OUTPUTS = ("qcow2", "raw", "iso", "pxe")
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"         # element and profile names: never a path
DEB_PACKAGE = r"[a-z0-9][a-z0-9+.-]+"

PROFILE = Map({
    "description": Str(),
    "extends": Str(NAME, "a profile name"),
    "distro": Map({"name": Enum("debian"), "release": Enum("bookworm", "trixie")}),
    "elements": ListOrDelta(Str(NAME, "an element name")),
    "packages": ListOrDelta(Str(DEB_PACKAGE, "a Debian package name")),
    # converged: the controllers are compute nodes too (hci: a three-node rack is a cloud)
    "cluster": Map({"controllers": Int(1, 7, odd=True), "converged": Bool()}),
    "roles": Map({role: Map({"services": List(Str())}) for role in ROLES}),
    "network": Map({
        "management": Map({"interface": Str(), "mode": Enum("dhcp", "static")}),
        "bond": Map({"mode": Enum("active-backup", "802.3ad", "balance-alb")}),
        "vlan": Int(1, 4094),
        # the flat external network's interface on nodes that have one (OVS bridge
        # br-provider), and the physical network name Neutron knows it by
        "provider": Map({"interface": Str(r"[A-Za-z0-9_.:-]{1,15}", "an interface name"),
                         "physnet": Str(r"[A-Za-z0-9_-]{1,64}", "a physical network name")}),
    }),
    "storage": Map({"wipe": Enum("never", "force"), "min_disk_gib": Int(1),
                    # a test bed's: data disks as files in the node's data directory,
                    # or loop devices it hands the node (never a real rack's disks)
                    "file_disks": Map({"count": Int(1, 8), "size_gib": Int(4, 1024)}),
                    "test_devices": List(Str(r"/dev/loop[0-9]+", "a loop device"))}),
    "ceph": Map({"osd_memory_target_mib": Int(896, 65536),
                 "mon_memory_target_mib": Int(256, 16384),
                 "mon_data_avail_warn": Int(1, 50)}),
    # enabled: false runs the foundation and Ceph alone (a storage rack; the foundation's
    # own tests)
    "openstack": Map({"enabled": Bool(), "api_processes": Int(1, 64), "api_threads": Int(1, 64),
                      "workers": Int(1, 64), "token_expiration": Int(600, 604800),
                      "fernet_keys": Int(3, 20), "fernet_rotation": Int(60, 2592000)}),
    "outputs": List(Enum(*OUTPUTS), non_empty=True),
    "disk": Map({"esp_mib": Int(64, 1024), "root_free_mib": Int(0, 65536)}),
    "build": Map({"min_free_gib": Int(1, 1000)}),
})


# -- from text to checked data -------------------------------------------------
def compose(text, path):
    """``(node tree, [])`` of ``text``, or ``(None, [problem])`` for a YAML error or a
    file beyond the bounds of ``yamlfile.OPERATOR`` (an alias bomb, deep nesting)."""
    try:
        return yamlfile.compose(text, path), []
    except yamlfile.YamlError as e:
        return None, [Problem.of(e)]


def validate(root, checker, path):
    """Every problem of the document ``root`` under ``checker``; [] if none."""
    problems = []

    def report(node, key, text):
        problems.append(Problem(path, line_of(node), key, text))

    if root is None:
        problems.append(Problem(path, 1, "", "the file is empty; a profile is a mapping"))
    elif not isinstance(root, yaml.MappingNode):
        report(root, "", "the top level must be a mapping of profile keys, got %s"
               % describe(root))
    else:
        checker.check(root, "", report)
    return problems


key_lines = yamlfile.key_lines


def construct(root, path):
    """``(data, [])`` of a node tree, or ``(None, [problem])`` (an unknown ``!tag``...)."""
    try:
        return yamlfile.construct(root, path), []
    except yamlfile.YamlError as e:
        return None, [Problem.of(e)]


@dataclass(frozen=True)
class Document:
    """One profile file, checked on its own."""

    data: dict          # as PyYAML loads it; None if the file could not be read
    lines: dict         # {dotted key: line}, see key_lines
    problems: list      # [Problem]; data is schema-valid only if this is empty


def parse(text, path, checker=PROFILE):
    """Check the profile ``text`` (read from ``path``) on its own; never raises for bad input."""
    root, problems = compose(text, path)
    if problems:
        return Document(None, {}, problems)
    problems = validate(root, checker, path)
    if root is None or not isinstance(root, yaml.MappingNode):
        return Document(None, {}, problems)
    data, bad_tags = construct(root, path)
    # a bad tag is worth a line only once the schema is satisfied (an unhashable
    # key, say, is already reported by the schema)
    return Document(data, key_lines(root), problems or bad_tags)


def read(path, checker=PROFILE):
    """``parse`` of the file at ``path``; an unreadable, oversized or non-UTF-8 file is one
    problem."""
    try:
        text = yamlfile.read_text(path)
    except yamlfile.YamlError as e:
        return Document(None, {}, [Problem.of(e)])
    except OSError as e:
        return Document(None, {}, [Problem(path, 0, "", "cannot read: %s" % (e.strerror or e))])
    return parse(text, path, checker)
