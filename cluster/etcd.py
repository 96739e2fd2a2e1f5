"""etcd on the controllers: the seed's one-member cluster, and controllers joining it.

etcd runs from its own unit, ``rackforge-etcd.service`` (element
``rackforge-firstboot``), as Debian's ``etcd`` user, with its flags in an
environment file written here::

    /etc/rackforge/etcd/etcd.env      ETCD_* flags: name, URLs, TLS files, initial cluster
    /etc/rackforge/etcd/ca.crt        the cluster CA
    /etc/rackforge/etcd/server.crt    this node's certificate (cluster CA)
    /etc/rackforge/etcd/server.key    its key, 0640 root:etcd
    /etc/rackforge/etcd/client.json   how rackforge on this node reaches etcd
                                      (rackforge.kvstore.write_client)
    /var/lib/etcd/rackforge           the data directory

TLS on both ports, and both require a certificate from the cluster CA
(``--client-cert-auth``, ``--peer-client-cert-auth``): only nodes that
joined with a token can read or write the registry.

- **Seed**: a one-member cluster, ``initial-cluster-state=new``.
- **A controller that joins** (its role decided), in the way ``etcdctl``'s
  runtime reconfiguration guide describes, with learners so that the quorum
  never counts a member that has not started yet:

  1. list the members; unless its peer URL is there already, add itself as a
     *learner* (etcd 3.4 admits one learner at a time, so controllers that
     join together take turns: "too many learner members" is retried);
  2. write its environment file with ``initial-cluster`` = the members and
     itself, ``initial-cluster-state=existing``, and start the unit;
  3. promote itself to a voting member once it has caught up with the
     leader ("in sync" is retried until the deadline).

  Each step looks before it acts, so a run cut by a power loss resumes.
- **Compute nodes** run no etcd; they are clients of the controllers'.

``client.json`` (``{endpoints, ca_cert, cert, key}``, 0600) is what
:func:`rackforge.registry.connect` uses when no endpoint is given, so
``rackforge node list`` works on any node after its first boot.
"""

import logging
import os
import pwd
import time
from dataclasses import dataclass
from pathlib import Path

from rackforge import errors, keys, paths, systemd
from rackforge.fileutil import atomic_write, make_dirs
from rackforge.kvstore import (LearnerBusy, LearnerNotReady, MemberNotLearner,
                               RegistryUnavailable)

LOG = logging.getLogger(__name__)

UNIT = "rackforge-etcd.service"
CLIENT_PORT = 2379
PEER_PORT = 2380
START_TIMEOUT = 180          # a learner catching up on 2 slow cores
ETCD_USER = "etcd"
QUOTA_BYTES = 2 << 30       # etcd's own default, written down so status can report against it


class EtcdError(errors.RackforgeError):
    message = "etcd on this node: {detail}"
    retryable = True


@dataclass(frozen=True)
class Layout:
    """Where etcd's files go (tests point both somewhere else)."""
    config_dir: Path
    data_dir: Path

    @classmethod
    def default(cls):
        return cls(config_dir=paths.config_dir() / "etcd",
                   data_dir=Path(os.environ.get("RACKFORGE_ETCD_DATA",
                                                "/var/lib/etcd/rackforge")))

    @property
    def env_file(self):
        return self.config_dir / "etcd.env"


def client_url(address):
    return "https://%s:%d" % (_host(address), CLIENT_PORT)


def peer_url(address):
    return "https://%s:%d" % (_host(address), PEER_PORT)


def _host(address):
    return "[%s]" % address if ":" in address else address


def render_env(name, address, initial_cluster, state, cluster_token, layout):
    """The ``ETCD_*`` environment file for ``rackforge-etcd.service``."""
    cfg = layout.config_dir
    values = {
        "ETCD_NAME": name,
        "ETCD_DATA_DIR": str(layout.data_dir),
        "ETCD_LISTEN_CLIENT_URLS": client_url(address),
        "ETCD_ADVERTISE_CLIENT_URLS": client_url(address),
        "ETCD_LISTEN_PEER_URLS": peer_url(address),
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": peer_url(address),
        "ETCD_INITIAL_CLUSTER": ",".join("%s=%s" % m for m in initial_cluster),
        "ETCD_INITIAL_CLUSTER_STATE": state,
        "ETCD_INITIAL_CLUSTER_TOKEN": cluster_token,
        "ETCD_CLIENT_CERT_AUTH": "true",
        "ETCD_TRUSTED_CA_FILE": str(cfg / "ca.crt"),
        "ETCD_CERT_FILE": str(cfg / "server.crt"),
        "ETCD_KEY_FILE": str(cfg / "server.key"),
        "ETCD_PEER_CLIENT_CERT_AUTH": "true",
        "ETCD_PEER_TRUSTED_CA_FILE": str(cfg / "ca.crt"),
        "ETCD_PEER_CERT_FILE": str(cfg / "server.crt"),
        "ETCD_PEER_KEY_FILE": str(cfg / "server.key"),
        # etcd 3.4 warns "ignoring common name in gRPC-gateway proxy request" on
        # every request over its JSON gateway with client certificates
        "ETCD_LOG_LEVEL": "error",
        "ETCD_LOGGER": "zap",
        # old revisions go after an hour; the back end has an explicit quota, which
        # 'rackforge cluster status' reports against (a full etcd turns read-only)
        "ETCD_AUTO_COMPACTION_MODE": "periodic",
        "ETCD_AUTO_COMPACTION_RETENTION": "1h",
        "ETCD_QUOTA_BACKEND_BYTES": str(QUOTA_BYTES),
    }
    lines = ["# written by rackforge firstboot; rackforge-etcd.service reads it"]
    lines += ["%s=%s" % kv for kv in values.items()]
    return "\n".join(lines) + "\n"


def _etcd_ids():
    try:
        pw = pwd.getpwnam(ETCD_USER)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def write_tls(ca_pem, cert_pem, key_pem, layout):
    """The CA, certificate and key where the etcd user can read them (and no one else)."""
    make_dirs(layout.config_dir, 0o750)
    ids = _etcd_ids()
    atomic_write(layout.config_dir / "ca.crt", ca_pem, mode=0o644)
    atomic_write(layout.config_dir / "server.crt", cert_pem, mode=0o644)
    atomic_write(layout.config_dir / "server.key", key_pem, mode=0o640)
    if ids and os.geteuid() == 0:
        os.chown(layout.config_dir, 0, ids[1])
        os.chown(layout.config_dir / "server.key", 0, ids[1])


def _prepare_data_dir(layout):
    make_dirs(layout.data_dir, 0o700)
    ids = _etcd_ids()
    if ids and os.geteuid() == 0:
        os.chown(layout.data_dir, *ids)


class Starter:
    """Writes the files and starts etcd (``systemctl`` injectable for the unit tests)."""

    def __init__(self, layout=None, start_unit=None):
        self.layout = layout or Layout.default()
        self.start_unit = start_unit or (lambda: systemd.systemctl("enable", "--now", UNIT))

    def start(self, name, address, initial_cluster, state, cluster_token, tls_pems):
        write_tls(*tls_pems, layout=self.layout)
        _prepare_data_dir(self.layout)
        atomic_write(self.layout.env_file,
                     render_env(name, address, initial_cluster, state, cluster_token,
                                self.layout), mode=0o644)
        self.start_unit()


def wait_healthy(kv, deadline, what):
    """Poll ``kv`` until a read works (etcd elected a leader and answers)."""
    last = None
    while True:
        try:
            kv.get(keys.CLUSTER)
            return
        except RegistryUnavailable as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise EtcdError(detail="%s did not answer within %ds (%s)"
                            % (what, START_TIMEOUT, last))
        time.sleep(0.5)     # the poll interval of a wait for a condition, not a fixed delay


def start_seed(name, address, cluster, tls_pems, starter, connect):
    """The seed's one-member etcd; returns its client endpoints once it answers."""
    starter.start(name, address, [(name, peer_url(address))], "new", cluster, tls_pems)
    endpoints = [client_url(address)]
    wait_healthy(connect(endpoints).kv, time.monotonic() + START_TIMEOUT,
                 "the new etcd at %s" % endpoints[0])
    return endpoints


def _member_urls(members):
    return {u for m in members for u in m.get("peerURLs") or []}


def join_member(name, address, cluster, tls_pems, endpoints, kv, starter,
                deadline_s=START_TIMEOUT * 2):
    """Make this controller a voting etcd member (idempotent); returns all client endpoints.

    ``kv`` is an :class:`rackforge.etcdkv.EtcdKV` on the existing members
    (``endpoints``), with this node's client certificate.
    """
    deadline = time.monotonic() + deadline_s
    mine = peer_url(address)
    members = kv.members()
    while mine not in _member_urls(members):
        try:
            members = kv.member_add([mine], learner=True)
            LOG.info("etcd: added %s as a learner", mine)
        except (LearnerBusy, RegistryUnavailable) as exc:
            # another controller is catching up (etcd admits one learner at a time),
            # or its membership change was in flight and ours waited behind it: raft
            # takes one at a time.  Look again: ours may have been applied after all.
            if time.monotonic() >= deadline:
                raise EtcdError(detail="could not join etcd as a member within %ds (%s); "
                                "run firstboot again" % (deadline_s, exc)) from None
            time.sleep(1)
            members = kv.members()
    me = next(m for m in members if mine in (m.get("peerURLs") or []))
    initial = [(m.get("name") or name, u) for m in members for u in m.get("peerURLs") or []
               if m.get("name") or u == mine]
    starter.start(name, address, sorted(initial), "existing", cluster, tls_pems)
    while me.get("isLearner"):
        try:
            kv.member_promote(me["ID"])
            LOG.info("etcd: %s promoted to a voting member", name)
            break
        except LearnerNotReady as exc:
            if time.monotonic() >= deadline:
                raise EtcdError(detail="the learner %s did not catch up within %ds (%s)"
                                % (name, deadline_s, exc)) from None
            time.sleep(0.5)
        except MemberNotLearner:
            break
    members = kv.members()
    return voting_endpoints(members, first=client_url(address))


def voting_endpoints(members, first=None):
    """The client URLs of the started voting members (``first`` first)."""
    urls = [u for m in members if not m.get("isLearner") and m.get("name")
            for u in m.get("clientURLs") or []]
    if first in urls:
        urls.remove(first)
        urls.insert(0, first)
    return urls
