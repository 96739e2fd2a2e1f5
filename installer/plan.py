"""The install plan: what the installer will do on this machine, decided before anything
is written.

:func:`make_plan` takes checked :class:`~rackforge.installer.answer.Answers`
(from an answer file or the TUI) and this machine's hardware inventory, and
returns an :class:`InstallPlan`: the target disk (by stable id, with what it
holds and whether it will be wiped), the host name, root's SSH keys, the
management network and the bootstrap mapping firstboot reads on the
installed node.  The writer works from the plan alone, and the TUI shows it
for confirmation; ``rackforge installer validate`` prints it.  Making a plan
reads the disks (wipefs and blkid, read-only) and writes nothing.

What only this machine can tell is checked here, every problem collected
into one :class:`PlanInvalid` (the same lines as ``AnswerInvalid``): the disk
choice (``disks.py``) and the NICs the network section names.

The plan holds the join token (in ``bootstrap``): it is left out of the
plan's repr, :meth:`InstallPlan.summary` and :meth:`InstallPlan.to_dict`;
only :meth:`InstallPlan.bootstrap_yaml` has it, for the writer to put in a
0600 file on the target.
"""

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import yaml

from rackforge.firstboot import netspec, storage
from rackforge.installer import answer, disks

NOT_SHOWN = "(not shown)"


class PlanInvalid(answer.AnswerInvalid):
    """The answers are right but cannot be carried out on this machine."""


@dataclass
class TargetDisk:
    """The disk the appliance is written to."""
    path: str
    stable_id: str              # wwn:..., serial:..., by-path:... (firstboot/storage.py)
    size: int                   # bytes
    model: Optional[str] = None
    serial: Optional[str] = None
    wwn: Optional[str] = None
    by_path: Optional[str] = None
    name: Optional[str] = None  # the kernel's name on this boot (sda): may change

    @classmethod
    def of(cls, disk):
        return cls(path=disk.path, stable_id=storage.stable_id(disk), size=disk.size,
                   model=disk.model, serial=disk.serial, wwn=disk.wwn, by_path=disk.by_path,
                   name=disk.name)


@dataclass
class InstallPlan:
    disk: TargetDisk
    wipe: bool                  # erase the signatures below before writing
    signatures: Optional[list]  # what the disk holds; None: not probed (recorded inventory)
    hostname: str
    ssh_authorized_keys: list   # root's authorized_keys lines
    management: dict            # firstboot's management network mapping
    bootstrap: dict = field(repr=False)     # firstboot's bootstrap.yaml; holds the token
    mode: str = "create"        # create (the seed) | join
    matched_by: str = "disk.match"          # the answer key that picked the disk
    excluded: list = field(default_factory=list)    # [disks.Excluded]: never targets

    def to_dict(self):
        """The plan as data, the join token replaced by ``(not shown)``."""
        out = dataclasses.asdict(self)
        out["bootstrap"] = redacted(self.bootstrap)
        return out

    def bootstrap_yaml(self):
        """The text of ``/etc/rackforge/bootstrap.yaml`` for the target (write it 0600):
        plain YAML that ``rackforge.firstboot.bootstrap.load`` reads (no aliases)."""
        return yaml.safe_dump(copy.deepcopy(self.bootstrap), sort_keys=False,
                              default_flow_style=False)

    def summary(self):
        """The plan in a few lines for people (the CLI, the TUI's confirmation)."""
        d = self.disk
        facts = [x for x in (d.name, disks.size_text(d.size), d.model,
                             d.serial and "serial " + d.serial) if x]
        lines = ["disk: %s (%s), picked by %s" % (d.stable_id, ", ".join(facts),
                                                  self.matched_by)]
        if self.signatures is None:
            lines.append("  not probed (a recorded inventory): the installer checks what it "
                         "holds before writing")
        elif self.wipe:
            lines.append("  holds %s: would be wiped (disk.wipe: force), then the appliance "
                         "written to it" % ", ".join(self.signatures))
        else:
            lines.append("  empty (no partition table or file system): the appliance would "
                         "be written to it")
        for x in self.excluded:
            lines.append("  left out: %s %s: %s" % (x.name, x.stable_id, x.reason))
        lines.append("hostname: %s" % self.hostname)
        spec = netspec.parse(self.management)
        lines.append("network: %s %s%s" % (spec.interface, spec.address,
                                           " via %s" % spec.gateway if spec.gateway else ""))
        if self.mode == "create":
            lines.append("cluster: creates %s%s (this node is the seed)" % (
                self.bootstrap["cluster"],
                ", VIP %s" % self.bootstrap["vip"] if self.bootstrap.get("vip") else ""))
        else:
            lines.append("cluster: joins through %s (token given, not shown)"
                         % ", ".join(self.bootstrap["join"]["endpoints"]))
        lines.append("root ssh keys: %s" % (", ".join(
            _key_label(k) for k in self.ssh_authorized_keys) or "none"))
        return lines


def _key_label(line):
    parts = line.split(None, 2)
    return parts[0] + (" " + parts[2] if len(parts) > 2 else "")


def redacted(mapping):
    """A copy of a bootstrap mapping with the join token replaced."""
    out = copy.deepcopy(mapping)
    if isinstance(out.get("join"), dict) and "token" in out["join"]:
        out["join"]["token"] = NOT_SHOWN
    return out


def nic_problems(management, inventory):
    """The NICs the management mapping names that this machine does not have."""
    spec = netspec.parse(management)
    names = {i.name for i in inventory.interfaces}
    macs = {i.mac.lower() for i in inventory.interfaces if i.mac}
    present = ", ".join("%s (%s)" % (i.name, i.mac) if i.mac else i.name
                        for i in inventory.interfaces if i.kind == "physical") or "none"
    problems = []
    for ref in spec.nics():
        known = ref[4:] in macs if ref.startswith("mac:") else ref in names
        if not known:
            problems.append(answer.Problem(
                "network", "names %s, which this machine does not have (its NICs: %s); "
                "fix the interface names or use mac:ADDRESS" % (ref, present)))
    return problems


def vip_problems(answers, controllers):
    """A new cluster of a profile with more than one controller needs a VIP (first boot
    refuses to seed without one: say it now, before the disk is written)."""
    if answers.mode == "create" and controllers > 1 and not answers.cluster.vip:
        return [answer.Problem("cluster.create.vip", "is missing: this image's profile has %d "
                               "controllers, so the cluster needs a VIP (a free address of "
                               "the management network)" % controllers)]
    return []


def profile_controllers():
    """The controller count of the profile of the image the installer runs from."""
    from rackforge import nodeprofile

    return int((nodeprofile.load().cluster or {}).get("controllers", 3))


def make_plan(answers, inventory, run=storage.run_probe, controllers=None):
    """The :class:`InstallPlan` of ``answers`` on the machine of ``inventory``.

    :param answers: :class:`~rackforge.installer.answer.Answers`, complete.
    :param inventory: :class:`rackforge.firstboot.inventory.Inventory` of this machine.
    :param run: probe runner for wipefs and blkid (see ``disks.choose``); None for a
        recorded inventory, whose disks cannot be probed from here.
    :param controllers: the profile's controller count (default: this image's profile).
    :raises: ``AnswerInvalid`` for incomplete answers, :class:`PlanInvalid` for every
        problem this machine shows.
    """
    answers.check()
    problems = []
    choice = None
    try:
        choice = disks.choose(answers.disk, inventory, run=run)
    except disks.DiskChoiceError as e:
        problems.append(answer.Problem(e.kwargs.get("key", "disk"), str(e)))
    problems += nic_problems(answers.network, inventory)
    problems += vip_problems(answers, profile_controllers() if controllers is None
                             else controllers)
    if problems:
        raise PlanInvalid(problems, answers.where, answers.lines, answers.secrets())
    return InstallPlan(
        disk=TargetDisk.of(choice.disk), wipe=choice.wipe, signatures=choice.signatures,
        hostname=answers.hostname, ssh_authorized_keys=list(answers.ssh_authorized_keys),
        management=copy.deepcopy(answers.network), bootstrap=answers.bootstrap(),
        mode=answers.mode, matched_by=choice.key, excluded=list(choice.excluded))
