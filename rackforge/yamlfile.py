"""Bounded YAML: the one way rackforge reads a YAML file.

Profiles, bootstrap files and the network specs in them come from operators,
installers and answer files.  A mistake, or a hostile file, must end as one
line in bounded time and memory, never as a traceback.  So a document is

- read from a regular file only, at most ``max_bytes`` of it, as UTF-8
  (:func:`read_text`; a FIFO or a device is refused without waiting);
- composed by PyYAML's pure-Python safe loader with the limits checked as each
  node is made (:func:`compose`): nesting depth, the number of aliases (none
  at all where ``max_aliases`` is 0), and the size of the document *with
  every alias expanded*, counted as it grows, so an alias bomb is refused
  at ``max_nodes`` values instead of being walked; a recursive alias is
  refused;
- constructed with dates left as the strings they are written as
  (:func:`construct`); every failure of a constructor (``0b_``, a
  ``!!timestamp`` that is no date, an unknown tag, a list as a mapping key)
  is caught and named.

Every refusal is a :class:`YamlError` (a ``ConfigError``): ``FILE:LINE: key:
problem``.  With ``quote=False`` (a file that may hold a secret: the
bootstrap file) no part of the file is repeated in it.

Nothing here is cached between calls; each call makes its own loader.
"""

import re
from dataclasses import dataclass

import yaml

from rackforge import errors, fileutil

TIMESTAMP = "tag:yaml.org,2002:timestamp"
#: a dotted key that is safe to show even where nothing from the file may be quoted
PLAIN_KEY = re.compile(r"([a-z_]{1,32}(\.[a-z_]{1,32}|\[\d+\])*)?")


@dataclass(frozen=True)
class Limits:
    """What one kind of YAML file may hold."""

    max_bytes: int = 256 * 1024
    max_depth: int = 32         # lists and mappings inside each other, aliases expanded
    max_nodes: int = 10000      # values in the document, aliases expanded
    max_aliases: int = 64       # 0: an alias is refused
    quote: bool = True          # may an error repeat text from the file


#: an operator's file on the build host (profiles): small anchors and aliases allowed
OPERATOR = Limits()
#: a file on a node that may hold a secret (bootstrap.yaml): no aliases, nothing quoted
NODE = Limits(max_bytes=64 * 1024, max_aliases=0, quote=False)


class YamlError(errors.ConfigError):
    """A YAML file that cannot be read, parsed or constructed within its limits."""

    message = "{where}: {problem}"

    @classmethod
    def at(cls, path, line, key, problem):
        """The error for ``problem`` at ``line`` (0: none) and dotted ``key`` ("": none)."""
        where = "%s:%d" % (path, line) if line else str(path)
        if key:
            where += ": " + key
        return cls(where=where, problem=problem, path=path, line=line, key=key)


# -- reading -------------------------------------------------------------------------
def read_text(path, limits=OPERATOR):
    """The text of the YAML file ``path``.  :raises: YamlError, FileNotFoundError

    ``FileNotFoundError`` passes through, so a caller can wait for a missing file.
    """
    try:
        data = fileutil.read_limited(path, limits.max_bytes)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise YamlError.at(path, 0, "", "cannot read: %s" % (e.strerror or e)) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise YamlError.at(path, line, "", "not UTF-8 text (byte %d of the file)"
                           % (e.start + 1)) from None


# -- composing with limits -----------------------------------------------------------
class _Resolver(yaml.resolver.Resolver):
    """The safe loader's implicit types, less timestamps: a date stays a string."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != TIMESTAMP]
        for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()}


class _Refused(yaml.MarkedYAMLError):
    """A limit was reached at ``problem_mark``."""


class _Composer(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser,
                yaml.composer.Composer, _Resolver):
    """PyYAML's composer with :class:`Limits` checked node by node."""

    def __init__(self, text, limits):
        yaml.reader.Reader.__init__(self, text)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _Resolver.__init__(self)
        self.limits = limits
        self.depth = 0
        self.aliases = 0
        self.values = 0         # so far, aliases expanded
        self.expanded = {}      # id(node) -> (values, depth), aliases expanded; set when done

    def refuse(self, problem):
        raise _Refused(problem=problem, problem_mark=self.peek_event().start_mark)

    def compose_node(self, parent, index):
        limits = self.limits
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if not limits.max_aliases:
                self.refuse("aliases (*NAME) are not allowed in this file")
            if self.aliases > limits.max_aliases:
                self.refuse("more than %d aliases" % limits.max_aliases)
            target = self.anchors.get(self.peek_event().anchor)
            if target is not None:
                if id(target) not in self.expanded:
                    self.refuse("a recursive alias (it refers to a value that holds it)")
                self.count(self.expanded[id(target)][0])
            return super().compose_node(parent, index)
        if self.depth > limits.max_depth:
            self.refuse("nested deeper than %d levels" % limits.max_depth)
        self.count(1)
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        self.expanded[id(node)] = self._measure(node)
        return node

    def count(self, values):
        """Count ``values`` more in the document; refused past the limit, before they are made."""
        self.values += values
        if self.values > self.limits.max_nodes:
            self.refuse("more than %d values (aliases expanded)" % self.limits.max_nodes)

    def _measure(self, node):
        """``(values, depth)`` of the finished ``node``, with its aliases expanded."""
        if isinstance(node, yaml.ScalarNode):
            return 1, 0
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = node.value
        sizes = [self.expanded[id(child)] for child in children]
        values = 1 + sum(v for v, _ in sizes)
        depth = 1 + max((d for _, d in sizes), default=0)
        if depth > self.limits.max_depth:
            raise _Refused(problem="nested deeper than %d levels (aliases expanded)"
                           % self.limits.max_depth, problem_mark=node.start_mark)
        return values, depth


def compose(text, path, limits=OPERATOR):
    """The node tree of the one document in ``text`` (None if empty).  :raises: YamlError"""
    loader = None
    try:
        loader = _Composer(text, limits)
        return loader.get_single_node()
    except yaml.reader.ReaderError as e:
        line = text[:e.position].count("\n") + 1
        raise YamlError.at(path, line, "", "a control character (#x%04x) that YAML does not "
                           "allow" % e.character) from None
    except _Refused as e:
        raise YamlError.at(path, e.problem_mark.line + 1, "", e.problem) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        said = ", ".join(part for part in (e.context, e.problem) if part)
        raise YamlError.at(path, mark.line + 1 if mark else 0, "",
                           "YAML syntax: %s" % _quoted(said, limits)) from None
    except yaml.YAMLError as e:
        raise YamlError.at(path, 0, "", "YAML: %s" % _quoted(str(e), limits)) from None
    finally:
        if loader is not None:
            loader.dispose()


def _quoted(text, limits):
    """PyYAML's message, without what it quotes from the file unless ``limits.quote``."""
    if limits.quote:
        return text
    # a character ('\t') or a token name ('<scalar>') is safe; anything longer is not
    return re.sub(r"'(?!<[a-z ]+>')[^']{3,}'|\"[^\"]*\"", "'...'", text)


# -- constructing --------------------------------------------------------------------
class _Failed(Exception):
    def __init__(self, node, problem, mark=None):
        super().__init__(problem)
        self.node, self.problem, self.mark = node, problem, mark or node.start_mark


KINDS = {"int": "an integer", "float": "a number", "bool": "true or false",
         "timestamp": "a date", "binary": "base64 data", "null": "null"}


class _Constructor(yaml.constructor.SafeConstructor):
    """The safe constructor, depth-first, with every failure tied to its node."""

    def __init__(self, limits):
        super().__init__()
        self.limits = limits

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=True)
        except _Failed:
            raise
        except yaml.MarkedYAMLError as e:
            raise _Failed(node, _quoted(e.problem or e.context, self.limits),
                          e.problem_mark) from None
        except (ValueError, TypeError, ArithmeticError, LookupError, RecursionError):
            kind = node.tag.rsplit(":", 1)[-1]
            value = "the value"
            if self.limits.quote and isinstance(node, yaml.ScalarNode):
                value = repr(node.value) if len(node.value) <= 40 else "the value"
            raise _Failed(node, "%s cannot be read as %s" % (value, KINDS.get(kind, kind))
                          ) from None


def construct(root, path, limits=OPERATOR):
    """Python data of the node tree ``root`` made by :func:`compose`.  :raises: YamlError"""
    if root is None:
        return None
    try:
        return _Constructor(limits).construct_document(root)
    except _Failed as e:
        key = key_of(root, e.node)
        if not limits.quote and not PLAIN_KEY.fullmatch(key):
            key = ""            # a key is text from the file too
        raise YamlError.at(path, e.mark.line + 1, key, "YAML: %s" % e.problem) from None


def load(path, limits=OPERATOR):
    """The data of the YAML file ``path``, within ``limits``.

    :raises: YamlError; FileNotFoundError for a missing file.
    """
    text = read_text(path, limits)
    return construct(compose(text, path, limits), path, limits)


def load_with_lines(path, limits=OPERATOR):
    """``(data, {dotted key: line})`` of the YAML file ``path``; see :func:`load`."""
    text = read_text(path, limits)
    root = compose(text, path, limits)
    return construct(root, path, limits), (key_lines(root) if root is not None else {})


# -- keys and lines ------------------------------------------------------------------
def walk(root):
    """``(dotted key, node that names it, value node)`` for every mapping key and list
    item under ``root``, in document order, aliases expanded (so bounded by the
    limits the tree was composed under).  A key that is not a scalar is ``?``."""
    stack = [("", root)]
    while stack:
        prefix, node = stack.pop()
        entries = []
        if isinstance(node, yaml.MappingNode):
            for knode, vnode in node.value:
                name = knode.value if isinstance(knode, yaml.ScalarNode) else "?"
                entries.append(("%s.%s" % (prefix, name) if prefix else str(name),
                                knode, vnode))
        elif isinstance(node, yaml.SequenceNode):
            entries = [("%s[%d]" % (prefix, i), item, item) for i, item in enumerate(node.value)]
        for entry in entries:
            yield entry
        stack.extend((key, vnode) for key, _, vnode in reversed(entries))


def key_lines(root):
    """``{dotted key: line}`` for every mapping key and list item; ``""`` is the document."""
    lines = {"": root.start_mark.line + 1}
    for key, named, _ in walk(root):
        lines[key] = named.start_mark.line + 1
    return lines


def key_of(root, node):
    """The dotted key of ``node`` in the tree ``root``; "" for the root or if not found."""
    for key, named, value in walk(root):
        if node is value or node is named:
            return key
    return ""
