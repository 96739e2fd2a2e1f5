"""The console's network change, commit-confirm: applied at once, kept only when confirmed,
rolled back by the timer, by the operator, after an agent restart, and when it fails."""

import logging

import pytest

from rackforge import errors
from rackforge.nodeagent import netchange

KEPT = {"interface": "eno1", "address": "10.0.0.5/24", "gateway": "10.0.0.1"}
NEW = {"interface": "eno1", "address": "10.0.0.6/24", "gateway": "10.0.0.1"}


class FakeTimer:
    made = []

    def __init__(self, seconds, callback):
        self.seconds, self.callback, self.cancelled = seconds, callback, False
        FakeTimer.made.append(self)

    def start(self):
        pass

    def cancel(self):
        self.cancelled = True


class Node:
    """The node's network as the change sees it: what is applied, what is kept."""

    def __init__(self, fail_on=None):
        self.applied, self.kept, self.fail_on = [], dict(KEPT), fail_on
        self.replaced = []
        self.now = 1000.0

    def apply(self, spec, replacing):
        # intent before the side effect: the pending record is there when anything changes
        self.applied.append((spec, netchange.pending_file().exists()))
        self.replaced.append(replacing)
        if spec == self.fail_on:
            raise errors.RackforgeError("the next hop 10.0.0.1 did not answer ARP")

    def keep(self, spec):
        self.kept = dict(spec)


@pytest.fixture
def node(tmp_path, monkeypatch):
    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path))
    FakeTimer.made = []
    return Node()


def change(node):
    return netchange.NetworkChange(apply=node.apply, keep=node.keep,
                                   current=lambda: dict(node.kept),
                                   clock=lambda: node.now, timer=FakeTimer)


def test_confirmed_in_time_the_change_is_kept(node, caplog):
    caplog.set_level(logging.WARNING)
    c = change(node)
    state = c.propose({"spec": NEW, "confirm_within": 60})
    assert node.applied == [(NEW, True)]
    assert state["pending"]["spec"] == NEW and state["pending"]["left_s"] == 60
    node.now += 20
    assert c.state()["pending"]["left_s"] == 40
    assert node.kept == KEPT                      # nothing kept before the confirmation
    state = c.confirm({})
    assert node.kept == NEW and state == {"current": NEW, "pending": None}
    assert FakeTimer.made[0].cancelled and not netchange.pending_file().exists()
    assert "changing from eno1 10.0.0.5/24, gateway 10.0.0.1 to eno1 10.0.0.6/24" \
        in caplog.text and "confirmed: eno1 10.0.0.6/24" in caplog.text


def test_not_confirmed_it_rolls_back_by_itself(node, caplog):
    caplog.set_level(logging.WARNING)
    c = change(node)
    c.propose({"spec": NEW, "confirm_within": 45})
    timer, = FakeTimer.made
    assert timer.seconds == 45
    timer.callback()                              # 45 s later, nobody confirmed
    assert node.applied == [(NEW, True), (KEPT, True)] and node.kept == KEPT
    assert c.state()["pending"] is None and not netchange.pending_file().exists()
    assert "back to eno1 10.0.0.5/24, gateway 10.0.0.1: not confirmed in time" in caplog.text
    with pytest.raises(netchange.NetworkChangeRefused, match="no change waits"):
        c.confirm({})                             # too late: nothing to confirm


def test_the_operator_rolls_back_at_once(node):
    c = change(node)
    c.propose({"spec": NEW})
    assert FakeTimer.made[0].seconds == netchange.CONFIRM_DEFAULT
    c.rollback({})
    assert node.applied[-1] == (KEPT, True) and FakeTimer.made[0].cancelled
    FakeTimer.made[0].callback()                  # a timer that fired anyway does nothing
    assert len(node.applied) == 2


def test_an_agent_that_restarts_during_the_wait_rolls_back(node, caplog):
    caplog.set_level(logging.WARNING)
    change(node).propose({"spec": NEW})
    again = change(node)                          # the agent killed, started again
    again.resume()
    assert node.applied[-1] == (KEPT, True) and again.pending() is None
    assert "restarted before the change was confirmed" in caplog.text
    change(node).resume()                         # nothing pending: nothing applied
    assert len(node.applied) == 2


def test_a_change_that_fails_its_check_leaves_the_network_as_it_was(node):
    node.fail_on = NEW
    with pytest.raises(netchange.NetworkChangeFailed) as err:
        change(node).propose({"spec": NEW})
    assert str(err.value) == ("network change not applied: the next hop 10.0.0.1 did not "
                              "answer ARP; the network is as it was")
    assert node.applied == [(NEW, True), (KEPT, True)] and FakeTimer.made == []
    assert not netchange.pending_file().exists()


def test_a_failed_restore_is_tried_again_and_at_the_next_start(node):
    c = change(node)
    c.propose({"spec": NEW})
    assert node.replaced == [KEPT]                # the new spec in place of the kept one
    node.fail_on = KEPT
    FakeTimer.made[0].callback()                  # the journal says so; the record stays
    assert netchange.pending_file().exists() and node.replaced[-1] == NEW
    retry = FakeTimer.made[-1]
    assert retry.seconds == netchange.RETRY and not retry.cancelled
    node.fail_on = None
    retry.callback()                              # 30 s later it works
    assert not netchange.pending_file().exists() and node.applied[-1] == (KEPT, True)
    # and a record left by a killed agent goes back at the next start
    c.propose({"spec": NEW})
    change(node).resume()
    assert not netchange.pending_file().exists() and node.applied[-1] == (KEPT, True)


def test_a_confirmation_whose_write_fails_stays_pending_with_its_timer(node):
    c = change(node)
    c.propose({"spec": NEW, "confirm_within": 60})

    def broken(spec):
        raise errors.RackforgeError("systemctl try-reload-or-restart failed")
    c.keep = broken
    with pytest.raises(errors.RackforgeError):
        c.confirm({})
    assert c.pending() is not None and FakeTimer.made[-1].seconds == 60
    assert not FakeTimer.made[-1].cancelled


def test_an_unexpected_error_while_applying_goes_back_in_one_line(node):
    def boom(spec, replacing):
        node.applied.append((spec, True))
        if spec == NEW:
            raise OSError(19, "No such device")
    c = netchange.NetworkChange(apply=boom, keep=node.keep, current=lambda: dict(node.kept),
                                clock=lambda: node.now, timer=FakeTimer)
    with pytest.raises(netchange.NetworkChangeFailed, match="No such device"):
        c.propose({"spec": NEW})
    assert node.applied == [(NEW, True), (KEPT, True)] and c.pending() is None


@pytest.mark.parametrize("body, says", [
    ({"spec": dict(NEW, address="10.0.0.300/24")}, "'address' is not an IPv4 address with prefix"),
    ({"spec": dict(NEW, vlan={"id": 5000, "link": "eno1"})}, "'vlan.id' must be a whole"),
    ({"spec": NEW, "confirm_within": 5}, "confirm_within must be 30 to 900 seconds"),
    ({"spec": NEW, "confirm_within": True}, "confirm_within must be"),
    ({}, "the body must be"),
    ({"spec": dict(KEPT)}, "the network this node has already"),
])
def test_bad_changes_are_one_line_and_change_nothing(node, body, says):
    with pytest.raises(errors.ConfigError) as err:
        change(node).propose(body)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert node.applied == [] and not netchange.pending_file().exists()


def test_one_change_at_a_time_and_none_before_first_boot_kept_one(node):
    c = change(node)
    c.propose({"spec": NEW})
    with pytest.raises(netchange.NetworkChangeRefused, match="another change waits"):
        c.propose({"spec": dict(NEW, address="10.0.0.7/24")})
    fresh = netchange.NetworkChange(apply=node.apply, keep=node.keep, current=lambda: None,
                                    timer=FakeTimer)
    netchange.pending_file().unlink()
    with pytest.raises(netchange.NetworkChangeRefused, match="first boot has not finished"):
        fresh.propose({"spec": NEW})
