"""The console's "Join with a new token": for a node whose first boot has not joined.

A node stuck at its join (a token that expired before it came up, a mistyped
endpoint or CA pin) has no node agent yet, so the console does this one itself,
as root: :mod:`rackforge.firstboot.rejoin` checks that the node is not a member,
validates the new settings by the bootstrap file's rules, writes them and starts
first boot again.  The screen shows what first boot says now (its console line
and the join step's last error) and the current endpoints and pin, to be
corrected; the token field starts empty, is masked, and is emptied once used.
"""

import logging

from textual.widgets import Button, Static

from rackforge import errors
from rackforge.installer.tui import ConsoleInput, field_row, text
from rackforge.nodeagent.consoleactions import ActionUnavailable, FormScreen

LOG = logging.getLogger(__name__)


def check(join_state):
    """:class:`ActionUnavailable` unless the node may join with new settings (the
    refusal's own line: ``rejoin.refusal``)."""
    from rackforge.firstboot import rejoin
    refused = rejoin.refusal(join_state)
    if refused is not None:
        raise ActionUnavailable(action="join", why=str(refused))


class JoinScreen(FormScreen):
    TITLE = "join with a new token"

    def __init__(self, join_state):
        super().__init__()
        self.state = join_state
        self.busy = False

    def fields(self):
        s = self.state
        yield Static(text("First boot: %s" % (s.banner or "no word from it yet")))
        if s.error:
            yield Static(text("Its join step failed: %s" % s.error))
        yield Static(text("New join settings, from 'rackforge cluster token create --json' "
                          "on a controller:"), classes="heading")
        yield field_row("Endpoints", "endpoints", "https://10.0.0.5:9443 (comma between)")
        yield field_row("Token", "token", "ID.SECRET", password=True)
        yield field_row("CA pin", "pin", "sha256:...")
        yield Static(text("First boot starts again at its join step with these."))

    def buttons(self):
        yield Button("< Join >", id="join")

    def on_mount(self):
        self.query_one("#endpoints", ConsoleInput).value = ", ".join(self.state.endpoints)
        self.query_one("#pin", ConsoleInput).value = self.state.ca_sha256
        self.query_one("#token", ConsoleInput).focus()

    def apply(self):
        if self.busy:
            return
        from rackforge.firstboot import rejoin
        endpoints = rejoin.split_endpoints(self.query_one("#endpoints", ConsoleInput).value)
        token_box = self.query_one("#token", ConsoleInput)
        token, pin = token_box.value.strip(), self.query_one("#pin", ConsoleInput).value.strip()
        if not token:
            self.say("the token is missing: type the one 'rackforge cluster token create' "
                     "printed")
            return
        self.busy = True
        self.say("writing the join settings ...")
        app = self.app
        app.run_worker(lambda: self._apply(app, endpoints, token, pin), thread=True,
                       group="join", exit_on_error=False)

    def _apply(self, app, endpoints, token, pin):
        try:
            boot = app.rejoin(endpoints, token, pin)
        except errors.RackforgeError as exc:
            app.call_from_thread(self._done, str(exc), False)
            return
        except Exception as exc:    # noqa: BLE001 - a bug: one line, never its locals
            LOG.error("console: the join settings were not applied: %s (a bug; the "
                      "traceback is left out: it would hold the token)", type(exc).__name__)
            app.call_from_thread(self._done, "not applied: %s (a bug); see 'journalctl -t "
                                 "rackforge-console'" % type(exc).__name__, False)
            return
        LOG.warning("console: join settings replaced (endpoints %s); first boot started "
                    "again", ", ".join(boot.join.endpoints))
        app.call_from_thread(self._done, "first boot runs again with the new settings: the "
                             "status page follows it (Esc)", True)

    def _done(self, line, ok):
        self.busy = False
        if ok:
            self.query_one("#token", ConsoleInput).value = ""
        self.say(line)
