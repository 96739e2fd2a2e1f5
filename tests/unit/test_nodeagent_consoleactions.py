"""The console's actions headless (Textual's pilot) against a local API served on a socket
by the agent's own code (:mod:`netchange` with recorded hooks for the network): the menu,
the password gate, the network form's validation, commit-confirm kept and rolled back."""

import os

import pytest
from pilot import Keys, run_app, screen_text
from test_nodeagent_console import DOC

from rackforge.nodeagent import (bmcinband, consoleactions, consolegate, lldp, localapi,
                                 netchange)

# recorded /etc/shadow entries for the password "correct horse" (yescrypt is Debian's
# default since 11; SHA-512 is what older installs kept)
YESCRYPT = "$y$j9T$ViiMcnEFEnlSXx8Wc9cwq0$BjwQvdFB5TyTKezVdEHK7jZ0bqhwwSYl0bK0emRXYJ8"
SHA512 = ("$6$rackforgesalt$8ILGJ4YBYcBv/kwOgUExnpoV1rhOYEyCcbDdXIttq3z8JGm/Jw2GW/iTn97c9qpF"
          "p8uHuCXdaQDEL8jFybnnc1")
KEPT = {"interface": "eno1", "address": "10.0.0.12/24", "gateway": "10.0.0.1"}
SERVICES = [{"name": "nodeagent", "units": ["rackforge-nodeagent.service"], "state": "ok",
             "error": ""},
            {"name": "rabbitmq", "units": ["rabbitmq-server.service"], "state": "failed",
             "error": "AMQP port 10.0.0.12:5672: Connection refused"}]


@pytest.mark.parametrize("stored", [YESCRYPT, SHA512])
def test_roots_password_is_checked_by_the_systems_crypt(stored):
    assert consolegate.check_password("correct horse", stored)
    assert not consolegate.check_password("correct horsE", stored)
    assert not consolegate.check_password("", stored)


@pytest.mark.parametrize("stored", ["!", "*", "", "!" + YESCRYPT, None])
def test_a_locked_or_empty_root_entry_never_opens(stored):
    assert not consolegate.check_password("correct horse", stored)


def test_the_shadow_file_is_read_for_root_alone(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.write_text("daemon:*:19000:0:99999:7:::\nroot:%s:19000:0:99999:7:::\n" % SHA512)
    assert consolegate.shadow_hash("root", shadow) == SHA512
    assert consolegate.shadow_hash("nobody", shadow) is None
    assert consolegate.shadow_hash("root", tmp_path / "missing") is None


def test_the_gate_closes_when_idle_and_locks_out_after_three_wrong(caplog):
    now = [0.0]
    gate = consolegate.Gate(stored=lambda: SHA512, clock=lambda: now[0], idle=300)
    assert not gate.is_open()
    assert gate.unlock("correct horse") == (True, "") and gate.is_open()
    now[0] += 200
    gate.touch()                      # work keeps it open
    now[0] += 200
    assert gate.is_open()
    now[0] += 301
    assert not gate.is_open()         # idle: closed
    assert gate.unlock("no") == (False, "wrong password")
    assert gate.unlock("no") == (False, "wrong password")
    assert gate.unlock("no") == (False, "wrong password; 3 wrong in a row: wait 30 s")
    assert gate.unlock("correct horse")[0] is False      # locked out, even the right one
    now[0] += 31
    assert gate.unlock("correct horse") == (True, "")
    assert "correct horse" not in caplog.text and "a wrong root password (3 in a row)" \
        in caplog.text


@pytest.mark.parametrize("dhcp, address, gateway, vlan, expected", [
    (False, "10.0.0.13/24", "10.0.0.1", "",
     {"interface": "eno1", "address": "10.0.0.13/24", "gateway": "10.0.0.1"}),
    (True, "", "", "", {"interface": "eno1", "address": "dhcp"}),
    (False, "10.0.0.13/24", "", "100", {"interface": "eno1.100", "address": "10.0.0.13/24",
                                        "vlan": {"id": 100, "link": "eno1",
                                                 "name": "eno1.100"}}),
])
def test_the_form_makes_the_spec_from_the_kept_one(dhcp, address, gateway, vlan, expected):
    assert consoleactions.new_spec(KEPT, dhcp, address, gateway, vlan) == (expected, None)
    # and a VLAN dropped again is the plain NIC
    tagged, _ = consoleactions.new_spec(KEPT, False, "10.0.0.13/24", "", "7")
    assert consoleactions.new_spec(tagged, False, "10.0.0.13/24", "", "") == (
        {"interface": "eno1", "address": "10.0.0.13/24"}, None)


@pytest.mark.parametrize("dhcp, address, gateway, vlan, says", [
    (True, "", "10.0.0.1", "", "a gateway is for a static address"),
    (False, "", "", "", "type the address with its prefix"),
    (False, "10.0.0.13/24", "", "4095", "the VLAN id must be a number from 1 to 4094"),
    (False, "10.0.0.13/24", "", "x", "the VLAN id must be a number"),
])
def test_the_forms_own_refusals(dhcp, address, gateway, vlan, says):
    spec, why = consoleactions.new_spec(KEPT, dhcp, address, gateway, vlan)
    assert spec is None and says in why


def test_a_bond_keeps_its_vlan():
    bonded = {"interface": "bond0.100", "address": "10.0.0.12/24",
              "bond": {"name": "bond0", "mode": "802.3ad", "members": ["eno1", "eno2"]},
              "vlan": {"id": 100, "link": "bond0", "name": "bond0.100"}}
    spec, why = consoleactions.new_spec(bonded, False, "10.0.0.14/24", "", "100")
    assert why is None and spec == dict(bonded, address="10.0.0.14/24")
    assert "bond or a bridge" in consoleactions.new_spec(bonded, False, "10.0.0.14/24", "",
                                                         "200")[1]


# -- the app against the agent's code on a socket ---------------------------------------
class Timers:
    """The agent's rollback timer, fired by the test instead of by time."""

    def __init__(self):
        self.made = []

    def __call__(self, seconds, callback):
        timer = self

        class T:
            daemon = False
            cancelled = False

            def start(self):
                timer.made.append(self)

            def cancel(self):
                self.cancelled = True
        t = T()
        t.seconds, t.callback = seconds, callback
        return t


class Agent:
    """The node agent's local API as the agent serves it, its network hooks recorded."""

    def __init__(self, tmp_path):
        from test_nodeagent_bmcinband import Bmc
        self.applied, self.kept, self.timers = [], dict(KEPT), Timers()
        self.fake_bmc = Bmc()
        self.bmc = bmcinband.InbandBmc(self.fake_bmc.command)
        self.change = netchange.NetworkChange(
            apply=lambda spec, replacing: self.applied.append(spec),
            keep=lambda s: self.kept.update(s) or self._set(s),
            current=lambda: dict(self.kept), timer=self.timers)
        self.api = localapi.LocalApi({
            ("GET", "/v1/status"): lambda: DOC,
            ("GET", "/v1/lldp"): self.lldp,
            ("GET", "/v1/nettest"): lambda: {"results": [
                {"target": "gateway", "address": "10.0.0.1", "ok": True, "detail": "0.3 ms"},
                {"target": "peer node3", "address": "10.0.0.13", "ok": False,
                 "detail": "no answer to ping"}]},
            ("GET", "/v1/services"): lambda: {"services": SERVICES},
            ("GET", "/v1/bmc"): self.bmc.state,
            ("POST", "/v1/bmc"): self.bmc.set_network,
            ("POST", "/v1/bmc/password"): self.bmc.set_password,
            ("GET", "/v1/network"): self.change.state,
            ("POST", "/v1/network"): self.change.propose,
            ("POST", "/v1/network/confirm"): self.change.confirm,
            ("POST", "/v1/network/rollback"): self.change.rollback},
            path=tmp_path / "api.sock", allowed_uids=(os.getuid(),)).start()
        self.client = localapi.Client(tmp_path / "api.sock")

    def _set(self, spec):
        self.kept = dict(spec)

    lldp_answers = None

    def lldp(self):
        """lldpd's recorded answer, then lldpd gone."""
        from test_nodeagent_lldp import FIXTURES, fake_run
        self.lldp_asked = getattr(self, "lldp_asked", 0) + 1
        if self.lldp_asked == 1:
            text = (FIXTURES / "lldpd-1.0.16-veth.json0.json").read_text()
            return {"nics": lldp.by_nic(lldp.query(run=fake_run(stdout=text))["nics"]
                                        .get("eth0", []), ["eth0", "eno2"])}
        return lldp.query(run=fake_run(raises=FileNotFoundError("lldpctl")))


@pytest.fixture
def agent(tmp_path, monkeypatch):
    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path / "state"))
    found = Agent(tmp_path)
    yield found
    found.api.stop()


class Operator(Keys):
    async def settle(self):
        await self.app.workers.wait_for_complete()
        await self.pause()
        await self.app.workers.wait_for_complete()
        await self.pause()

    async def action(self, key, password=None):
        """F2, action ``key`` chosen; root's password typed when given (it must be asked)."""
        await self.pilot.press("f2")
        await self.pause()
        assert self.screen.TITLE == "actions"
        await self.choose("actions", key)
        await self.pause()
        if password is not None:
            assert isinstance(self.screen, consoleactions.PasswordScreen)
            await self.type("password", password)
            await self.pilot.press("enter")
        await self.settle()

    async def open_network(self, password="correct horse"):
        await self.action("network", password)

    async def apply(self, address=None, vlan=None):
        if address is not None:
            await self.type("address", address)
        if vlan is not None:
            await self.type("vlan", vlan)
        self.screen.query_one("#apply").press()
        await self.settle()


class Journal:
    """``journalctl --follow`` as the console starts it: lines, then it waits."""

    def __init__(self, lines):
        self.stdout = iter(lines)
        self.terminated = False

    def poll(self):
        return 0 if self.terminated else None

    def terminate(self):
        self.terminated = True


def run(agent, script, gate=None, refresh_every=3600):
    from rackforge.nodeagent import console
    gate = gate or consolegate.Gate(stored=lambda: YESCRYPT)

    class Console(console.ConsoleApp):
        done = []

        def systemctl(self, *args):
            self.done.append(("systemctl",) + args)

        def open_gate(self, unit):
            self.done.append(("open-gate", unit))

        def journal(self, units):
            self.done.append(("journal", tuple(units)))
            self.followed = Journal(["2026-11-30T10:00:0%d+0000 node2 rabbitmq[%d]: line %d\n"
                                     % (i, 100 + i, i) for i in range(3)])
            return self.followed

        def break_glass(self):
            self.done.append(("shell",))

    async def first(app):
        await app.workers.wait_for_complete()
    app = Console(agent.client, refresh_every=refresh_every, gate=gate)
    app.done = []
    run_app(app, script, settle=first)
    return app


def test_the_password_gate_stands_before_the_network_and_esc_leaves_it(agent):
    async def script(pilot):
        op = Operator(pilot)
        await pilot.press("f2")
        await op.pause()
        await op.choose("actions", "network")
        await op.pause()
        await op.type("password", "hunter")
        assert "******" in screen_text(op.app) and "hunter" not in screen_text(op.app)
        await pilot.press("enter")
        await op.pause()
        assert "wrong password" in op.problems() and not op.app.gate.is_open()
        await pilot.press("escape")
        await op.pause()
        assert op.screen.TITLE == "actions" and not op.app.gate.is_open()

    run(agent, script)
    assert agent.applied == []


def test_a_confirmed_change_is_kept(agent):
    async def script(pilot):
        op = Operator(pilot)
        await op.open_network()
        assert isinstance(op.screen, consoleactions.NetworkScreen)
        assert "Now: eno1 10.0.0.12/24, gateway 10.0.0.1" in screen_text(op.app)
        await op.apply(address="10.0.0.13/24")
        assert isinstance(op.screen, consoleactions.ConfirmScreen)
        shown = screen_text(op.app)
        assert "Applied: eno1 10.0.0.13/24, gateway 10.0.0.1" in shown
        assert "Rolled back in 2:00 unless you keep it." in shown or \
            "Rolled back in 1:59 unless you keep it." in shown
        op.screen.query_one("#keep").press()
        await op.settle()
        assert "kept: eno1 10.0.0.13/24, gateway 10.0.0.1" in op.problems()

    run(agent, script)
    assert agent.applied == [dict(KEPT, address="10.0.0.13/24")]
    assert agent.kept == dict(KEPT, address="10.0.0.13/24")
    # the timer runs to the deadline the console shows (the apply took a moment)
    assert agent.timers.made[0].seconds == pytest.approx(consoleactions.CONFIRM_WITHIN, abs=1)
    assert agent.timers.made[0].cancelled


def test_an_unconfirmed_change_is_rolled_back_by_the_agent_and_the_console_says_so(agent):
    async def script(pilot):
        op = Operator(pilot)
        await op.open_network()
        await op.apply(vlan="100")
        screen = op.screen
        assert isinstance(screen, consoleactions.ConfirmScreen)
        # nobody presses anything: the agent's timer fires, the console's time is up
        agent.timers.made[0].callback()
        screen.deadline = screen.app_clock()
        screen.tick()
        await op.settle()
        assert "not confirmed in time: rolled back to eno1 10.0.0.12/24, gateway " \
               "10.0.0.1" in op.problems()

    run(agent, script)
    assert agent.applied == [dict(KEPT, interface="eno1.100", vlan={
        "id": 100, "link": "eno1", "name": "eno1.100"}), KEPT]
    assert agent.kept == KEPT and agent.change.pending() is None


def test_a_bad_address_is_refused_by_the_agent_in_one_line_and_nothing_changes(agent):
    async def script(pilot):
        op = Operator(pilot)
        await op.open_network()
        await op.apply(address="10.0.0.300/24")
        assert isinstance(op.screen, consoleactions.NetworkScreen)
        assert "'address' is not an IPv4 address with prefix" in op.problems()
        await op.apply(address="")
        assert "type the address with its prefix" in op.problems()

    run(agent, script)
    assert agent.applied == [] and agent.change.pending() is None


def test_a_change_left_pending_opens_on_its_confirmation(agent):
    agent.change.propose({"spec": dict(KEPT, address="10.0.0.15/24")})

    async def script(pilot):
        op = Operator(pilot)
        await op.open_network()
        assert isinstance(op.screen, consoleactions.ConfirmScreen)
        op.screen.query_one("#rollback").press()
        await op.settle()
        assert "rolled back to eno1 10.0.0.12/24" in op.problems()

    run(agent, script)
    assert agent.applied[-1] == KEPT and agent.kept == KEPT


def test_lldp_neighbours_need_no_password_and_say_when_lldpd_is_away(agent):
    async def script(pilot):
        op = Operator(pilot)
        await op.action("lldp")
        shown = screen_text(op.app)
        assert "LLDP neighbours" in shown and not op.app.gate.is_open()
        assert " eth0:\n   switch-a7 port rack7 port 12 (mac 3e:28:cf:88:3d:0f) mgmt 10.0.0.1" \
            in shown
        assert "eno2: no LLDP neighbour heard" in shown
        op.screen.query_one("#refresh").press()
        await op.settle()
        assert "lldpctl is not installed" in op.problems()
        assert "switch-a7" in screen_text(op.app)          # the last answer stays
        await pilot.press("escape")
        await op.pause()
        assert op.screen.TITLE == "actions"

    run(agent, script)


def test_the_network_test_shows_each_target(agent):
    async def script(pilot):
        op = Operator(pilot)
        await op.action("nettest")
        shown = screen_text(op.app)
        assert "ok   gateway" in shown and "FAIL peer node3" in shown
        assert "1 of 2 do not answer" in shown and not op.app.gate.is_open()

    run(agent, script)


def test_a_service_restarted_behind_the_password_and_its_journal_followed(agent):
    async def script(pilot):
        op = Operator(pilot)
        await op.action("services")
        assert "rabbitmq     failed   AMQP port 10.0.0.12:5672" in screen_text(op.app)
        await op.choose("services", "rabbitmq")
        op.screen.query_one("#journal").press()
        await op.settle()
        assert "journal of rabbitmq (following)" in screen_text(op.app)
        assert "node2 rabbitmq[102]: line 2" in screen_text(op.app)
        followed = op.app.followed
        await pilot.press("escape")                 # back: journalctl is stopped
        await op.pause()
        assert followed.terminated
        op.screen.query_one("#restart").press()
        await op.pause()
        assert isinstance(op.screen, consoleactions.PasswordScreen)
        await op.type("password", "correct horse")
        await pilot.press("enter")
        await op.settle()
        assert "restarted rabbitmq (rabbitmq-server.service)" in op.problems()

    app = run(agent, script)
    assert app.done == [("journal", ("rabbitmq-server.service",)),      # the agent's gate,
                        ("open-gate", "rabbitmq-server.service"),       # or no start
                        ("systemctl", "restart", "rabbitmq-server.service")]


def test_the_shell_is_behind_the_password(agent):
    async def script(pilot):
        op = Operator(pilot)
        await pilot.press("f2")
        await op.pause()
        await op.choose("actions", "shell")
        await op.pause()
        await pilot.press("escape")                 # no password: no shell
        await op.pause()
        assert op.app.done == []
        await op.choose("actions", "shell")
        await op.pause()
        await op.type("password", "correct horse")
        await pilot.press("enter")
        await op.settle()

    app = run(agent, script)
    assert app.done == [("shell",)]


def test_the_status_refreshes_behind_an_action_without_harm(agent):
    async def script(pilot):
        op = Operator(pilot)
        await op.open_network()
        assert isinstance(op.screen, consoleactions.NetworkScreen)
        for _ in range(3):                  # refreshes of the status page under it
            await pilot.pause(0.1)
            await op.app.workers.wait_for_complete()
        assert isinstance(op.screen, consoleactions.NetworkScreen)
        await pilot.press("escape")
        await pilot.press("escape")
        await op.pause()
        assert "rackforge console  node2" in screen_text(op.app)

    run(agent, script, refresh_every=0.05)


def test_the_bmcs_address_and_a_password_behind_the_password_gate(agent):
    async def script(pilot):
        op = Operator(pilot)
        await op.action("bmc", "correct horse")
        assert "Now: 10.1.0.12/24 (static), gateway 10.1.0.1, MAC 3c:ec:ef:12:34:56" \
            in screen_text(op.app)
        await op.type("bmc-address", "10.1.0.40/24")
        op.screen.query_one("#set-address").press()
        await op.settle()
        assert "BMC address set" in op.problems()
        assert "Now: 10.1.0.40/24 (static), gateway 10.1.0.1" in screen_text(op.app)
        await op.type("bmc-address", "10.1.0.40")
        op.screen.query_one("#set-address").press()
        await op.settle()
        assert "needs its prefix" in op.problems()
        await op.type("bmc-user", "2")
        await op.type("bmc-password", "Rack-7-Admin")
        await op.type("bmc-again", "Rack-7-Adnim")
        op.screen.query_one("#set-password").press()
        await op.settle()
        assert "the two passwords differ" in op.problems()
        await op.type("bmc-password", "Rack-7-Admin")
        await op.type("bmc-again", "Rack-7-Admin")
        op.screen.query_one("#set-password").press()
        await op.settle()
        assert "the password of BMC user 2 is changed" in op.problems()
        assert "Rack-7-Admin" not in screen_text(op.app)

    run(agent, script)
    assert agent.fake_bmc.calls == [
        ("net", "10.1.0.40/24", "Static", "10.1.0.1"), ("password", 2, "Rack-7-Admin")]


def test_an_idle_gate_asks_again_on_an_open_screen(agent):
    now = [0.0]
    gate = consolegate.Gate(stored=lambda: YESCRYPT, clock=lambda: now[0])

    async def script(pilot):
        op = Operator(pilot)
        await op.action("bmc", "correct horse")
        now[0] += consolegate.IDLE + 1             # the operator walked away
        await op.type("bmc-address", "10.1.0.41/24")
        op.screen.query_one("#set-address").press()
        await op.pause()
        assert isinstance(op.screen, consoleactions.PasswordScreen)
        await op.type("password", "correct horse")
        await pilot.press("enter")
        await op.settle()
        assert "BMC address set" in op.problems()

    run(agent, script, gate=gate)
    assert agent.fake_bmc.calls == [("net", "10.1.0.41/24", "Static", "10.1.0.1")]


def test_esc_waits_while_a_change_is_being_applied(agent):
    import threading
    release = threading.Event()
    applied = agent.change.apply

    def slow(spec, replacing):
        release.wait(30)
        applied(spec, replacing)
    agent.change.apply = slow

    async def script(pilot):
        op = Operator(pilot)
        await op.open_network()
        await op.type("address", "10.0.0.14/24")
        op.screen.query_one("#apply").press()
        await op.pause()
        await pilot.press("escape")                # ignored: the answer is not back
        op.screen.query_one("#apply").press()      # nor a second proposal
        await op.pause()
        assert isinstance(op.screen, consoleactions.NetworkScreen)
        release.set()
        await op.settle()
        assert isinstance(op.screen, consoleactions.ConfirmScreen)

    run(agent, script)
    assert agent.applied == [dict(KEPT, address="10.0.0.14/24")]
