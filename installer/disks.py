"""The target disk: which disk of this machine the appliance is written to.

The answer file's ``disk`` section (or the TUI's disk screen) says which disk
is wanted; this module finds it in the node's hardware inventory
(:class:`rackforge.firstboot.inventory.Inventory`) and refuses anything that
is not one clear, safe choice.  The pitfalls it guards against are the ones
installers keep falling into (installer_tui_anchors.md, section 3): wiping
the boot USB stick, picking one of several identical disks at random, and
overwriting a disk that holds data.

- **Candidates.**  Every whole disk but the boot medium (``system: true``:
  the live ISO or USB stick the installer runs from), CD/DVD drives, loop
  devices and read-only disks.  A USB or removable disk is a candidate only
  for a match that names it *exactly* (``serial``, ``wwn`` or ``by_path``
  without a wildcard), never for a glob or a size.
- **Matching.**  ``match`` is one :class:`MatchSpec` or an ordered list of
  them; the first spec that matches any candidate decides.  In a spec every
  key given must match: ``serial``, ``model``, ``vendor``, ``wwn`` and
  ``by_path`` are shell globs (``fnmatch``, case-sensitive; ``wwn`` ignores
  case, ``by_path`` may be the full ``/dev/disk/by-path/...`` link or its
  last part), ``min_gib`` and ``max_gib`` bound the size, and ``size:
  largest | smallest`` breaks a tie.  More than one disk left without a
  tie-breaker, or a tie of same-sized disks, is an error naming them by
  stable id; so is no match at all, which lists the candidates.
- **Data.**  The chosen disk is probed with wipefs and blkid
  (:func:`rackforge.firstboot.storage.probe_signatures`, read-only).  A disk
  holding any signature (partition table, file system, LVM, RAID, Ceph) is
  refused unless ``wipe: force`` *and* the spec matched that disk alone: a
  disk picked by ``size: largest`` among several is never wiped.  A disk that
  cannot be probed is refused: what cannot be read cannot be called empty.

Every disk is named by its stable id (WWN, else serial, else by-path; the
same ids as ``firstboot/storage.py``), never by its kernel name alone, which
can change between boots.  Nothing here writes to a disk.
"""

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Optional

from rackforge import errors
from rackforge.firstboot import storage
from rackforge.firstboot.storage import GIB, stable_id

GLOB_KEYS = ("serial", "model", "vendor", "wwn", "by_path")
EXACT_KEYS = ("serial", "wwn", "by_path")      # the ones that may name a USB disk
SIZE_KEYS = ("min_gib", "max_gib")
MATCH_KEYS = GLOB_KEYS + SIZE_KEYS + ("size",)
SIZES = ("largest", "smallest")
WIPE_POLICIES = storage.WIPE_POLICIES          # never | force
BY_PATH = "/dev/disk/by-path/"
WILDCARD = re.compile(r"[*?\[]")
#: disks named in one error line at most
MAX_LISTED = 8


# -- errors ------------------------------------------------------------------------------
class DiskChoiceError(errors.ConfigError):
    """The answers do not pick exactly one disk that is safe to write.

    ``key`` (a keyword argument) is the answer key at fault (``disk.match[1]``,
    ``disk.wipe``); the message itself is a whole sentence without it.
    """


class NoCandidates(DiskChoiceError):
    message = ("no disk to install to: every disk is left out ({excluded}); attach a disk "
               "(see 'rackforge firstboot inventory')")


class NoDiskMatches(DiskChoiceError):
    message = ("no disk matches {wanted}; the candidates are {candidates}{removable}"
               "{excluded}; fix disk.match")


class AmbiguousMatch(DiskChoiceError):
    message = "ambiguous: {count} disks match ({ids}); add serial/wwn or size: largest"


class SameSize(DiskChoiceError):
    message = ("ambiguous: {count} disks are the {size} ({ids}, {each} each); add serial "
               "or wwn to pick one")


class DiskHoldsData(DiskChoiceError):
    message = ("{disk} holds data ({signatures}) and disk.wipe is never: it is not "
               "overwritten; check it is the disk you mean, then set disk.wipe: force, "
               "or pick an empty disk")


class WipeNeedsExactMatch(DiskChoiceError):
    message = ("{disk} holds data ({signatures}) but was picked by size: {size} among "
               "{count} disks: a disk is wiped only when disk.match names it alone; name it "
               "as {exact}")


class CannotProbe(DiskChoiceError):
    message = ("cannot tell whether {disk} holds data ({detail}): it is not written; run "
               "the installer as root, where wipefs and blkid can read the disk")
    retryable = True


# -- the disk section's model ------------------------------------------------------------
@dataclass(frozen=True)
class MatchSpec:
    """One way of naming the target disk; every key given must match."""

    serial: Optional[str] = None
    model: Optional[str] = None
    vendor: Optional[str] = None
    wwn: Optional[str] = None
    by_path: Optional[str] = None
    min_gib: Optional[float] = None
    max_gib: Optional[float] = None
    size: Optional[str] = None          # largest | smallest: the tie-breaker

    def to_dict(self):
        """The spec as written in an answer file (only the keys given)."""
        return {k: getattr(self, k) for k in MATCH_KEYS if getattr(self, k) is not None}

    def describe(self):
        """``serial 'S3Z*', min_gib 100`` for messages."""
        return ", ".join("%s %r" % (k, v) if isinstance(v, str) else "%s %s" % (k, v)
                         for k, v in self.to_dict().items()) or "(nothing)"

    def matches(self, disk):
        """Does ``disk`` (a ``BlockDevice``) satisfy every key of this spec but ``size``?"""
        for key in GLOB_KEYS:
            pattern = getattr(self, key)
            if pattern is not None and not _glob(key, pattern, disk):
                return False
        if self.min_gib is not None and disk.size < self.min_gib * GIB:
            return False
        if self.max_gib is not None and disk.size > self.max_gib * GIB:
            return False
        return True

    def names_exactly(self):
        """Does the spec name one disk by serial, wwn or by-path, without a wildcard?"""
        return any(getattr(self, k) is not None and not WILDCARD.search(getattr(self, k))
                   for k in EXACT_KEYS)


def _glob(key, pattern, disk):
    value = getattr(disk, key, None)
    if value is None:
        return False
    if key == "wwn":
        return fnmatch.fnmatchcase(value.lower(), pattern.lower())
    if key == "by_path" and not pattern.startswith("/") and value.startswith(BY_PATH):
        value = value[len(BY_PATH):]
    return fnmatch.fnmatchcase(value, pattern)


@dataclass
class DiskAnswer:
    """The ``disk`` section: which disk (``match``, in order) and may it be wiped."""

    match: list                         # [MatchSpec], tried in order
    wipe: str = "never"                 # never | force
    listed: bool = False                # match was written as a list (keys: disk.match[i])

    def key(self, index):
        """The answer key of ``match[index]``, as the operator wrote it."""
        return "disk.match[%d]" % index if self.listed else "disk.match"

    def to_dict(self):
        specs = [spec.to_dict() for spec in self.match]
        return {"match": specs if self.listed else specs[0], "wipe": self.wipe}


def exact_spec(disk):
    """The spec that names ``disk`` alone, for a disk picked on a screen: by WWN, else
    serial, else by-path (what :func:`stable_id` uses), or None if it has none of them."""
    if disk.wwn:
        return MatchSpec(wwn=disk.wwn)
    if disk.serial:
        return MatchSpec(serial=disk.serial)
    if disk.by_path:
        return MatchSpec(by_path=disk.by_path)
    return None


# -- candidates ----------------------------------------------------------------------------
@dataclass
class Excluded:
    """A disk that is never a target, and why."""
    name: str
    path: str
    stable_id: str
    reason: str


def exclusion(disk):
    """Why ``disk`` is never a target, or None."""
    if disk.system:
        return "the boot medium (it holds the running installer)"
    if disk.type == "rom":
        return "a CD/DVD drive"
    if disk.type == "loop":
        return "a loop device"
    if disk.type != "disk":
        return "not a disk (%s)" % disk.type
    if disk.read_only:
        return "read-only"
    if disk.size <= 0:
        return "no medium"
    return None


def is_removable(disk):
    """A USB or removable disk: a target only when named exactly."""
    return bool(disk.removable or disk.bus == "usb")


def candidates(inventory):
    """``(candidates, excluded)``: the disks that may be targets (removable ones
    included, see :func:`is_removable`), sorted by name, and the others with why."""
    pool, excluded = [], []
    for disk in sorted(inventory.disks, key=lambda d: d.name):
        reason = exclusion(disk)
        if reason is None:
            pool.append(disk)
        else:
            excluded.append(Excluded(disk.name, disk.path, stable_id(disk), reason))
    return pool, excluded


def size_text(size):
    """``7.3 TiB``, ``447.1 GiB``: a size for people."""
    gib = size / GIB
    return "%.1f TiB" % (gib / 1024) if gib >= 1024 else "%.1f GiB" % gib


def describe(disk):
    """``wwn:0x5000... (sda, 7.3 TiB, ST8000NM000A-2KE)``: a disk in one phrase."""
    facts = [disk.name, size_text(disk.size)] + [x for x in (disk.model,) if x]
    return "%s (%s)" % (stable_id(disk), ", ".join(facts))


def _listed(items, show):
    items = list(items)
    shown = [show(x) for x in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        shown.append("and %d more" % (len(items) - MAX_LISTED))
    return ", ".join(shown) or "none"


# -- choosing --------------------------------------------------------------------------------
@dataclass
class Selected:
    """The disk a spec picked, before its contents are looked at."""
    disk: object                        # BlockDevice
    key: str                            # the answer key of the spec that picked it
    spec: MatchSpec
    matched: list                       # every disk the spec matched (the tie-breaker's pool)
    excluded: list                      # [Excluded]

    @property
    def unique(self):
        """The spec matched this disk alone (no tie-breaker was needed)."""
        return len(self.matched) == 1


def select(answer, inventory):
    """The disk ``answer`` (a :class:`DiskAnswer`) picks in ``inventory``.

    :returns: :class:`Selected`
    :raises: :class:`NoCandidates`, :class:`NoDiskMatches`, :class:`AmbiguousMatch`,
        :class:`SameSize`
    """
    pool, excluded = candidates(inventory)
    if not pool:
        raise NoCandidates(excluded=_listed(excluded, lambda x: "%s: %s" % (x.name, x.reason)),
                           key="disk")
    for index, spec in enumerate(answer.match):
        found = [d for d in pool if spec.matches(d)
                 and (not is_removable(d) or spec.names_exactly())]
        if found:
            return _decide(Selected(None, answer.key(index), spec, found, excluded))
    return _no_match(answer, pool, excluded)


def _decide(selected):
    found, spec = selected.matched, selected.spec
    if len(found) == 1:
        selected.disk = found[0]
        return selected
    if spec.size is None:
        raise AmbiguousMatch(count=len(found), ids=_listed(found, stable_id), key=selected.key)
    pick = max if spec.size == "largest" else min
    best = pick(d.size for d in found)
    tied = [d for d in found if d.size == best]
    if len(tied) > 1:
        raise SameSize(count=len(tied), size=spec.size, ids=_listed(tied, stable_id),
                       each=size_text(best), key=selected.key)
    selected.disk = tied[0]
    return selected


def _no_match(answer, pool, excluded):
    wanted = "; ".join(spec.describe() for spec in answer.match)
    if len(answer.match) > 1:
        wanted = "any of: " + wanted
    fixed = [d for d in pool if not is_removable(d)]
    usb = [d for d in pool if is_removable(d)]
    skipped = [d for d in usb if any(spec.matches(d) for spec in answer.match)]
    removable = ""
    if usb:
        removable = "; removable, a target only when named exactly by serial, wwn or " \
                    "by_path: %s" % _listed(usb, describe)
    if skipped:
        removable += " (%s would match)" % ", ".join(d.name for d in skipped)
    left_out = ""
    if excluded:
        left_out = "; left out: %s" % _listed(excluded, lambda x: "%s (%s)" % (
            x.name, x.reason.split(" (")[0]))
    raise NoDiskMatches(wanted=wanted, candidates=_listed(fixed, describe),
                        removable=removable, excluded=left_out, key="disk.match")


@dataclass
class Choice:
    """The target disk and what will be done to it."""
    disk: object                        # BlockDevice
    stable_id: str
    key: str                            # the answer key of the spec that picked it
    unique: bool                        # that spec matched this disk alone
    signatures: Optional[list]          # what it holds; None: not probed
    wipe: bool                          # the writer erases those signatures first
    excluded: list = field(default_factory=list)
    matched: list = field(default_factory=list)     # stable ids of every disk the spec matched


def choose(answer, inventory, run=storage.run_probe):
    """The target disk of ``answer`` in ``inventory``, checked for data.

    :param run: the probe runner ``run(argv) -> (returncode, stdout)`` (wipefs and
        blkid, read-only); None to skip the probe (a recorded inventory: its disks
        are not this machine's), which leaves ``signatures`` None and ``wipe`` False.
    :returns: :class:`Choice`
    :raises: :class:`DiskChoiceError` (see :func:`select`; :class:`DiskHoldsData`,
        :class:`WipeNeedsExactMatch`, :class:`CannotProbe`)
    """
    selected = select(answer, inventory)
    disk = selected.disk
    choice = Choice(disk=disk, stable_id=stable_id(disk), key=selected.key,
                    unique=selected.unique, signatures=None, wipe=False,
                    excluded=selected.excluded,
                    matched=[stable_id(d) for d in selected.matched])
    if run is None:
        return choice
    try:
        choice.signatures = storage.probe_signatures(disk.path, run)
    except storage.ProbeFailed as e:
        raise CannotProbe(disk=describe(disk), detail=e.kwargs.get("detail", str(e)),
                          key="disk") from None
    if not choice.signatures:
        return choice
    held = ", ".join(choice.signatures)
    if answer.wipe != "force":
        raise DiskHoldsData(disk=describe(disk), signatures=held, key="disk.wipe")
    if not selected.unique:
        exact = exact_spec(disk)
        raise WipeNeedsExactMatch(
            disk=describe(disk), signatures=held, size=selected.spec.size,
            count=len(selected.matched), key=selected.key,
            exact=", ".join("%s: %s" % kv for kv in exact.to_dict().items()) if exact
            else "nothing (it has no wwn, serial or by-path): empty it by hand first")
    choice.wipe = True
    return choice
