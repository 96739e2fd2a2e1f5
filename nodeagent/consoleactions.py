"""The console's actions (F2 on the status page): a menu, the password gate, the network.

Screens only; what they change is done by the node agent through the local API
(:mod:`.localapi`, :mod:`.netchange`), so a console that dies half-way leaves
nothing half-done: the agent's timer rolls an unconfirmed network back.

- :class:`ActionsScreen`: the menu.  An action that changes the node first
  passes :class:`PasswordScreen` unless the gate (:mod:`.consolegate`) is open.
- :class:`NetworkScreen`: DHCP or a static address, gateway, VLAN on the NIC the
  management network uses now; Apply sends it to the agent, which applies it at
  once and rolls it back unless it is confirmed:
- :class:`ConfirmScreen`: the time left, Keep it / Roll back now; when the time
  runs out it shows what the agent did.

Built from the installer's widgets (``installer/tui.py``): the same look on the
Linux console, keyboard only.
"""

import logging
import time

from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Static

from rackforge import errors
from rackforge.installer.tui import Body, ChoiceList, ConsoleInput, field_row, text
from rackforge.nodeagent import lldp, localapi, netchange, nettest
from rackforge.nodeagent.consoleview import fit

LOG = logging.getLogger(__name__)
CONFIRM_WITHIN = netchange.CONFIRM_DEFAULT
#: the agent applies a change and checks its next hop (30 s by default, DHCP up to 60 s)
PROPOSE_TIMEOUT = 120
SLOW_TIMEOUT = 60       # the BMC over IPMI, lldpctl, the network test
SETTLE_WAIT = 20        # after the deadline, how long the agent's rollback is waited for

#: (key, label, changes the node)
ACTIONS = [("network", "Management network (DHCP or static, VLAN)", True),
           ("nettest", "Test the network: gateway, VIP, each peer, DNS", False),
           ("lldp", "LLDP neighbours of each NIC (switch and port)", False),
           ("bmc", "BMC: its address and a user's password (in band)", True),
           ("services", "Services: restart one (or the agent), follow its journal", False),
           ("join", "Join the cluster with a new token (first boot not joined)", True),
           ("reset", "Reset this node to its factory state (type its name)", True),
           ("shell", "A root shell (break glass; logged)", True)]
JOURNAL_LINES = 200     # kept on the journal screen; the journal keeps the rest


def _spec_fields(spec):
    """``(base NIC, dhcp, address, gateway, vlan id)`` of a kept spec, for the form."""
    vlan = spec.get("vlan") or {}
    base = vlan.get("link") if vlan else spec.get("interface")
    return (base, spec.get("address") == "dhcp",
            "" if spec.get("address") == "dhcp" else spec.get("address", ""),
            spec.get("gateway") or "", str(vlan.get("id") or ""))


def new_spec(current, dhcp, address, gateway, vlan):
    """The spec the form asks for, from the kept one: ``(spec, None)`` or ``(None, why)``.
    Only the top of a plain NIC or a VLAN on it is edited here; a bond or a bridge is
    kept as it is (its address and gateway may change)."""
    spec = {k: v for k, v in current.items() if k not in ("address", "gateway")}
    address, gateway, vlan = address.strip(), gateway.strip(), vlan.strip()
    if dhcp:
        if gateway:
            return None, "a gateway is for a static address; DHCP gives its own"
        spec["address"] = "dhcp"
    else:
        if not address:
            return None, "type the address with its prefix, like 10.0.0.11/24"
        spec["address"] = address
        if gateway:
            spec["gateway"] = gateway
    if spec.get("bridge") or spec.get("bond"):
        if vlan != str((current.get("vlan") or {}).get("id") or ""):
            return None, "this node's network has a bond or a bridge: its VLAN is " \
                         "changed in the bootstrap file, not here"
        return spec, None
    base = (current.get("vlan") or {}).get("link") or current.get("interface")
    spec.pop("vlan", None)
    if vlan:
        if not vlan.isdigit() or not 1 <= int(vlan) <= 4094:
            return None, "the VLAN id must be a number from 1 to 4094, or empty"
        spec["vlan"] = {"id": int(vlan), "link": base, "name": "%s.%s" % (base, vlan)}
        spec["interface"] = spec["vlan"]["name"]
        if len(spec["interface"]) > 15:
            name = "vlan%s" % vlan
            spec["vlan"]["name"] = spec["interface"] = name
    else:
        spec["interface"] = base
    return spec, None


class PasswordScreen(ModalScreen):
    """Root's password, once per :data:`consolegate.IDLE` of work; dismissed with True
    when the gate opened, False on Esc."""

    BINDINGS = [Binding("escape", "cancel", "cancel", show=False)]

    def compose(self):
        with Vertical(id="gate"):
            yield Static(text("This changes the node: root's password, please."),
                         classes="heading")
            yield field_row("Password", "password", password=True)
            yield Static("", id="problems")

    def on_input_submitted(self, event):
        ok, why = self.app.gate.unlock(event.value)
        event.input.value = ""
        if ok:
            self.dismiss(True)
        else:
            self.query_one("#problems", Static).update(text(why))

    def action_cancel(self):
        self.dismiss(False)


class ActionScreen(Screen):
    """Title, body, problem line, buttons, keys; Esc goes back to the menu."""

    BINDINGS = [Binding("escape", "back", "back", show=False)]
    TITLE = ""
    KEYS = "Tab: move  Enter: press  Esc: back"

    def compose(self):
        yield Static(text("rackforge console  " + self.TITLE), id="title")
        with Body(id="body"):
            yield from self.fields()
        yield Static("", id="problems")
        with Horizontal(id="buttons"):
            yield from self.buttons()
        yield Static(text(self.KEYS), id="keys")

    def fields(self):
        return []

    def buttons(self):
        return []

    def say(self, line):
        self.query_one("#problems", Static).update(text(line or ""))

    def action_back(self):
        self.app.pop_screen()


class ActionsScreen(ActionScreen):
    TITLE = "actions"
    KEYS = "Up/Down, Enter: choose  Esc: back to the status"

    def fields(self):
        yield Static(text("What to do (the ones marked * ask for root's password):"),
                     classes="heading")
        yield ChoiceList([(k, ["%s %s" % ("*" if gated else " ", label)], True)
                          for k, label, gated in ACTIONS], id="actions")

    def on_choice_list_changed(self, event):
        key = event.choice_list.value
        event.choice_list.chosen = []
        gated = dict((k, g) for k, _, g in ACTIONS)[key]
        self.app.open_action(key, gated)


class FormScreen(ActionScreen):
    """A form whose button runs :meth:`apply` behind the password gate; Enter moves on,
    and Esc waits while ``busy`` (the change is out, its answer not yet back)."""

    busy = False

    def on_input_submitted(self, event):
        self.focus_next()

    def on_button_pressed(self, event):
        self.app.gated(self.apply)

    def action_back(self):
        if not self.busy:
            self.app.pop_screen()

    def apply(self):
        raise NotImplementedError


class NetworkScreen(FormScreen):
    TITLE = "management network"

    def __init__(self, state):
        super().__init__()
        self.current = state["current"]

    def fields(self):
        base, dhcp, address, gateway, vlan = _spec_fields(self.current)
        yield Static(text("Now: %s" % describe(self.current)), classes="heading")
        yield Static(text("On %s:" % base))
        yield ChoiceList([("static", ["static"], True), ("dhcp", ["DHCP"], True)],
                         chosen=["dhcp" if dhcp else "static"], id="mode")
        with Vertical(id="static"):
            yield field_row("Address/prefix", "address", "10.0.0.11/24")
            yield field_row("Gateway", "gateway", "10.0.0.1 (optional)")
        yield field_row("VLAN id", "vlan", "none (optional: 1-4094)")
        yield Static(text("Applied at once; rolled back by itself unless you confirm it "
                          "within %d s." % self.app.confirm_within))

    def on_mount(self):
        _, dhcp, address, gateway, vlan = _spec_fields(self.current)
        self.query_one("#address", ConsoleInput).value = address
        self.query_one("#gateway", ConsoleInput).value = gateway
        self.query_one("#vlan", ConsoleInput).value = vlan
        self.query_one("#static").display = not dhcp

    def buttons(self):
        yield Button("< Apply >", id="apply")

    def on_choice_list_changed(self, event):
        self.query_one("#static").display = event.choice_list.value == "static"

    def apply(self):
        if self.busy:
            return
        spec, why = new_spec(self.current,
                             self.query_one("#mode", ChoiceList).value == "dhcp",
                             self.query_one("#address", ConsoleInput).value,
                             self.query_one("#gateway", ConsoleInput).value,
                             self.query_one("#vlan", ConsoleInput).value)
        if why:
            self.say(why)
            return
        self.say("applying %s ..." % describe(spec))
        self.busy = True
        app = self.app
        # an app worker: it outlives this screen, which it replaces with the confirmation
        app.run_worker(lambda: self._propose(app, spec), thread=True, group="network")

    def _propose(self, app, spec):
        try:
            state = app.client.post("/v1/network", {
                "spec": spec, "confirm_within": app.confirm_within}, timeout=PROPOSE_TIMEOUT)
        except errors.RackforgeError as exc:
            app.call_from_thread(self._refused, str(exc))
            return
        app.call_from_thread(app.switch_screen, ConfirmScreen(state))

    def _refused(self, line):
        self.busy = False
        self.say(line)


class ConfirmScreen(ActionScreen):
    """The change is live: keep it, or roll it back (by hand or when the time is up)."""

    TITLE = "management network: confirm"
    KEYS = "Tab: move  Enter: press"

    def __init__(self, state):
        super().__init__()
        self.pending = state["pending"]
        self.deadline = self.app_clock() + float(self.pending["left_s"])
        self.done = False

    @staticmethod
    def app_clock():
        return time.monotonic()

    def fields(self):
        yield Static(text("Applied: %s (before: %s)." % (describe(self.pending["spec"]),
                                                         describe(self.pending["previous"]))),
                     classes="heading")
        yield Static(text("Can you reach what you need (try the network test from another "
                          "console, or ping from your desk)? Keep it, or it is rolled back."))
        yield Static("", id="left")

    def buttons(self):
        yield Button("< Keep it >", id="keep")
        yield Button("< Roll back now >", id="rollback")

    def on_mount(self):
        self.tick()
        self.set_interval(1.0, self.tick)

    def left(self):
        return max(0, int(self.deadline - self.app_clock() + 0.999))

    def tick(self):
        if self.done:
            return
        left = self.left()
        self.query_one("#left", Static).update(Text(
            "Rolled back in %d:%02d unless you keep it." % divmod(left, 60)))
        if left == 0:
            self.done = True
            self.run_worker(self._settled, thread=True, exclusive=True)

    def action_back(self):
        """Esc leaves only once it is settled: until then, Keep or Roll back (or the time)."""
        if self.done:
            self.app.pop_screen()

    def on_button_pressed(self, event):
        if self.done:
            self.app.pop_screen()
            return
        self.done = True
        self.app.gate.touch()
        path = {"keep": "/v1/network/confirm", "rollback": "/v1/network/rollback"}[
            event.button.id]
        self.run_worker(lambda: self._send(path), thread=True, exclusive=True)

    def _send(self, path):
        try:
            self.app.client.post(path, {})
            line = ("kept: %s" % describe(self.pending["spec"]) if path.endswith("confirm")
                    else "rolled back to %s" % describe(self.pending["previous"]))
        except localapi.LocalApiError as exc:
            line = str(exc)
        self.app.call_from_thread(self._finish, line)

    def _settled(self, wait=SETTLE_WAIT):
        """The time is up: the agent rolls back; say what the network is then."""
        deadline = time.monotonic() + wait
        while True:
            try:
                state = self.app.client.get("/v1/network")
            except localapi.LocalApiError as exc:
                line = str(exc)
                break
            if state.get("pending") is None:
                line = "not confirmed in time: rolled back to %s" % describe(state["current"])
                break
            if time.monotonic() > deadline:
                line = "not confirmed in time; the agent has not rolled back yet: see " \
                       "'journalctl -u rackforge-nodeagent'"
                break
            time.sleep(0.5)
        self.app.call_from_thread(self._finish, line)

    def _finish(self, line):
        LOG.warning("console: network: %s", line)
        self.query_one("#left", Static).update(Text(""))
        self.say(line)
        for button in self.query(Button):
            button.display = button.id == "keep"
        self.query_one("#keep", Button).label = "< Back >"


describe = netchange.describe


class ReportScreen(ActionScreen):
    """Lines the agent's answer to ``GET path`` makes (``render``), fetched again on
    Refresh; read-only."""

    def __init__(self, title, path, render):
        super().__init__()
        self.TITLE, self.path, self.make_lines = title, path, render

    def fields(self):
        yield Static(text("asking the node agent ..."), id="report")

    def buttons(self):
        yield Button("< Refresh >", id="refresh")

    def on_mount(self):
        self.refresh_report()

    def on_button_pressed(self, event):
        self.refresh_report()

    def refresh_report(self):
        self.run_worker(self._fetch, thread=True, exclusive=True)

    def _fetch(self):
        try:
            shown, problem = self.make_lines(
                self.app.client.get(self.path, timeout=SLOW_TIMEOUT)), ""
        except errors.RackforgeError as exc:
            shown, problem = None, str(exc)
        self.app.call_from_thread(self._show, shown, problem)

    def _show(self, shown, problem):
        if shown is not None:
            self.query_one("#report", Static).update(text([fit(x) for x in shown]))
        self.say(problem)


def service_line(svc):
    line = "%-12s %-8s %s" % (svc["name"], svc.get("state") or "?", svc.get("error") or "")
    return fit(line)


class ServicesScreen(ActionScreen):
    """The agent and this node's services: restart one (password), follow its journal."""

    TITLE = "services"
    KEYS = "Up/Down, Enter: choose  Tab: move  Esc: back"

    def __init__(self, services):
        super().__init__()
        self.services = {s["name"]: s for s in services}

    def fields(self):
        yield Static(text("Choose a service, then Restart or Journal:"), classes="heading")
        yield ChoiceList([(name, [service_line(svc)], True)
                          for name, svc in self.services.items()],
                         chosen=list(self.services)[:1], id="services")

    def buttons(self):
        yield Button("< Restart >", id="restart")
        yield Button("< Journal >", id="journal")

    def chosen(self):
        return self.services[self.query_one("#services", ChoiceList).value]

    def on_button_pressed(self, event):
        svc = self.chosen()
        if event.button.id == "journal":
            self.app.push_screen(JournalScreen(svc))
        else:
            self.app.gated(lambda: self.restart(svc))

    def restart(self, svc):
        self.say("restarting %s ..." % svc["name"])
        self.run_worker(lambda: self._restart(svc), thread=True, exclusive=True)

    def _restart(self, svc):
        try:
            for unit in svc["units"]:       # MariaDB and RabbitMQ start only through it
                self.app.open_gate(unit)
            self.app.systemctl("restart", *svc["units"])
            line = "restarted %s (%s)" % (svc["name"], ", ".join(svc["units"]))
        except errors.RackforgeError as exc:
            line = str(exc)
        LOG.warning("console: %s", line)
        self.app.call_from_thread(self.say, line)


class JournalScreen(ActionScreen):
    """``journalctl --follow`` of a service's units, until Esc."""

    KEYS = "Esc: back (stops following)"

    def __init__(self, svc):
        super().__init__()
        self.svc = svc
        self.TITLE = "journal of %s (following)" % svc["name"]
        self.proc = None

    def fields(self):
        from textual.widgets import Log
        yield Log(max_lines=JOURNAL_LINES, id="journal")

    def on_mount(self):
        self.run_worker(self._follow, thread=True, exclusive=True)

    closed = False

    def _follow(self):
        log = self.query_one("#journal")
        app = self.app
        try:
            proc = app.journal(self.svc["units"])
        except OSError as exc:
            app.call_from_thread(self.say, "journalctl did not start: %s"
                                 % (exc.strerror or exc))
            return
        self.proc = proc
        if self.closed:                 # Esc came while it started
            self._stop(proc)
            return
        for line in proc.stdout:
            if self.closed:
                break
            app.call_from_thread(log.write_line, fit(line.rstrip("\n")))

    def on_unmount(self):
        self.closed = True
        if self.proc is not None:
            self._stop(self.proc)

    @staticmethod
    def _stop(proc):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except Exception:       # noqa: BLE001 - it is going; the kernel reaps it
                pass


class BmcScreen(ActionScreen):
    """The node's BMC over the in-band interface: static address or DHCP, a password."""

    TITLE = "BMC (in band)"

    def __init__(self, state):
        super().__init__()
        self.state = state

    def fields(self):
        yield Static(text("Now: %s" % bmc_line(self.state)), id="now", classes="heading")
        yield ChoiceList([("static", ["static"], True), ("dhcp", ["DHCP"], True)],
                         chosen=["dhcp" if self.state.get("mode") == "dhcp" else "static"],
                         id="bmc-mode")
        with Vertical(id="bmc-static"):
            yield field_row("Address/prefix", "bmc-address", "10.1.0.12/24")
            yield field_row("Gateway", "bmc-gateway", "10.1.0.1 (optional)")
        yield Static(text("A BMC user's new password (user 2 is often the administrator):"),
                     classes="heading")
        yield field_row("User number", "bmc-user", "2")
        yield field_row("New password", "bmc-password", "8 to 20 characters", password=True)
        yield field_row("Again", "bmc-again", "", password=True)

    def on_mount(self):
        static = self.state.get("mode") != "dhcp"
        self.query_one("#bmc-static").display = static
        if static and self.state.get("address"):
            self.query_one("#bmc-address", ConsoleInput).value = self.state["address"]
        if self.state.get("gateway") and self.state["gateway"] != "0.0.0.0":
            self.query_one("#bmc-gateway", ConsoleInput).value = self.state["gateway"]

    def buttons(self):
        yield Button("< Set address >", id="set-address")
        yield Button("< Set password >", id="set-password")

    def on_choice_list_changed(self, event):
        self.query_one("#bmc-static").display = event.choice_list.value == "static"

    def on_input_submitted(self, event):
        self.focus_next()

    def value(self, input_id):
        return self.query_one("#" + input_id, ConsoleInput).value.strip()

    def on_button_pressed(self, event):
        self.app.gated(lambda: self.pressed(event.button.id))

    def pressed(self, button):
        if button == "set-address":
            if self.query_one("#bmc-mode", ChoiceList).value == "dhcp":
                body = {"dhcp": True}
            else:
                body = {"address": self.value("bmc-address")}
                if self.value("bmc-gateway"):
                    body["gateway"] = self.value("bmc-gateway")
            self.send("/v1/bmc", body, "BMC address set")
            return
        user, password = self.value("bmc-user"), self.value("bmc-password")
        if not user.isdigit():
            self.say("type the BMC user's number (1-63)")
        elif password != self.value("bmc-again"):
            self.say("the two passwords differ; type them again")
        else:
            for field in ("bmc-password", "bmc-again"):
                self.query_one("#" + field, ConsoleInput).value = ""
            self.send("/v1/bmc/password", {"user": int(user), "password": password},
                      "the password of BMC user %s is changed" % user)

    def send(self, path, body, done):
        self.say("asking the BMC ...")
        self.run_worker(lambda: self._send(path, body, done), thread=True, exclusive=True)

    def _send(self, path, body, done):
        try:
            answer = self.app.client.post(path, body, timeout=SLOW_TIMEOUT)
        except errors.RackforgeError as exc:
            self.app.call_from_thread(self.say, str(exc))
            return
        self.app.call_from_thread(self._done, answer, done)

    def _done(self, answer, done):
        if "address" in answer:
            self.state = answer
            self.query_one("#now", Static).update(text("Now: %s" % bmc_line(answer)))
        self.say(done)


def bmc_line(state):
    words = ["%s (%s)" % (state.get("address") or "no address", state.get("mode") or "?")]
    if state.get("gateway") and state["gateway"] != "0.0.0.0":
        words.append("gateway %s" % state["gateway"])
    if state.get("mac"):
        words.append("MAC %s" % state["mac"])
    return ", ".join(words)


class ActionUnavailable(errors.RackforgeError):
    message = "{action}: {why}"


def screen_for(key, client):
    """The screen of action ``key``, made from what the agent answers now."""
    if key == "network":
        state = client.get("/v1/network")
        if state.get("pending"):
            return ConfirmScreen(state)          # a change waits: confirm or roll back
        if not state.get("current"):
            raise ActionUnavailable(action="network", why="first boot has not kept this "
                                    "node's management network yet")
        return NetworkScreen(state)
    if key == "lldp":
        return ReportScreen("LLDP neighbours", "/v1/lldp", lldp.lines)
    if key == "nettest":
        return ReportScreen("network test", "/v1/nettest", nettest.lines)
    if key == "bmc":
        return BmcScreen(client.get("/v1/bmc"))
    if key == "services":
        return ServicesScreen(client.get("/v1/services")["services"])
    raise KeyError(key)
