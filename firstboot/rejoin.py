"""A node that has not joined yet, given new join settings: endpoint, token, CA pin.

The field's usual first-boot failure is a join that cannot succeed with what
the bootstrap file says: the token expired or was used before the node came
up, an endpoint or the CA pin was mistyped at the installer.  First boot then
stops (or keeps retrying a dead endpoint) at its ``join`` step, whose record
stays ``started`` (``journal.py``).  :func:`apply` replaces the ``join:``
mapping of ``/etc/rackforge/bootstrap.yaml`` and starts first boot again,
which resumes at that step with the new settings (the step's intent, the
node's name, addresses and key, is kept: it holds no token).  The console's
"Join the cluster with a new token" action and ``rackforge firstboot join``
call it.

Only a node that is not a member may (:func:`refusal` says why not):

- a **member**: first boot completed, its ``join`` step done, or a node
  certificate in its state directory (a join answered, whatever the journal
  says): it leaves its cluster with a factory reset first (``factoryreset.py``);
- a node that **began seeding**: a ``seed`` step recorded or a cluster CA
  made here: a new join cannot undo its own cluster.

The file keeps its ``management``, ``role`` and ``boot`` keys; ``seed``,
``cluster`` and ``vip`` go (a joining node takes the cluster's).  A file that
exists but cannot be read is refused (it would lose them).  The new mapping
is validated by the bootstrap file's own rules before anything is touched;
the unit is stopped and the refusals checked again (a join that finished
meanwhile is a member now: the unit is started again and nothing changes),
the file written atomically (0600), and the unit started again.  The token is
never logged, shown or put in argv.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rackforge import errors, paths, yamlfile
from rackforge.fileutil import atomic_write, make_dirs
from rackforge.firstboot import bootstrap, journal
from rackforge.firstboot.cli import BANNER, BANNER_PREFIX   # cli.banner writes it

LOG = logging.getLogger(__name__)
UNIT = "rackforge-firstboot.service"
KEPT = ("management", "role", "boot")


class AlreadyMember(errors.RackforgeError):
    message = ("this node {why}: it is a member; to join a cluster again, reset it to its "
               "factory state first (the console's 'Reset this node', or 'rackforge "
               "firstboot factory-reset'); nothing was changed")
    exit_code = 2


class BeganSeeding(errors.RackforgeError):
    message = ("this node began creating a cluster{cluster} as its seed ({why}): it cannot "
               "join another one instead; reinstall it to make it a joining node; nothing "
               "was changed")
    exit_code = 2


class BootstrapUnreadable(errors.RackforgeError):
    message = ("the bootstrap file {path} cannot be read ({detail}): its management network "
               "and role would be lost; fix or remove the file, then try again; nothing was "
               "changed")
    exit_code = 2


class BootstrapUnwritable(errors.RackforgeError):
    message = ("cannot write the bootstrap file {path} ({detail}): it is as it was and first "
               "boot runs on with it; free the file system or fix its permissions, then try "
               "again")
    retryable = True


class NotStarted(errors.RackforgeError):
    message = ("the new join settings are in {path} but first boot did not start again "
               "({detail}); run 'systemctl start {unit}'")
    retryable = True


@dataclass
class JoinState:
    """What the console shows before the operator types new settings (no token)."""
    member: str = None              # why this node is a member, or None
    seed: str = None                # why this node began seeding, or None
    cluster: str = None             # the cluster its bootstrap file names, if any
    endpoints: list = field(default_factory=list)
    ca_sha256: str = ""
    step: str = None                # the join step's status: None, started, done
    error: str = ""                 # the join step's last error
    banner: str = ""                # first boot's console line, as the banner shows it

    def to_dict(self):
        return dict(self.__dict__)


def banner_line():
    """First boot's line on the console banner (what it is doing, or why not), or ''."""
    try:
        text = (paths.issue_dir() / BANNER).read_text(errors="replace")
    except OSError:
        return ""
    line = " ".join(text.split())
    if line.startswith(BANNER_PREFIX):
        line = line[len(BANNER_PREFIX):]
    return errors.printable(line)


def raw(where):
    """The bootstrap file's mapping as written (no command line merged); {} when there
    is none.  Raises :class:`BootstrapUnreadable` for a file that cannot be read."""
    try:
        data = yamlfile.load(where, yamlfile.NODE)
    except FileNotFoundError:
        return {}
    except (OSError, yamlfile.YamlError) as exc:
        detail = exc.kwargs.get("problem") if isinstance(exc, yamlfile.YamlError) else \
            (exc.strerror or type(exc).__name__)
        raise BootstrapUnreadable(path=where, detail=detail) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BootstrapUnreadable(path=where, detail="not a mapping")
    return data


def _strings(value):
    """``value`` as a list of strings (a string alone, or a list's strings)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def state(where=None, base=None):
    """This node's :class:`JoinState`."""
    from rackforge.cluster import ca
    where = Path(where or bootstrap.path())
    base = Path(base or paths.state_dir())
    records = journal.records(base)
    join_rec = records.get("join") or {}
    out = JoinState(step=join_rec.get("status"), error=str(join_rec.get("error") or ""),
                    banner=banner_line())
    if journal.done_marker(base).exists():
        out.member = "completed first boot"
    elif join_rec.get("status") == journal.DONE:
        out.member = "joined a cluster (first boot step 'join' is done)"
    elif (base / "pki" / "node.crt").exists():
        out.member = "holds a node certificate from its cluster"
    if "seed" in records:
        out.seed = "first boot step 'seed' is recorded"
    elif (base / "ca" / ca.KEY_FILE).exists():
        out.seed = "a cluster CA was made here"
    data = raw(where)
    joins = data.get("join") if isinstance(data.get("join"), dict) else {}
    out.endpoints = _strings(joins.get("endpoints", joins.get("endpoint")))
    pin = joins.get("ca_sha256")
    out.ca_sha256 = pin if isinstance(pin, str) else ""
    cluster = data.get("cluster")
    out.cluster = cluster if isinstance(cluster, str) and bootstrap.CLUSTER_RE.match(cluster) \
        else None
    return out


def refusal(join_state):
    """The error saying why this node may not join with new settings, or None."""
    if join_state.member:
        return AlreadyMember(why=join_state.member)
    if join_state.seed:
        return BeganSeeding(why=join_state.seed, cluster=" (%s)" % join_state.cluster
                            if join_state.cluster else "")
    return None


def split_endpoints(given):
    """Endpoints as typed: strings (or one) with commas or spaces between."""
    given = [given] if isinstance(given, str) else given
    return [e for text in given for e in text.replace(" ", ",").split(",") if e]


def kept(mapping):
    """What a new join keeps of a bootstrap mapping: its :data:`KEPT` keys."""
    return {k: mapping[k] for k in KEPT if k in mapping}


def new_mapping(data, endpoints, token, ca_sha256):
    """The bootstrap mapping with ``join:`` replaced (``KEPT`` keys kept)."""
    out = kept(data)
    out["join"] = {"endpoints": list(endpoints), "token": token, "ca_sha256": ca_sha256}
    return out


def apply(endpoints, token, ca_sha256, where=None, base=None, systemctl=None):
    """Replace the join settings and start first boot again; returns the
    :class:`bootstrap.Bootstrap` written.

    With nothing changed, raises :class:`AlreadyMember`, :class:`BeganSeeding`,
    :class:`BootstrapUnreadable`, a :class:`bootstrap.BootstrapError` (one line, no
    value), :class:`BootstrapUnwritable`, or ``SystemctlFailed`` for the stop; with the
    file written, :class:`NotStarted` when the unit's start failed."""
    from rackforge import systemd
    systemctl = systemctl or systemd.systemctl
    where = Path(where or bootstrap.path())
    refused = refusal(state(where, base))
    if refused:
        raise refused
    mapping = new_mapping(raw(where), endpoints, token, ca_sha256)
    boot = bootstrap.parse(mapping, where)          # the file's own rules, before any change
    mapping["join"]["ca_sha256"] = boot.join.ca_sha256
    systemctl("stop", UNIT)
    try:
        # a join that finished before the stop made a member: as it was, then refused
        refused = refusal(state(where, base))
        if refused:
            raise refused
        make_dirs(where.parent, 0o755)
        atomic_write(where, yaml.safe_dump(mapping, sort_keys=False,
                                           default_flow_style=False), mode=0o600)
    except OSError as exc:
        _start_again(systemctl)
        raise BootstrapUnwritable(path=where, detail=exc.strerror or exc) from None
    except errors.RackforgeError:
        _start_again(systemctl)
        raise
    LOG.warning("join settings replaced in %s: endpoints %s, CA pin %s (a new token); "
                "first boot starts again", where, ", ".join(boot.join.endpoints),
                boot.join.ca_sha256)
    try:
        systemctl("reset-failed", UNIT)
    except errors.RackforgeError as exc:        # a unit that never failed: nothing to reset
        LOG.info("%s", exc)
    try:
        systemctl("start", "--no-block", UNIT)
    except errors.RackforgeError as exc:
        raise NotStarted(path=where, detail=exc, unit=UNIT) from None
    return boot


def _start_again(systemctl):
    """First boot started again as it was (best effort: the caller's error says why)."""
    try:
        systemctl("start", "--no-block", UNIT)
    except errors.RackforgeError as exc:
        LOG.warning("%s", exc)
