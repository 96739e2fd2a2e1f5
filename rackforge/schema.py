"""A small declarative schema for profile YAML, with line numbers.

Profiles are validated on the YAML node tree (``yaml.compose``), not on the
loaded dict, so every problem carries the line it is on.  A schema is built
from a handful of node checkers (``Str``, ``Int``, ``Enum``, ``List``,
``Map``...); each appends ``Problem``s instead of raising, so one run
reports everything that is wrong, one line each.
"""

import re
from dataclasses import dataclass

import yaml

TAG = "tag:yaml.org,2002:"


@dataclass(frozen=True)
class Problem:
    path: str       # file
    line: int
    key: str        # dotted key, e.g. disk.esp_mib or elements[2]
    text: str

    def __str__(self):
        where = "%s:%d" % (self.path, self.line) if self.line else str(self.path)
        return "%s: %s: %s" % (where, self.key, self.text) if self.key else \
            "%s: %s" % (where, self.text)


def line_of(node):
    return node.start_mark.line + 1


def describe(node):
    """How a value looks in the file, for messages."""
    if isinstance(node, yaml.ScalarNode):
        return repr(node.value) if node.tag == TAG + "str" else node.value or "null"
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"


class Checker:
    """Base: ``check(node, key, report)`` where ``report(node, key, text)`` records a problem."""

    def check(self, node, key, report):
        raise NotImplementedError


class Str(Checker):
    def __init__(self, pattern=None, hint=""):
        self.pattern = re.compile(pattern) if pattern else None
        self.hint = hint

    def check(self, node, key, report):
        if not (isinstance(node, yaml.ScalarNode) and node.tag == TAG + "str"):
            report(node, key, "must be a string, got %s" % describe(node))
        elif self.pattern and not self.pattern.fullmatch(node.value):
            report(node, key, "%r is not %s" % (node.value, self.hint))


class Int(Checker):
    def __init__(self, low, high, odd=False):
        self.low, self.high, self.odd = low, high, odd

    def check(self, node, key, report):
        want = "an integer between %d and %d" % (self.low, self.high)
        # a YAML bool is not an integer here, even though Python thinks so
        if not (isinstance(node, yaml.ScalarNode) and node.tag == TAG + "int"):
            report(node, key, "must be %s, got %s" % (want, describe(node)))
            return
        value = int(node.value, 0)
        if not self.low <= value <= self.high:
            report(node, key, "must be %s, got %d" % (want, value))
        elif self.odd and value % 2 == 0:
            report(node, key, "must be odd (a quorum needs a majority), got %d" % value)


class Enum(Checker):
    def __init__(self, *values):
        self.values = values

    def check(self, node, key, report):
        if not (isinstance(node, yaml.ScalarNode) and node.value in self.values
                and node.tag == TAG + "str"):
            report(node, key, "must be one of %s, got %s"
                   % (", ".join(self.values), describe(node)))


class List(Checker):
    def __init__(self, item, unique=True, non_empty=False):
        self.item, self.unique, self.non_empty = item, unique, non_empty

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
            if self.unique and isinstance(item, yaml.ScalarNode):
                if item.value in seen:
                    report(item, ikey, "%r is listed twice" % item.value)
                seen.add(item.value)


class Map(Checker):
    """A mapping with known keys; ``keys`` maps each key to its checker."""

    def __init__(self, keys, allow_empty=True):
        self.keys = keys
        self.allow_empty = allow_empty

    def check(self, node, key, report):
        if not isinstance(node, yaml.MappingNode):
            if not (isinstance(node, yaml.ScalarNode) and node.tag == TAG + "null"):
                report(node, key, "must be a mapping, got %s" % describe(node))
            return
        seen = set()
        for knode, vnode in node.value:
            name = knode.value
            sub = "%s.%s" % (key, name) if key else name
            if name in seen:
                report(knode, sub, "given twice")
            seen.add(name)
            checker = self.keys.get(name)
            if checker is None:
                report(knode, sub, "unknown key; allowed: %s" % ", ".join(sorted(self.keys)))
            else:
                checker.check(vnode, sub, report)


class OneOf(Checker):
    """The first checker whose shape (list or mapping) matches the node decides."""

    def __init__(self, as_list, as_map):
        self.as_list, self.as_map = as_list, as_map

    def check(self, node, key, report):
        if isinstance(node, yaml.MappingNode):
            self.as_map.check(node, key, report)
        else:
            self.as_list.check(node, key, report)


def compose(text, path):
    """The node tree of ``text``; a syntax error becomes one Problem."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader), None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        return None, Problem(path, mark.line + 1 if mark else 0, "",
                             "YAML syntax: %s" % (e.problem or e.context))
    except yaml.YAMLError as e:
        return None, Problem(path, 0, "", "YAML: %s" % e)


def validate(root_node, checker, path):
    """Problems of the document ``root_node`` under ``checker``."""
    problems = []

    def report(node, key, text):
        problems.append(Problem(path, line_of(node), key, text))

    if root_node is None:
        problems.append(Problem(path, 1, "", "the file is empty; a profile is a mapping"))
    elif not isinstance(root_node, yaml.MappingNode):
        report(root_node, "", "the top level must be a mapping of profile keys, got %s"
               % describe(root_node))
    else:
        checker.check(root_node, "", report)
    return problems


def key_lines(root_node):
    """{dotted key: line} for every mapping key of the document (for later messages)."""
    lines = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for knode, vnode in node.value:
                key = "%s.%s" % (prefix, knode.value) if prefix else str(knode.value)
                lines[key] = line_of(knode)
                walk(vnode, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                key = "%s[%d]" % (prefix, i)
                lines[key] = line_of(item)
                walk(item, key)

    if root_node is not None:
        walk(root_node, "")
    return lines
