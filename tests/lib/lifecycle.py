"""Put a test node in a given state by walking the lifecycle's own moves (rackforge.states).

A test that needs an ``active`` node gets there the way the components would:
each step is a real :meth:`NodeRegistry.transition` by the component the table
names, so the helper can never produce a state the registry itself refuses.
"""

from collections import deque

from rackforge import registry, states


def path(frm, to):
    """The shortest list of (state, component) moves from ``frm`` (None: new) to ``to``."""
    todo, seen = deque([(frm, [])]), {frm}
    while todo:
        here, moves = todo.popleft()
        if here == to:
            return moves
        for (a, b), by in sorted(states.TRANSITIONS.items(), key=str):
            if a == here and b not in seen:
                seen.add(b)
                todo.append((b, moves + [(b, by)]))
    raise AssertionError("no way from %s to %s" % (frm, to))


def create(reg, state="enrolled", **fields):
    """A new node already in ``state`` (created, then moved step by step)."""
    moves = path(None, state)
    first, by = moves[0]
    node = reg.create_node(registry.Node(state=first, **fields), by=by)
    for to, by in moves[1:]:
        node = reg.transition(node.id, to, by)
    return node
