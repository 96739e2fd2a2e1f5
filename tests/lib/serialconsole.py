"""A QEMU guest whose serial console is a tmux pane: keys in, the screen out.

What a person at a BMC's serial console sees and types: the pane is 80x24 (what
the installer's TUI assumes of a serial line, whose size nobody reports).  QEMU's
serial port is a unix socket that QEMU waits on before the guest starts (nothing
printed is lost) and the pane runs ``serialrelay.py`` between it and the
terminal; ``tmux send-keys`` types, ``capture-pane`` reads the screen and
``pipe-pane`` keeps every byte in ``console.log``.

Each wait polls the screen for a condition (a regex) until a deadline; on a
timeout the screen is in the message.
"""

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from netns import wait_until

from rackforge.proc import stop_process

RELAY = Path(__file__).with_name("serialrelay.py")

COLUMNS, LINES = 80, 24
POLL = 0.2
TOKEN = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[^\x1b]+")
FOCUS = "46"            # the installer's focus: a cyan background (ansi_cyan)


class ConsoleTimeout(AssertionError):
    pass


class SerialConsole:
    def __init__(self, guest, name):
        """``guest``: a :class:`guest.Guest` (its command and console log)."""
        self.guest = guest
        self.session = name
        self.log = guest.console_log
        self.socket = Path(guest.workdir) / "serial.sock"
        self.proc = None

    def tmux(self, *args, check=True):
        return subprocess.run(["tmux", *args], capture_output=True, text=True, check=check)

    def command(self):
        """The guest's command with its serial port on :attr:`socket` (QEMU waits for the
        relay to connect before the guest starts: nothing printed is lost)."""
        cmd = list(self.guest.command())
        i = cmd.index("-serial")
        cmd[i:i + 2] = ["-chardev", "socket,id=ser0,path=%s,server=on,wait=on" % self.socket,
                        "-serial", "chardev:ser0"]
        return cmd

    def start(self):
        self.log.write_bytes(b"")
        if self.socket.exists():
            self.socket.unlink()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.trace = Path(self.guest.workdir) / "serial.trace"
        argv = (sys.executable, RELAY, self.socket, self.trace)
        relay = " ".join(shlex.quote(str(a)) for a in argv)
        self.tmux("new-session", "-d", "-s", self.session, "-x", str(COLUMNS), "-y",
                  str(LINES), "-e", "TERM=linux", relay + "; sleep 3600")
        self.tmux("pipe-pane", "-t", self.session, "-o", "cat >> %s" % shlex.quote(
            str(self.log)))
        return self

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, timeout=20)
        self.tmux("kill-session", "-t", self.session, check=False)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- reading ----------------------------------------------------------------------
    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", self.session).stdout

    def _focused_lines(self):
        """[(text before the focus, [(focused text, dim)])] of each line with focus colour."""
        out = []
        for line in self.tmux("capture-pane", "-e", "-p", "-t", self.session).stdout \
                .splitlines():
            before, on, cyan, dim = [], [], False, False
            for token in TOKEN.findall(line):
                if token.startswith("\x1b"):
                    if token.endswith("m"):
                        params = token[2:-1].split(";")
                        if any(p in ("", "0") for p in params):
                            dim = False
                        if "22" in params:
                            dim = False
                        if "2" in params:
                            dim = True
                        if FOCUS in params:
                            cyan = True
                        elif any(p in ("", "0", "49") or (len(p) == 2 and p[0] == "4")
                                 for p in params):
                            cyan = False
                    continue
                if cyan:
                    on.append((token, dim))
                elif not on:
                    before.append(token)
            if on:
                out.append(("".join(before).strip(), on))
        return out

    def focused(self):
        """[(text before the focus, the focused text)] of each line with focus colour: a
        field's label and its value, or a button's or a row's text."""
        return [(before, "".join(t for t, _ in on)) for before, on in self._focused_lines()]

    def field_value(self):
        """What is typed in the focused input field: its focused text without what is
        drawn dim (the placeholder of an empty field), stripped; None without a focus."""
        lines = self._focused_lines()
        if not lines:
            return None
        return "".join(t for t, dim in lines[0][1] if not dim).strip()

    def has_focus(self, label):
        return any(label in on or before.endswith(label) for before, on in self.focused())

    def output(self):
        """Every byte the console printed, escape sequences and all."""
        return self.log.read_bytes().decode(errors="replace")

    def wait_screen(self, pattern, timeout):
        """Until ``pattern`` is on the screen; returns the match."""
        return self._wait(pattern, timeout, self.screen, "on the screen")

    def _wait(self, pattern, timeout, read, where):
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = read()
            m = regex.search(text)
            if m:
                return m
            if self.proc is not None and self.proc.poll() is not None:
                raise ConsoleTimeout("QEMU exited before %r %s:\n%s"
                                     % (pattern, where, self.screen()))
            if time.monotonic() > deadline:
                raise ConsoleTimeout("no %r %s within %d s; the screen:\n%s\nconsole: %s"
                                     % (pattern, where, timeout, self.screen(), self.log))
            time.sleep(POLL)

    def wait_until(self, done, timeout, what):
        """``netns.wait_until``, with the screen in the message on a timeout."""
        try:
            return wait_until(done, timeout, what, interval=POLL)
        except AssertionError as exc:
            raise ConsoleTimeout("%s; the screen:\n%s" % (exc, self.screen())) from None

    def wait_exit(self, timeout):
        """Until QEMU exits (the guest rebooted: -no-reboot); its exit code."""
        return self.proc.wait(timeout=timeout)

    # -- typing -----------------------------------------------------------------------
    def keys(self, *names):
        """tmux key names: Down, Tab, Enter, Home ..."""
        self.tmux("send-keys", "-t", self.session, *names)

    def type(self, text):
        self.tmux("send-keys", "-t", self.session, "-l", text)

    # -- a person's pace: each key waits for the screen to show what it did --------------
    def key_until(self, key, done, timeout, tries=1):
        """Press ``key`` until ``done()`` (up to ``tries`` presses, ``timeout`` s each)."""
        for _ in range(tries):
            self.keys(key)
            try:
                return wait_until(done, timeout, "%s to take effect" % key, interval=POLL)
            except AssertionError:
                continue
        raise ConsoleTimeout("%s pressed %d times did not do it; the screen:\n%s"
                             % (key, tries, self.screen()))

    def focus(self, label, timeout, tries=12):
        """Tab until the focused line holds ``label`` (a field's label or a row's text):
        each Tab waits until the focus moved (anywhere: ``label`` may be several Tabs
        away), not for ``label`` itself, which would wait out ``timeout`` on every Tab
        but the last."""
        for _ in range(tries):
            if self.has_focus(label):
                return
            before = self.focused()
            self.key_until("Tab", lambda: self.focused() not in ([], before), timeout)
        if not self.has_focus(label):
            raise ConsoleTimeout("Tab pressed %d times did not reach %r; the screen:\n%s"
                                 % (tries, label, self.screen()))

    def fill(self, label, value, timeout, tries=3):
        """The field labelled ``label`` focused, emptied (Ctrl-U: the cursor is at its end
        on focus) and ``value`` typed into it, as a person at a slow serial console types:
        one key, then a look at the field until it shows that key, then the next.  Keys
        sent in a burst while the guest was still redrawing for the one before showed
        only when later keys came (a TCG guest's 16550; cause not found): a person's
        pace never sends one.  A key that does not show within ``timeout`` starts the
        field again, up to ``tries`` times."""
        for attempt in range(tries):
            self.focus(label, timeout)
            try:
                if self.field_value():
                    self.key_until("C-u", lambda: self.field_value() == "", timeout)
                for i in range(len(value)):
                    self.type(value[i])
                    self.wait_until(lambda: self.field_value() == value[:i + 1], timeout,
                                    "%r to show %r" % (label, value[:i + 1]))
                return
            except ConsoleTimeout:
                if attempt == tries - 1:
                    raise


class CommandConsole(SerialConsole):
    """A command (the console of an nspawn node) in an 80x25 tmux pane with TERM=linux:
    the Linux console's size.  The same reading and typing as a serial console."""

    def __init__(self, argv, name, log):
        self.guest, self.proc = None, None
        self.argv, self.session, self.log = list(argv), name, Path(log)

    def start(self):
        self.log.write_bytes(b"")
        command = " ".join(shlex.quote(str(a)) for a in self.argv)
        self.tmux("new-session", "-d", "-s", self.session, "-x", str(COLUMNS), "-y",
                  str(LINES + 1), "-e", "TERM=linux", command + "; sleep 3600")
        self.tmux("pipe-pane", "-t", self.session, "-o", "cat >> %s" % shlex.quote(
            str(self.log)))
        return self
