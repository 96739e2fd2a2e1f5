"""The installer TUI's logic, without a screen (subiquity's split: model, logic, views).

The screens (``tui.py``) only show what this module computes and hand back
what was typed.  Each screen fills one section of the same
:class:`~rackforge.installer.answer.Answers` an answer file fills, through
``Answers.set`` (the model's own checks, its own problem lines), and the plan
is made by the same ``plan.make_plan``: the TUI and an answer file with the
same answers make the same :class:`~rackforge.installer.plan.InstallPlan`.

- :data:`STEPS`: the screens in order and the section each fills;
- :func:`disk_rows`, :func:`nic_rows`: what the disk and network screens show
  of the inventory (the disks probed read-only for data);
- :class:`Flow`: the answers so far, one ``submit_*`` per screen (fields in,
  problem lines out), the plan, and the final confirmation's rule;
- :class:`Progress`: the writer's steps as the progress screen shows them.

Nothing here imports Textual or writes to a disk.  The join token is typed
into the cluster screen and kept only in the answers: no line made here
quotes it.
"""

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Optional

from rackforge import errors
from rackforge.firstboot import storage
from rackforge.installer import answer, disks, write
from rackforge.installer import plan as plan_mod


@dataclass(frozen=True)
class Step:
    name: str                   # the screen's name
    title: str
    section: Optional[str]      # the Answers section it fills


STEPS = (
    Step("disk", "Target disk", "disk"),
    Step("network", "Management network", "network"),
    Step("cluster", "Cluster", "cluster"),
    Step("hostname", "Host name", "hostname"),
    Step("ssh", "SSH key for root", "ssh_authorized_keys"),
    Step("summary", "Summary and confirmation", None),
)
BOND_NAME = "bond0"
BOND_MODES = ("active-backup", "802.3ad")
CONFIRM_WORD = "wipe"


def step_of(key):
    """The step whose screen fixes the answer key ``key`` (``cluster.join.token``)."""
    section = re.split(r"[.\[]", key or "", maxsplit=1)[0]
    return next((s for s in STEPS if s.section == section), STEPS[0])


# -- the disk screen -----------------------------------------------------------------------
@dataclass
class DiskRow:
    """One disk as the disk screen shows it."""
    disk: object                            # firstboot.inventory.BlockDevice
    stable_id: str
    excluded: Optional[str] = None          # why it can never be the target
    signatures: Optional[list] = None       # what it holds; None: not probed
    probe_problem: Optional[str] = None     # why the probe failed

    @property
    def choosable(self):
        return self.excluded is None

    @property
    def holds_data(self):
        return bool(self.signatures)

    def lines(self):
        """Two lines: the stable id, size and kernel name; the model, serial and marks."""
        d = self.disk
        first = "  ".join((self.stable_id, disks.size_text(d.size), d.name))
        facts = [x for x in (d.model, d.serial and "serial " + d.serial) if x]
        if self.excluded:
            mark = "%s: cannot be chosen" % self.excluded.upper()
        elif self.holds_data:
            mark = "HOLDS DATA (%s)" % ", ".join(self.signatures)
        elif self.probe_problem:
            mark = "cannot tell whether it holds data (%s)" % self.probe_problem
        elif self.signatures is None:
            mark = "not probed"
        else:
            mark = "empty"
        if self.choosable and disks.is_removable(d):
            mark = "removable, " + mark
        return [errors.printable(first),
                errors.printable(", ".join(facts + [mark]))]


def disk_rows(inventory, run=None):
    """Every disk of ``inventory``: the candidates (probed for data with ``run``, a
    read-only wipefs/blkid runner; None leaves them unprobed), then the disks that
    are never a target (the boot medium first among them), each with why."""
    pool, excluded = disks.candidates(inventory)
    rows = []
    for disk in pool:
        row = DiskRow(disk, storage.stable_id(disk))
        if disks.exact_spec(disk) is None:
            row.excluded = "no WWN, serial or by-path to name it by"
        elif run is not None:
            try:
                row.signatures = storage.probe_signatures(disk.path, run)
            except storage.ProbeFailed as e:
                row.probe_problem = e.kwargs.get("detail", str(e))
        rows.append(row)
    by_name = {d.name: d for d in inventory.disks}
    for x in sorted(excluded, key=lambda x: (not by_name[x.name].system, x.name)):
        rows.append(DiskRow(by_name[x.name], x.stable_id, excluded=x.reason.split(" (")[0]))
    return rows


def disk_value(row):
    """The ``disk`` section for ``row``: its exact id, and wipe only a disk with data."""
    return {"match": disks.exact_spec(row.disk).to_dict(),
            "wipe": "force" if row.holds_data else "never"}


# -- the network screen --------------------------------------------------------------------
@dataclass
class NicRow:
    name: str
    mac: Optional[str]
    carrier: bool
    speed_mbps: Optional[int] = None
    driver: Optional[str] = None

    def line(self):
        link = "link up" if self.carrier else "no link"
        if self.carrier and self.speed_mbps:
            link += " %d Mb/s" % self.speed_mbps
        return errors.printable("  ".join(x for x in (
            "%-15s" % self.name, self.mac or "(no MAC)", link, self.driver) if x))


def nic_rows(inventory):
    """The physical NICs, by name: the ones the management network can use."""
    return [NicRow(i.name, i.mac, i.carrier, i.speed_mbps, i.driver)
            for i in sorted(inventory.interfaces, key=lambda i: i.name)
            if i.kind == "physical"]


@dataclass
class NetworkFields:
    """What the network screen holds; :func:`network_value` makes firstboot's mapping."""
    nic: Optional[str] = None
    dhcp: bool = False
    address: str = ""           # A.B.C.D/N
    gateway: str = ""
    vlan: str = ""              # a VLAN id, or blank
    bond_with: list = field(default_factory=list)      # other NICs bonded with ``nic``
    bond_mode: str = BOND_MODES[0]


def network_value(f):
    """firstboot's ``management`` mapping of the fields (blank fields left out, so
    the model says what is missing)."""
    out = {}
    members = [f.nic] + [n for n in f.bond_with if n != f.nic]
    if len(members) > 1:
        out["bond"] = {"name": BOND_NAME, "mode": f.bond_mode, "members": members}
    vlan = f.vlan.strip()
    if vlan:
        out["vlan"] = {"id": int(vlan) if vlan.isdigit() else vlan}
        if "bond" not in out:
            out["vlan"]["link"] = f.nic
    if not out:
        out["interface"] = f.nic
    if f.dhcp:
        out["address"] = "dhcp"
    elif f.address.strip():
        out["address"] = f.address.strip()
    if not f.dhcp and f.gateway.strip():
        out["gateway"] = f.gateway.strip()
    return out


# -- the cluster screen --------------------------------------------------------------------
@dataclass
class ClusterFields:
    mode: str = "create"        # create | join
    name: str = ""
    vip: str = ""
    endpoints: str = ""         # one or more https:// URLs, by spaces or commas
    token: str = field(default="", repr=False)
    ca_sha256: str = ""


def cluster_value(f):
    """The ``cluster`` section of the fields (blank fields left out)."""
    if f.mode == "create":
        given = {"name": f.name.strip(), "vip": f.vip.strip()}
        return {"create": {k: v for k, v in given.items() if v}}
    given = {"endpoints": [e for e in re.split(r"[\s,]+", f.endpoints) if e],
             "token": f.token.strip(), "ca_sha256": f.ca_sha256.strip()}
    return {"join": {k: v for k, v in given.items() if v}}


# -- the flow ------------------------------------------------------------------------------
class Flow:
    """The answers as the screens fill them, and the plan they make on this machine.

    :param inventory: this machine's (or a recorded) inventory.
    :param run: the read-only probe runner for wipefs and blkid, None for a recorded
        inventory (its disks are not this machine's).
    """

    def __init__(self, inventory, run=None):
        self.inventory = inventory
        self.run = run
        self.answers = answer.Answers(where="the installer")
        self.disks = disk_rows(inventory, run)
        self.nics = nic_rows(inventory)

    @property
    def can_bond(self):
        return len(self.nics) > 1

    def default_nic(self):
        """The first NIC with a link (else the first): a default, never a risk."""
        linked = [n for n in self.nics if n.carrier] or self.nics
        return linked[0].name if linked else None

    def submit_disk(self, row):
        if row is None:
            return [answer.Problem("disk", "no disk chosen; move to the disk to install to "
                                           "with the arrow keys and press Enter")]
        if not row.choosable:
            return [answer.Problem("disk", "%s is %s; choose another disk"
                                   % (row.stable_id, row.excluded))]
        return self.answers.set("disk", disk_value(row))

    def submit_network(self, fields):
        if not fields.nic:
            return [answer.Problem("network", "no NIC chosen; pick the NIC on the "
                                              "management network (the one with a link)")]
        return self.answers.set("network", network_value(fields))

    def submit_cluster(self, fields):
        problems = self.answers.set("cluster", cluster_value(fields))
        if problems or self.answers.network is None:
            return problems
        return self.bootstrap_problems()

    def bootstrap_problems(self):
        """firstboot's check of what the network and cluster make together (the VIP in a
        static management network), before the later screens are answered."""
        whole = dataclasses.replace(
            self.answers, hostname=self.answers.hostname or "check",
            disk=self.answers.disk or disks.DiskAnswer([disks.MatchSpec(size="largest")]))
        return whole.problems()

    def submit_hostname(self, text):
        return self.answers.set("hostname", text.strip())

    def submit_ssh_key(self, text):
        return self.answers.set("ssh_authorized_keys", [text.strip()] if text.strip() else [])

    def plan(self):
        """``(InstallPlan, [])``, or ``(None, [Problem])``; probes, writes nothing."""
        try:
            return plan_mod.make_plan(self.answers, self.inventory, run=self.run), []
        except answer.AnswerInvalid as e:
            return None, e.problems

    def shown(self, problem):
        """A problem as a screen shows it, the join token scrubbed (it is never quoted)."""
        text = str(problem)
        for secret in self.answers.secrets():
            if secret:
                text = text.replace(secret, plan_mod.NOT_SHOWN)
        return text


def needs_typed_confirmation(plan):
    """A disk holding data is erased only after its id (or "wipe") is typed."""
    return bool(plan.wipe)


def confirmation_problem(plan, typed):
    """What is wrong with the typed confirmation for ``plan``, or None."""
    if not needs_typed_confirmation(plan) or typed.strip() in (plan.disk.stable_id,
                                                               CONFIRM_WORD):
        return None
    return ("%s holds %s: type its id %s (or the word %s) to erase it and install"
            % (plan.disk.name or plan.disk.path, ", ".join(plan.signatures or ()),
               plan.disk.stable_id, CONFIRM_WORD))


# -- progress ------------------------------------------------------------------------------
class Progress:
    """The writer's steps (``write.STEPS``) and how far each got, as text rows."""

    BAR = 20

    def __init__(self, steps=write.STEPS):
        self.fractions = {step: None for step in steps}

    def update(self, step, fraction):
        if step in self.fractions:
            self.fractions[step] = max(fraction, self.fractions[step] or 0.0)

    def rows(self):
        out = []
        for step, fraction in self.fractions.items():
            if fraction is None:
                out.append("%-14s [%s]" % (step, "." * self.BAR))
                continue
            done = int(fraction * self.BAR)
            state = "done" if fraction >= 1.0 else "%3d%%" % int(fraction * 100)
            out.append("%-14s [%s%s] %s" % (step, "#" * done, "." * (self.BAR - done), state))
        return out
