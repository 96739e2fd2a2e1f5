"""What the operator sees while an image builds.

One line per stage (``[3/7] squashfs ... done in 11s``), and beneath the
long diskimage-builder stage the hook phase it is in.  On a terminal the
sub-step line is rewritten in place; in a log or CI it is printed as plain
lines, each only once.  diskimage-builder's raw output is shown only with
``--verbose``; it always goes to the build log.  Progress goes to stdout,
errors (one line each) to stderr.
"""

import sys
import time


def _fmt_seconds(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return "%ds" % seconds
    return "%dm%02ds" % divmod(seconds, 60)


class Progress:
    def __init__(self, stream=None, verbose=False, clock=time.monotonic):
        self.stream = stream or sys.stdout
        self.verbose = verbose
        self.clock = clock
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty() and not verbose
        self._stage = None
        self._stage_start = None
        self._last_sub = None
        self._open_line = False

    def _write(self, text):
        self.stream.write(text)
        self.stream.flush()

    def _close_line(self):
        if self._open_line:
            self._write("\n")
            self._open_line = False

    def stage(self, index, total, name):
        """Start stage ``index`` of ``total``; ends the previous one."""
        self.end_stage()
        self._stage = "[%d/%d] %s" % (index, total, name)
        self._stage_start = self.clock()
        self._last_sub = None
        self._write(self._stage + "\n")

    def end_stage(self, note=""):
        if self._stage is None:
            return
        self._close_line()
        elapsed = _fmt_seconds(self.clock() - self._stage_start)
        self._write("      done in %s%s\n" % (elapsed, (", " + note) if note else ""))
        self._stage = None

    def substep(self, text):
        """A phase within the current stage (diskimage-builder's hook phases)."""
        if text == self._last_sub:
            return
        self._last_sub = text
        if self.tty:
            self._write("\r\033[K      %s" % text)
            self._open_line = True
        else:
            self._write("      %s\n" % text)

    def detail(self, text):
        """A fine-grained step: shown only on a terminal, where it costs no lines."""
        if self.tty and self._last_sub:
            self._write("\r\033[K      %s: %s" % (self._last_sub, text))
            self._open_line = True

    def raw(self, line):
        self._close_line()
        self._write(line + "\n")

    def info(self, text):
        self._close_line()
        self._write(text + "\n")
