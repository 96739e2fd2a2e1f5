"""Galera's saved state and the choice of the node that bootstraps after a whole-rack power loss.

Pure functions over what each controller reports, so that every controller
computes the same answer from the same reports, and the unit tests replay
recorded files.  :mod:`.galera` gathers the reports and acts.

A controller's position comes from ``grastate.dat`` and, when that says
``seqno: -1`` (an unclean stop, a power cut), from ``galera_recovery``
(``mariadbd --wsrep-recover``), which reads the last committed transaction
from InnoDB: ``--wsrep_start_position=UUID:SEQNO``.

The choice (:func:`choose`), in this order:

- every controller of the cluster must have reported (a node that is behind
  must never be the one that bootstraps, and the one that is ahead may be the
  one still booting);
- the cluster UUIDs must agree (nodes of different histories: an operator
  must decide; nothing is bootstrapped);
- at least one position must be known (all ``-1`` after recovery: the data
  cannot tell which node is ahead; an operator must decide);
- the seed is the node with the highest seqno; ties go to the node marked
  ``safe_to_bootstrap: 1`` (the last to stop cleanly), then to the lowest
  controller slot, then name: deterministic, the same on every node.
"""

import re
from dataclasses import dataclass

ZERO_UUID = "00000000-0000-0000-0000-000000000000"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_RECOVERED = re.compile(r"(?:--wsrep_start_position=|Recovered position:?\s*)(%s):(-?\d+)"
                        % _UUID)


@dataclass(frozen=True)
class Position:
    uuid: str
    seqno: int
    safe_to_bootstrap: bool = False

    def to_dict(self):
        return {"uuid": self.uuid, "seqno": self.seqno,
                "safe_to_bootstrap": self.safe_to_bootstrap}

    @classmethod
    def from_dict(cls, data):
        return cls(uuid=str(data["uuid"]), seqno=int(data["seqno"]),
                   safe_to_bootstrap=bool(data.get("safe_to_bootstrap")))


def parse_grastate(text):
    """The :class:`Position` in a ``grastate.dat``; None if it holds none."""
    fields = {}
    for line in (text or "").splitlines():
        if ":" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    if not re.fullmatch(_UUID, fields.get("uuid", "")):
        return None
    try:
        seqno = int(fields.get("seqno", "-1"))
    except ValueError:
        seqno = -1
    return Position(uuid=fields["uuid"], seqno=seqno,
                    safe_to_bootstrap=fields.get("safe_to_bootstrap") == "1")


def parse_recovered(text):
    """``(uuid, seqno)`` from ``galera_recovery`` / ``--wsrep-recover`` output, or None."""
    found = _RECOVERED.findall(text or "")
    if not found:
        return None
    uuid, seqno = found[-1]
    return uuid, int(seqno)


def position(grastate_text, recovered_text=None):
    """The position to report: grastate's, with a recovered seqno where grastate has -1."""
    saved = parse_grastate(grastate_text)
    recovered = parse_recovered(recovered_text) if recovered_text else None
    if saved is None and recovered is None:
        return None
    if saved is None:
        return Position(uuid=recovered[0], seqno=recovered[1])
    if saved.seqno < 0 and recovered is not None and recovered[0] == saved.uuid:
        return Position(uuid=saved.uuid, seqno=recovered[1],
                        safe_to_bootstrap=saved.safe_to_bootstrap)
    return saved


@dataclass(frozen=True)
class Choice:
    seed: str = None            # the node that bootstraps; None: wait or stop
    wait: bool = False          # not every controller reported yet
    stop: str = ""              # an operator must decide: this line says why


def choose(reports, controllers):
    """The :class:`Choice` for ``reports`` ({node: Position}) from ``controllers``
    ([(slot, node)], every controller of the cluster)."""
    names = [node for _, node in sorted(controllers)]
    missing = [n for n in names if n not in reports]
    if missing:
        return Choice(wait=True, stop="waiting for %s to report its Galera position"
                      % ", ".join(missing))
    uuids = {}
    for node in names:
        p = reports[node]
        if p.uuid != ZERO_UUID:
            uuids.setdefault(p.uuid, []).append(node)
    if len(uuids) > 1:
        return Choice(stop="Galera histories differ between controllers (%s): not "
                      "bootstrapping any; keep the data of one, wipe the others' "
                      "/var/lib/mysql and restart their agents"
                      % "; ".join("%s on %s" % (u[:8], ",".join(n)) for u, n in
                                  sorted(uuids.items())))
    if not uuids or all(reports[n].seqno < 0 for n in names):
        return Choice(stop="no controller knows its Galera position (every seqno is -1): "
                      "not bootstrapping; restore from a backup or bootstrap one by hand "
                      "with 'galera_new_cluster'")
    slot = {node: s for s, node in controllers}
    best = max(names, key=lambda n: (reports[n].seqno, reports[n].safe_to_bootstrap,
                                     -slot[n], [-ord(c) for c in n]))
    return Choice(seed=best)


def mark_safe(grastate_text):
    """``grastate.dat`` with ``safe_to_bootstrap: 1`` (the chosen seed's, before it starts)."""
    lines, found = [], False
    for line in (grastate_text or "").splitlines():
        if line.strip().startswith("safe_to_bootstrap:"):
            line, found = "safe_to_bootstrap: 1", True
        lines.append(line)
    if not found:
        lines.append("safe_to_bootstrap: 1")
    return "\n".join(lines) + "\n"
