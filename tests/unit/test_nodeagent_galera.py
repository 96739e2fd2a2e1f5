"""The Galera step's bookkeeping in etcd: positions a node published while no Primary
component existed are withdrawn once it is in one again, so a later loss is decided on
fresh positions only."""

import json
import subprocess
from types import SimpleNamespace

from fakesystemd import FakeSystemd

from rackforge.kvstore import MemoryKV
from rackforge.nodeagent import galera
from rackforge.nodeagent.reconcile import StepContext


def synced(argv, input=None, **kw):
    return subprocess.CompletedProcess(argv, 0, "wsrep_cluster_status\tPrimary\n"
                                       "wsrep_local_state\t4\nwsrep_cluster_size\t3\n", "")


def test_positions_published_before_a_primary_formed_are_withdrawn(tmp_path):
    kv = MemoryKV()
    lease = kv.lease_grant(60)
    stale = galera.POSITIONS + "3/n2"       # reported for the epoch after the last bootstrap
    other = galera.POSITIONS + "3/n3"
    kv.txn([], [(stale, json.dumps({"uuid": "u", "seqno": 100}).encode(), lease),
                (other, json.dumps({"uuid": "u", "seqno": 90}).encode(), lease)])
    systemd = FakeSystemd([galera.UNIT])
    systemd.units[galera.UNIT]["active"] = "active"
    g = galera.Galera("n2", kv, run=synced, datadir=tmp_path, applied=tmp_path / "applied")
    ctx = StepContext(service=SimpleNamespace(configs=()), view=SimpleNamespace(name="node2"),
                      systemd=systemd, kv=kv, tasks=SimpleNamespace(lease=lease),
                      changed=False, dry_run=False, context={})
    assert g.step(ctx) == []
    assert kv.get(stale) is None and kv.get(other) is not None     # its own only
    revision = kv.revision()
    g.step(ctx)
    assert kv.revision() == revision        # once: nothing written on the next passes


def test_a_new_cluster_opens_the_gate_before_galera_new_cluster_starts_mariadb(tmp_path):
    """``galera_new_cluster`` starts mariadb.service itself: its drop-in lets only the
    agent start it, so the gate must be open by then, or systemd skips the start."""
    kv = MemoryKV()
    systemd = FakeSystemd([galera.UNIT])
    seen = []

    def run(argv, input=None, **kw):
        if argv == ["galera_new_cluster"]:
            seen.append(set(systemd.gates))
            return subprocess.CompletedProcess(argv, 0, "", "")
        if seen:
            return synced(argv)
        return subprocess.CompletedProcess(argv, 0, "wsrep_cluster_status\tnon-Primary\n", "")
    g = galera.Galera("n1", kv, run=run, datadir=tmp_path, applied=tmp_path / "applied")
    g._users = lambda context: None         # the SQL of its users is another test's
    g.bootstrap(SimpleNamespace(name="node1"), systemd, {})
    assert seen == [{galera.UNIT}]
