"""``rackforge nodeagent console``: the node's own screen on tty1 (a DCUI); its status page.

A Textual app in the installer's look (16 colours, keyboard only, ASCII) that reads
the node agent's local API (:mod:`.localapi`) and holds no credential of its own.
The status page (:mod:`.consoleview`) refreshes every :data:`REFRESH` seconds and on
F5 or ``r``; the request runs in a worker thread, so a slow or absent agent never
freezes the screen: the page then says what failed and the last good status stays
below it.  F2 opens the actions (:mod:`.consoleactions`); the ones that change the
node pass the password gate (:mod:`.consolegate`) first.
"""

import logging
import time

from rich.text import Text
from textual.app import App
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from rackforge import errors
from rackforge.installer import tui
from rackforge.nodeagent import (consoleactions, consolegate, consolejoin, consolereset,
                                 consoleview, localapi)

REFRESH = 5.0
LOG = logging.getLogger(__name__)

CSS = tui.CSS + """
#error { height: auto; padding: 0 1; color: ansi_bright_red; }
PasswordScreen { align: center middle; }
#gate { width: 60; height: auto; padding: 1 2; background: ansi_blue;
        color: ansi_bright_white; }
#gate #problems { color: ansi_bright_yellow; }
"""


class StatusScreen(Screen):
    BINDINGS = [Binding("f5", "refresh", "refresh", show=False),
                Binding("r", "refresh", "refresh", show=False),
                Binding("f2", "actions", "actions", show=False)]

    def compose(self):
        yield Static(Text("rackforge console"), id="title")
        yield Static("", id="error")
        with VerticalScroll(id="body"):
            yield Static(Text("asking the node agent ..."), id="status")
        yield Static(Text("F2: actions  F5: refresh now"), id="keys")

    def on_mount(self):
        self.action_refresh()
        self.set_interval(self.app.refresh_every, self.action_refresh)

    def action_actions(self):
        self.app.push_screen(consoleactions.ActionsScreen())

    fetching = False

    def action_refresh(self):
        """One status request at a time: a tick while one is out (a slow agent) waits
        for the next."""
        if self.fetching:
            return
        self.fetching = True
        self.run_worker(lambda: self.app.fetch(self), thread=True, group="status")

    def show(self, doc, error):
        if doc is not None:
            name = (doc.get("node") or {}).get("name") or "this node"
            self.query_one("#title", Static).update(Text("rackforge console  %s  %s" % (
                name, time.strftime("%H:%M:%S", time.localtime(self.app.clock())))))
            self.query_one("#status", Static).update(Text("\n".join(consoleview.lines(doc))))
        self.query_one("#error", Static).update(Text(error or ""))


class ConsoleApp(App):
    CSS = CSS
    ENABLE_COMMAND_PALETTE = False

    def __init__(self, client=None, refresh_every=REFRESH, clock=time.time, gate=None,
                 confirm_within=consoleactions.CONFIRM_WITHIN):
        super().__init__(ansi_color=True)
        self.confirm_within = confirm_within
        self.client = client or localapi.Client()
        self.gate = gate or consolegate.Gate()
        self.refresh_every = refresh_every
        self.clock = clock
        self.last = None

    def on_mount(self):
        self.theme = "textual-ansi"
        self.push_screen(StatusScreen())

    def open_action(self, key, gated):
        """Open action ``key``'s screen, through the password gate when it changes the node."""
        if gated and not self.gate.is_open():
            self.push_screen(consoleactions.PasswordScreen(),
                             lambda ok: ok and self.open_action(key, gated))
            return
        self.gate.touch()
        if key == "shell":
            self.break_glass()
            return
        self.run_worker(lambda: self._open(key), thread=True, exclusive=True, group="open",
                        exit_on_error=False)

    def say(self, line):
        """One line on the screen on top (an action's, or the status page's error line)."""
        say = getattr(self.screen, "say", None)
        if say is not None:
            say(line)
        elif isinstance(self.screen, StatusScreen):
            self.screen.show(None, line)

    def gated(self, then):
        """``then()`` once the password gate is open (asked for again after idling)."""
        if self.gate.is_open():
            self.gate.touch()
            then()
        else:
            self.push_screen(consoleactions.PasswordScreen(), lambda ok: ok and then())

    def _open(self, key):
        """The action's screen, from what the agent says now (in a worker thread); the
        join's from first boot's own records (a node not joined has no agent), the
        reset's from the node's own files (the reset stops the agent)."""
        try:
            if key == "join":
                state = self.join_state()
                consolejoin.check(state)
                screen = consolejoin.JoinScreen(state)
            elif key == "reset":
                plan = self.reset_plan()
                consolereset.check(plan)
                screen = consolereset.ResetScreen(plan)
            else:
                screen = consoleactions.screen_for(key, self.client)
        except errors.RackforgeError as exc:        # the agent away, or not ready for it
            self.call_from_thread(self.say, str(exc))
            return
        except Exception as exc:    # noqa: BLE001 - a bug: one line, no traceback on tty1
            LOG.error("console: action %s did not open: %s", key, type(exc).__name__)
            self.call_from_thread(self.say, "%s did not open: %s (a bug); see 'journalctl "
                                  "-t rackforge-console'" % (key, type(exc).__name__))
            return
        self.call_from_thread(self.push_screen, screen)

    # -- what the console does itself, as root (tests replace these) ------------------
    def systemctl(self, *args, **kw):
        from rackforge import systemd
        systemd.systemctl(*args, **kw)

    def open_gate(self, unit):
        """``unit`` allowed to start (one only the agent starts: ``units.GATED``)."""
        from rackforge.nodeagent import units
        units.Systemd().open_gate(unit)

    def join_state(self):
        """This node's ``rejoin.JoinState`` (tests replace it)."""
        from rackforge.firstboot import rejoin
        return rejoin.state()

    def rejoin(self, endpoints, token, pin):
        """New join settings written and first boot started again (``firstboot.rejoin``)."""
        from rackforge.firstboot import rejoin
        return rejoin.apply(endpoints, token, pin, systemctl=self.systemctl)

    def reset_env(self):
        """What a factory reset touches (``firstboot.factoryreset.Env``; tests replace it)."""
        from rackforge.firstboot import factoryreset
        return factoryreset.Env(systemctl=self.systemctl)

    def reset_plan(self):
        """What a factory reset of this node does (``firstboot.factoryreset.plan``)."""
        from rackforge.firstboot import factoryreset
        return factoryreset.plan(self.reset_env())

    def factory_reset(self, confirm, say):
        """This node reset to its factory state (``firstboot.factoryreset.start``)."""
        from rackforge.firstboot import factoryreset
        return factoryreset.start(confirm, self.reset_env(), say)

    def first_boot_line(self):
        """First boot's console line (what it does, or why it has not joined), or ''."""
        from rackforge.firstboot import rejoin
        return rejoin.banner_line()

    def journal(self, units):
        """``journalctl --follow`` of ``units``: a process whose stdout gives lines."""
        import subprocess
        argv = ["journalctl", "--follow", "--no-pager", "--lines=%d"
                % consoleactions.JOURNAL_LINES, "--output=short-iso"]
        for unit in units:
            argv += ["--unit", unit]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, text=True, errors="replace")

    def break_glass(self):
        """A root login shell on this console; the journal says when it opened and closed."""
        import os
        import subprocess
        LOG.warning("console: break-glass shell opened")
        shell = os.environ.get("SHELL") or "/bin/bash"
        try:
            with self.suspend():
                print("rackforge console: a root shell; 'exit' goes back to the console",
                      flush=True)
                code = subprocess.run([shell, "-l"]).returncode
        except Exception as exc:     # noqa: BLE001 - one line; the console goes on
            LOG.warning("console: break-glass shell did not run: %s", exc)
            self.say("the shell did not run: %s" % exc)
            return
        LOG.warning("console: break-glass shell closed (exit %s)", code)

    def fetch(self, page):
        """The worker: one status request; the status ``page`` updated from the app's
        thread (an action's screen may be on top of it meanwhile)."""
        try:
            try:
                doc, error = self.client.get("/v1/status"), None
                self.last = doc
            except localapi.LocalApiError as exc:
                # no agent yet on a node that has not joined: first boot says why
                first = self.first_boot_line()
                doc, error = None, str(exc) + ("\nfirst boot: " + first if first else "")
            self.call_from_thread(page.show, doc, error)
        finally:
            page.fetching = False


def _journal_handler():
    """What the console did goes to the journal as ``rackforge-console`` (however it was
    started: its unit, or by hand on another console), or nowhere without systemd."""
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    handler = JournalHandler(SYSLOG_IDENTIFIER="rackforge-console")
    handler.setLevel(logging.INFO)
    return handler


def main(tty=None, confirm_within=consoleactions.CONFIRM_WITHIN):
    """``rackforge nodeagent console [--tty DEV] [--confirm-within S]``: the exit status."""
    from rackforge.installer.tuicmd import logs_off_screen, on_tty

    journal = _journal_handler()
    with on_tty(tty) as old_stderr, logs_off_screen(old_stderr):
        if journal is not None:
            logging.getLogger().addHandler(journal)
        try:
            ConsoleApp(confirm_within=confirm_within).run(mouse=False)
        finally:
            if journal is not None:
                logging.getLogger().removeHandler(journal)
    return 0
