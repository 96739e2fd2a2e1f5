"""A node that has not joined yet, given new join settings: endpoint, token, CA pin.

The field's usual first-boot failure is a join that cannot succeed with what
the bootstrap file says: the token expired or was used before the node came
up, an endpoint or the CA pin was mistyped at the installer.  First boot then
stops (or keeps retrying a dead endpoint) at its ``join`` step, whose record
stays ``started`` (``journal.py``).  :func:`apply` replaces the ``join:``
mapping of ``/etc/rackforge/bootstrap.yaml`` and starts first boot again,
which resumes at that step with the new settings (the step's intent, the
node's name, addresses and key, is kept: it holds no token).  The console's
"Join with a new token" action and ``rackforge firstboot join`` call it.

Only a node that is not a member may: :func:`state` says why not otherwise.

- first boot completed, or its ``join`` step done: the node is a member, and
  leaving the cluster (etcd, Galera, RabbitMQ, OVN, Ceph) is a decommission
  rackforge does not do yet;
- a ``seed`` step recorded (started or done): the node began creating a
  cluster of its own (its CA, its etcd), which a new join cannot undo.

The file keeps its ``management`` and ``role`` keys (and the kernel command
line's ``boot`` keys); ``seed``, ``cluster`` and ``vip`` go (a joining node
takes the cluster's).  The new mapping is validated by the bootstrap file's
own rules before anything is touched; the unit is stopped before the file is
written (a join retrying with the old token must not race the new one), the
file is written atomically (0600), then the unit is started again.  The token
is never logged, shown or put in argv.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rackforge import errors, paths, yamlfile
from rackforge.fileutil import atomic_write, make_dirs
from rackforge.firstboot import bootstrap, journal

LOG = logging.getLogger(__name__)
UNIT = "rackforge-firstboot.service"
KEPT = ("management", "role", "boot")
BANNER = "rackforge-firstboot.issue"


class AlreadyMember(errors.RackforgeError):
    message = ("this node {why}: leaving its cluster to join again (etcd, Galera, RabbitMQ, "
               "OVN and Ceph membership) is a decommission rackforge does not do yet; "
               "nothing was changed")
    exit_code = 2


class BeganSeeding(errors.RackforgeError):
    message = ("this node began creating cluster {cluster} as its seed (first boot step "
               "'seed' is recorded): it cannot join another one instead; reinstall it to "
               "make it a joining node; nothing was changed")
    exit_code = 2


class BootstrapUnwritable(errors.RackforgeError):
    message = ("cannot write the bootstrap file {path} ({detail}): it is as it was and first "
               "boot runs on with it; free the file system or fix its permissions, then try "
               "again")
    retryable = True


@dataclass
class JoinState:
    """What the console shows before the operator types new settings (no token)."""
    member: str = None              # why this node may not join again, or None
    endpoints: list = field(default_factory=list)
    ca_sha256: str = ""
    step: str = None                # the join step's status: None, started, done
    error: str = ""                 # the join step's last error
    banner: str = ""                # first boot's console line, as the banner shows it
    seed_cluster: str = None        # the cluster a recorded seed step began, or None

    def to_dict(self):
        return dict(self.__dict__)


def banner_line():
    """First boot's line on the console banner (what it is doing, or why not), or ''."""
    try:
        text = (paths.issue_dir() / BANNER).read_text(errors="replace")
    except OSError:
        return ""
    return errors.printable(" ".join(text.split()))


def _raw(where):
    """The bootstrap file's mapping as written (no command line merged), or {}."""
    try:
        data = yamlfile.load(where, yamlfile.NODE)
    except FileNotFoundError:
        return {}
    except yamlfile.YamlError:
        return {}           # unreadable: replaced whole by the new settings
    return data if isinstance(data, dict) else {}


def state(where=None, base=None):
    """This node's :class:`JoinState`."""
    where = Path(where or bootstrap.path())
    records = journal.records(base)
    join_rec = records.get("join") or {}
    out = JoinState(step=join_rec.get("status"), error=join_rec.get("error") or "",
                    banner=banner_line())
    if journal.done_marker(base).exists():
        out.member = "completed first boot"
    elif join_rec.get("status") == journal.DONE:
        out.member = "joined a cluster (first boot step 'join' is done)"
    raw = _raw(where)
    joins = raw.get("join") if isinstance(raw.get("join"), dict) else {}
    endpoints = joins.get("endpoints", joins.get("endpoint")) or []
    out.endpoints = [e for e in ([endpoints] if isinstance(endpoints, str) else endpoints)
                     if isinstance(e, str)]
    pin = joins.get("ca_sha256")
    out.ca_sha256 = pin if isinstance(pin, str) else ""
    if "seed" in records:
        out.seed_cluster = raw.get("cluster") if isinstance(raw.get("cluster"), str) else "?"
    return out


def new_mapping(raw, endpoints, token, ca_sha256):
    """The bootstrap mapping with ``join:`` replaced (``KEPT`` keys kept)."""
    out = {k: raw[k] for k in KEPT if k in raw}
    out["join"] = {"endpoints": list(endpoints), "token": token, "ca_sha256": ca_sha256}
    return out


def apply(endpoints, token, ca_sha256, where=None, base=None, systemctl=None):
    """Replace the join settings and start first boot again; returns the
    :class:`bootstrap.Bootstrap` written.  Raises :class:`AlreadyMember`,
    :class:`BeganSeeding` or a :class:`bootstrap.BootstrapError` (one line, no value)
    with nothing changed."""
    from rackforge import systemd
    systemctl = systemctl or systemd.systemctl
    where = Path(where or bootstrap.path())
    now = state(where, base)
    if now.member:
        raise AlreadyMember(why=now.member)
    if now.seed_cluster is not None:
        raise BeganSeeding(cluster=now.seed_cluster)
    mapping = new_mapping(_raw(where), endpoints, token, ca_sha256)
    boot = bootstrap.parse(mapping, where)          # the file's own rules, before any change
    mapping["join"]["ca_sha256"] = boot.join.ca_sha256
    systemctl("stop", UNIT)
    try:
        make_dirs(where.parent, 0o755)
        atomic_write(where, yaml.safe_dump(mapping, sort_keys=False,
                                           default_flow_style=False), mode=0o600)
    except OSError as exc:
        systemctl("start", "--no-block", UNIT)     # back as it was, on the old settings
        raise BootstrapUnwritable(path=where, detail=exc.strerror or exc) from None
    LOG.warning("join settings replaced in %s: endpoints %s, CA pin %s (a new token); "
                "first boot starts again", where, ", ".join(boot.join.endpoints),
                boot.join.ca_sha256)
    systemctl("reset-failed", UNIT)
    systemctl("start", "--no-block", UNIT)
    return boot
