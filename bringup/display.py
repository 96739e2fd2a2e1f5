"""What ``rack up`` and ``rack status`` print.

``rack up`` says one line per change of a node (its phase, an error, a note):
on a terminal the table of nodes is redrawn in place while nodes are
followed, anywhere else (a pipe, a log, a unit) each change is one plain
line with the time.  The summary at the end names every node that did not
come up, with its reason.  Every name and error passes
:func:`rackforge.errors.printable`: a BMC's answer must not reach the
terminal as escape codes.
"""

import json
import time

from rackforge import errors, keys
from rackforge.bringup import progress

CLEAR, UP = "\x1b[2K", "\x1b[%dF"


def _ago(seconds):
    """``42s``, ``3m07s``, ``1h05m``."""
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    if seconds >= 60:
        return "%dm%02ds" % (seconds // 60, seconds % 60)
    return "%ds" % seconds


class Display:
    """Progress of a ``rack up`` run on ``out``; ``tty`` redraws the table in place."""

    def __init__(self, out, tty=False, wall=time.time):
        self.out = out
        self.tty = tty
        self.wall = wall
        self.table = None           # the trackers shown in place, once following
        self.drawn = 0
        self.notes = {}

    def _row(self, t):
        state = t.outcome if t.outcome and t.outcome != t.phase else t.phase
        detail = t.error or self.notes.get(id(t), "")
        since = _ago(self.wall() - t.since) if t.since else "-"
        return errors.printable("%-24s %-22s %-11s %-7s %s" % (
            t.title[:24], t.label[:22], state, since, detail)).rstrip()

    def _line(self, text):
        self.out.write("%s  %s\n" % (time.strftime("%H:%M:%S", time.localtime(self.wall())),
                                     errors.printable(text)))
        self.out.flush()

    def start(self, trackers):
        """Following begins: on a terminal, the table from now on."""
        if self.tty and trackers:
            self.table = list(trackers)
            self.out.write("%-24s %-22s %-11s %-7s %s\n"
                           % ("NODE", "BMC", "PHASE", "SINCE", "DETAIL"))
            self._draw()

    def _draw(self):
        if self.drawn:
            self.out.write(UP % self.drawn)
        for t in self.table:
            self.out.write(CLEAR + self._row(t) + "\n")
        self.drawn = len(self.table)
        self.out.flush()

    def update(self, t):
        if self.table is not None:
            return self._draw()
        state = t.outcome if t.outcome and t.outcome != t.phase else t.phase
        self._line("%s (%s) %s%s" % (t.title, t.label, state,
                                     ": " + t.error if t.error else ""))

    def note(self, t, text):
        self.notes[id(t)] = text
        if self.table is not None:
            return self._draw()
        self._line("%s (%s) %s" % (t.title, t.label, text))

    def tick(self):
        if self.table is not None:
            self._draw()            # the SINCE column moves on

    def summary(self, trackers):
        """The closing lines; returns True when every node is up (or left alone)."""
        self.table = None
        good = [t for t in trackers if t.outcome in ("active", "left alone")]
        following = [t for t in trackers if t.outcome is None]
        counts = {}
        for t in trackers:
            key = t.outcome or t.phase
            counts[key] = counts.get(key, 0) + 1
        parts = ", ".join("%d %s" % (n, k) for k, n in sorted(counts.items()))
        self.out.write("rack up: %d of %d nodes up (%s)\n" % (len(good), len(trackers),
                                                              parts or "no nodes"))
        for t in trackers:
            if t not in good and t not in following:
                self.out.write("  %s (%s): %s%s\n" % (
                    errors.printable(t.title), errors.printable(t.label), t.outcome,
                    ": " + errors.printable(t.error) if t.error else ""))
        if following:
            self.out.write("  %d nodes still on their way; 'rackforge rack status' follows "
                           "them, 'rackforge rack up' waits for them again\n" % len(following))
        self.out.flush()
        return len(good) == len(trackers)


# -- rack status --------------------------------------------------------------------------
def status(registry):
    """One row per node of the registry: name, BMC, state (the bring-up phase for an
    installing node), the management address the install API made static (to
    reserve in the site's DHCP in proxy mode), since, last error; and the totals
    by state."""
    records = {r.node: r for r in progress.ProgressStore(registry.kv).list()}
    installs = {e.key[len(keys.BRINGUP_INSTALL):]: e
                for e in registry.kv.get_prefix(keys.BRINGUP_INSTALL)}
    rows = []
    for node in registry.list_nodes():
        record = records.get(node.id)
        bmc = node.bmc or {}
        error = node.boot.get("error") if node.state == "failed" else None
        rows.append({
            "name": node.name, "id": node.id,
            "state": progress.phase_of(node, record, installs.get(node.id)),
            "bmc": "%s:%s" % (bmc["address"], bmc.get("port")) if bmc.get("address") else None,
            "address": _address(installs.get(node.id)),
            "since": (record.since if record and record.since else node.updated),
            "error": error or (record.error if record else None),
            "rack_up": record is not None})
    totals = {}
    for row in rows:
        totals[row["state"]] = totals.get(row["state"], 0) + 1
    return {"nodes": rows, "totals": totals}


def _address(entry):
    try:
        address = json.loads(entry.value).get("address") if entry is not None else None
    except (ValueError, AttributeError):
        return None
    return address if isinstance(address, str) else None


def render_status(found, out):
    rows = found["nodes"]
    if not rows:
        out.write("no nodes in the registry; bring the rack up with 'rackforge rack up "
                  "BMC...'\n")
        return
    header = ("NODE", "BMC", "STATE", "ADDRESS", "SINCE", "LAST ERROR")
    out.write("%-24s %-22s %-11s %-15s %-19s %s\n" % header)
    for r in rows:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["since"])) \
            if r["since"] else "-"
        out.write(errors.printable("%-24s %-22s %-11s %-15s %-19s %s" % (
            r["name"], r["bmc"] or "-", r["state"], r["address"] or "-", since,
            r["error"] or "-")) + "\n")
    totals = ", ".join("%d %s" % (n, k) for k, n in sorted(found["totals"].items()))
    out.write("%d nodes: %s\n" % (len(rows), totals))


def dump_json(found, out):
    json.dump(found, out, indent=2, sort_keys=True)
    out.write("\n")
