"""The node lifecycle: every state boots one way, every move has its one component."""

import lifecycle
import pytest

from rackforge import registry, states
from rackforge.pxe import bootscript

MOVES = sorted(states.TRANSITIONS.items(), key=str)
COMPONENTS = sorted(set(states.TRANSITIONS.values()))


@pytest.fixture
def reg():
    return registry.MemoryRegistry()


@pytest.mark.parametrize("state", sorted(states.STATES))
def test_every_state_is_reachable_and_boots_one_way(reg, state):
    node = lifecycle.create(reg, state, name="n1", macs=["52:54:00:00:00:01"])
    assert reg.get_node(node.id).state == state
    assert bootscript.decide(node).kind == states.BOOT[state]
    assert states.BOOT[state] in (states.DISCOVER, states.INSTALL, states.LOCAL)


def test_only_installing_installs_and_a_node_past_its_install_boots_its_disk():
    assert [s for s, b in states.BOOT.items() if b == states.INSTALL] == ["installing"]
    for state in ("installed", "joining", "active", "maintenance"):
        assert states.BOOT[state] == states.LOCAL, state


@pytest.mark.parametrize("move", MOVES, ids=["%s->%s" % m for m, _ in MOVES])
def test_every_move_is_made_by_its_component_and_refused_to_the_others(reg, move):
    (frm, to), by = move
    if frm is None:
        for other in COMPONENTS:
            if other != by:
                with pytest.raises(states.InvalidTransition, match="only the %s" % by):
                    reg.create_node(registry.Node(name="x", state=to), by=other)
        assert reg.list_nodes() == []
        assert reg.create_node(registry.Node(name="x", state=to), by=by).state == to
        return
    node = lifecycle.create(reg, frm, name="n1")
    for other in COMPONENTS:
        if other != by:
            with pytest.raises(states.InvalidTransition, match="only the %s" % by):
                reg.transition(node.id, to, other)
    assert reg.get_node(node.id).state == frm          # refused: nothing written
    assert reg.transition(node.id, to, by, frm=frm).state == to


@pytest.mark.parametrize("frm", sorted(states.STATES))
def test_a_move_not_in_the_table_is_refused_with_the_moves_that_exist(reg, frm):
    node = lifecycle.create(reg, frm, name="n1")
    allowed = {t for (f, t) in states.TRANSITIONS if f == frm}
    for to in sorted(set(states.STATES) - allowed - {frm}):
        for by in COMPONENTS:
            with pytest.raises(states.InvalidTransition, match="from %s it can go to" % frm):
                reg.transition(node.id, to, by)
    assert reg.get_node(node.id).state == frm


def test_a_stale_view_is_refused(reg):
    """Compare-and-set on the state itself: a writer that saw 'installing' does not move a
    node that has reached 'installed' meanwhile."""
    node = lifecycle.create(reg, "installing", name="n1")
    reg.transition(node.id, "installed", states.INSTALLER, frm="installing")
    with pytest.raises(states.InvalidTransition, match="expected in installing"):
        reg.transition(node.id, "failed", states.INSTALLER, frm="installing")
    assert reg.get_node(node.id).state == "installed"


def test_a_plain_update_cannot_change_the_state(reg):
    node = lifecycle.create(reg, "enrolled", name="n1")
    with pytest.raises(states.InvalidTransition, match="only through NodeRegistry.transition"):
        reg.update_node(node.id, lambda n: setattr(n, "state", "active"))
    assert reg.get_node(node.id).state == "enrolled"


def test_an_unknown_state_is_named():
    with pytest.raises(states.InvalidTransition, match="'deploying' is not a state"):
        states.check("n1", "enrolled", "deploying", states.OPERATOR)
