"""The console's "Reset this node to its factory state": the host name typed to confirm.

The reset stops the node agent itself, so the console does it as root, with
:mod:`rackforge.firstboot.factoryreset` (which borrows the node's own etcd
client files to tell the cluster it leaves; the console keeps none).  The
screen shows what the reset does (leave the cluster, or end it when the node
is its only one; what is erased and what is kept) before anything is typed; a
node that cannot be reset says why in one line and the screen does not open.
The reset runs in a worker and reports each phase on the screen; a reset cut
short is recorded and finishes at the next boot.
"""

import logging

from textual.widgets import Button, Static

from rackforge import errors
from rackforge.installer.tui import ConsoleInput, field_row, text
from rackforge.nodeagent.consoleactions import ActionUnavailable, FormScreen

LOG = logging.getLogger(__name__)


def check(plan):
    """:class:`ActionUnavailable` when nothing typed could make this reset go ahead."""
    from rackforge.firstboot import factoryreset
    refused = factoryreset.blocker(plan)
    if refused is not None:
        raise ActionUnavailable(action="factory reset", why=str(refused))


class ResetScreen(FormScreen):
    TITLE = "reset to the factory state"

    def __init__(self, plan):
        super().__init__()
        self.plan = plan
        self.busy = False
        self.finished = False

    def fields(self):
        yield Static(text("A factory reset of this node:"), classes="heading")
        for line in self.plan.lines():
            yield Static(text("  " + line))
        yield Static(text("Type this node's host name to confirm:"), classes="heading")
        yield field_row("Host name", "confirm", self.plan.hostname)

    def buttons(self):
        yield Button("< Reset >", id="reset")

    def on_mount(self):
        self.query_one("#confirm", ConsoleInput).focus()

    def apply(self):
        if self.busy or self.finished:
            return
        typed = self.query_one("#confirm", ConsoleInput).value.strip()
        if typed != self.plan.hostname:
            self.say("type the host name %s exactly to confirm; nothing was changed"
                     % self.plan.hostname)
            return
        self.busy = True
        self.say("factory reset: starting ...")
        app = self.app
        LOG.warning("console: factory reset of %s confirmed", self.plan.hostname)
        app.run_worker(lambda: self._reset(app, typed), thread=True, group="reset",
                       exit_on_error=False)

    def _reset(self, app, typed):
        def say(line):
            app.call_from_thread(self.say, line)
        try:
            app.factory_reset(typed, say)
        except errors.RackforgeError as exc:
            LOG.error("console: factory reset: %s", exc)
            app.call_from_thread(self._done, str(exc), False)
            return
        except Exception as exc:    # noqa: BLE001 - a bug: one line on tty1, detail logged
            from rackforge.firstboot import factoryreset
            LOG.exception("console: factory reset failed")
            where = ("it goes on at the next boot" if factoryreset.record_path().exists()
                     else "nothing was changed")
            app.call_from_thread(self._done, "factory reset failed: %s (a bug); %s; see "
                                 "'journalctl -t rackforge-console'"
                                 % (type(exc).__name__, where), False)
            return
        LOG.warning("console: factory reset of %s done", self.plan.hostname)
        app.call_from_thread(self._done, "reset: first boot waits for join settings (Esc, "
                             "then 'Join the cluster with a new token')", True)

    def _done(self, line, ok):
        self.busy = False
        self.finished = ok
        self.say(line)
