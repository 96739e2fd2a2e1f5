"""``cluster status`` shows Ceph as the controllers' ``ceph`` check last read it: its health,
quorum and OSDs, and the reason when one storage host keeps one copy by design."""

import json
from pathlib import Path

import agentrack

from rackforge import keys
from rackforge.cluster import status as status_mod
from rackforge.nodeagent import ceph

SAMPLES = Path(__file__).parent / "samples" / "ceph"


def publish(reg, node, service, record):
    reg.kv.txn([], [(keys.HEALTH + "%s/%s" % (node.id, service), json.dumps(record).encode())])


def test_ceph_health_quorum_and_osds_in_status(tmp_path):
    reg, nodes = agentrack.make(tmp_path, count=4)
    sample = json.loads((SAMPLES / "status-degraded.json").read_text())
    result = ceph.summarize(sample, 4)
    for name in ("n1", "n2", "n3", "n4"):
        publish(reg, nodes[name][0], "hosts", {"state": "ok", "since": 1})
    record = {"state": result.state, "since": 5, "error": result.error,
              "detail": result.detail}
    publish(reg, nodes["n1"][0], "ceph", record)
    st = status_mod.collect(reg, quota=2 << 30)
    assert st.ceph["health"] == "HEALTH_WARN" and st.ceph["osds"]["up"] == 4
    assert any(p.startswith("node n1: service ceph is degraded: HEALTH_WARN: PG_AVAILABILITY")
               for p in st.problems)
    lines = status_mod.render(st)
    assert "ceph HEALTH_WARN: 3 monitors in quorum (node1, node2, node3), OSDs 4 up, 4 in, " \
           "of 4" in lines


def test_one_copy_by_design_is_said_not_counted(tmp_path):
    reg, nodes = agentrack.make(tmp_path, count=1)
    sample = json.loads((SAMPLES / "status-aio.json").read_text())
    result = ceph.summarize(sample, 1)
    publish(reg, nodes["n1"][0], "ceph", {"state": result.state, "detail": result.detail})
    st = status_mod.collect(reg, quota=2 << 30)
    assert not [p for p in st.problems if "ceph" in p]
    assert any(line.startswith("  note: one host carries OSDs, so each pool keeps one copy")
               for line in status_mod.render(st))
