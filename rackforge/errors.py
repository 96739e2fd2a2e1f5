"""Errors that reach the operator.

Every failure the operator sees is one line: what went wrong, where, and what
to do next.  Subclasses are message templates in the manner of Ironic's
exceptions: they declare ``message`` with ``{named}`` fields and are raised
with keyword arguments, so the sentence is written once, next to its class.

Errors are sorted by what the caller should do about them (MAAS style):
``retryable`` ones may succeed if tried again, the others need a change by the
operator first.

Text from a file or an argument can hold terminal escapes: :func:`printable`
makes it safe to show, and :func:`capped` keeps a list of problem lines short
enough to read.
"""

import unicodedata

#: problem lines shown for one input at most (the rest are counted)
MAX_LINES = 20


def printable(text):
    """``text`` with every control or format character (ESC, NUL, BEL, RTL overrides,
    ...) written as a ``\\xNN``/``\\uNNNN`` escape: safe to echo to a terminal or a log."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else _escape(ch) for ch in text)


def _escape(ch):
    if unicodedata.category(ch)[0] == "Z" and ch not in "\u2028\u2029":
        return ch           # other spaces are harmless
    return ascii(ch)[1:-1]


def capped(lines, limit=MAX_LINES):
    """The first ``limit`` of ``lines``, then one "... and N more" line if any were left out."""
    lines = list(lines)
    if len(lines) <= limit:
        return lines
    return lines[:limit] + ["... and %d more" % (len(lines) - limit)]


class RackforgeError(Exception):
    """Base class: an operator-facing error with a one-line message."""

    message = "an unexpected error occurred"
    retryable = False
    exit_code = 1

    def __init__(self, message=None, **kwargs):
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.message.format(**kwargs)
            except (KeyError, IndexError):
                # A template bug must not hide the error itself.
                message = "%s (%s)" % (self.message, kwargs)
        # One line, always: a stray newline would break the contract, and a
        # terminal escape from a file or an argument must not reach the terminal.
        super().__init__(printable(" ".join(str(message).split())))

    def __str__(self):
        return self.args[0]


class ConfigError(RackforgeError):
    """A setting or input file is wrong; fix it and run again."""

    exit_code = 2


class ProfileError(ConfigError):
    message = "{path}: {detail}"


class UnknownProfile(ConfigError):
    message = ("unknown profile '{name}': no {name}.yaml in {searched}; "
               "run 'rackforge profile list' to see the profiles")


class HostToolMissing(RackforgeError):
    message = "missing host tool '{tool}': install it with '{install}' and run again"


class NotPrivileged(RackforgeError):
    message = ("{action} needs root: run it as root or give this user "
               "passwordless sudo")


class NotEnoughDisk(RackforgeError):
    message = ("not enough free disk in {path}: {free_gib:.1f} GiB free, "
               "{need_gib:.1f} GiB needed; free some space or set "
               "RACKFORGE_WORKDIR to a larger file system")


class BuildFailed(RackforgeError):
    message = "{step} failed: {detail}; full log: {log}"


class Interrupted(RackforgeError):
    message = "{what} interrupted; nothing was left under a final name, run it again to resume"
    exit_code = 130


class FileProblem(RackforgeError):
    """An operating-system error on a file or directory: which one, and why."""
    message = "{path}: {reason}; check that it exists, is writable and has space"

    @classmethod
    def of(cls, exc):
        path = exc.filename or "(no file)"
        if exc.filename2:
            path = "%s -> %s" % (exc.filename, exc.filename2)
        return cls(path=path, reason=exc.strerror or exc.__class__.__name__)


class Bug(RackforgeError):
    message = ("rackforge {command} failed unexpectedly (a bug, not something you did); "
               "the detail is in {where}: please report it")
    exit_code = 70
