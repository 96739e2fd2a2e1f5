"""A rack of nspawn nodes of the built hci image, formed the operator's way: a seed with a
VIP, the others joining with a token made on it.  For the node agent's end-to-end tests
and its benchmark (tests/e2e/test_ha_rack.py, bench/nodeagent_ha.py)."""

import json
import os
import time

import pytest
from netns import wait_until

SUBNET = "10.77.9"
VIP = SUBNET + ".100"
FIRSTBOOT_TIMEOUT = 600
CONVERGE_TIMEOUT = 1500


def address(i):
    return "%s.%d" % (SUBNET, 10 + i)


def management(i):
    return "management: {interface: host0, address: %s/24}\n" % address(i)


PROFILE = "/usr/lib/rackforge/profile.json"
#: nspawn nodes have no spare block device: one data disk each, a file in the node's data
#: directory (the profile says so, as a test bed's must); OSDs small for one shared kernel
FILE_DISK_GIB = 8
OSD_MEMORY_MIB = 1024
#: the monitors' stores share the host's disk with everything else: they warn below 10 %
#: free (Ceph's 30 % is about a disk of their own; MON_DISK_CRIT at 5 % stays)
MON_DATA_AVAIL_WARN = 10
#: what one node of a rack writes to the host's disk at most (its overlay, its data disk's
#: used part, its journal), measured at about 1 to 2 GiB a node; some room on top
NODE_GROWTH_GIB = 3


def artifacts_dir():
    """Where the end-to-end tests keep what a person should look at afterwards
    (``$RACKFORGE_TEST_ARTIFACTS``, or /tmp/rackforge-artifacts)."""
    from pathlib import Path

    where = Path(os.environ.get("RACKFORGE_TEST_ARTIFACTS", "/tmp/rackforge-artifacts"))
    where.mkdir(parents=True, exist_ok=True)
    return where


def loop_device(node, gib=FILE_DISK_GIB):
    """A loop device of the host over a sparse file in the node's directory, handed to the
    node (the test bed's stand-in for a real disk: ``ceph-volume raw`` on a block
    device); detached when the rack is torn down."""
    import subprocess
    backing = node.dir / "disk0.raw"
    with open(backing, "wb") as f:
        f.truncate(gib << 30)
    dev = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                         capture_output=True, text=True).stdout.strip()
    node.devices.append(dev)
    node.cleanups.append(lambda: subprocess.run(["losetup", "-d", dev], capture_output=True))
    return dev


#: the provider (external) network of the test bed: a bridge in the rack's namespace, each
#: node's second link on it (``prov0`` inside), the namespace's side its gateway
PROVIDER_BRIDGE = "brprov"
PROVIDER_GATEWAY = "203.0.113.1"
PROVIDER_CIDR = "203.0.113.0/24"


OPERATOR = SUBNET + ".250"


def operator_address(netns, bridge="br0"):
    """An address on the management network in the rack's namespace: where an operator's
    browser sits (idempotent)."""
    from netns import ip

    have = ip("-n", netns, "-4", "addr", "show", "dev", bridge).stdout
    if OPERATOR + "/" not in have:
        ip("-n", netns, "addr", "add", OPERATOR + "/24", "dev", bridge)


def provider_link(node):
    """Give ``node`` a second link, ``prov0``, for the provider network (before it boots)."""
    node.veths.append(("pv-" + node.name[-12:], "prov0"))


def attach_provider(netns, nodes):
    """The provider bridge in the rack's namespace with the gateway address, and each
    node's provider link on it (once the node runs: nspawn makes the link)."""
    from netns import ip

    if ip("-n", netns, "link", "show", PROVIDER_BRIDGE, check=False).returncode != 0:
        ip("-n", netns, "link", "add", PROVIDER_BRIDGE, "type", "bridge")
        ip("-n", netns, "addr", "add", PROVIDER_GATEWAY + "/24", "dev", PROVIDER_BRIDGE)
        ip("-n", netns, "link", "set", PROVIDER_BRIDGE, "up")
    for node in nodes:
        for outside, _ in node.veths:
            wait_until(lambda: ip("-n", netns, "link", "show", outside,
                                  check=False).returncode == 0, 60,
                       "%s's provider link" % node.name, interval=0.5)
            ip("-n", netns, "link", "set", outside, "master", PROVIDER_BRIDGE, "up")


def prepare(node, i, bootstrap, profile=None, disks="file", provider=False, openstack=None):
    node.mount()
    node.write("/etc/hostname", "node%d\n" % i, mode=0o644)
    node.write("/etc/rackforge/bootstrap.yaml", bootstrap + management(i))
    # the aio image differs from hci only in its profile
    profile = dict(profile or json.loads(node.path(PROFILE).read_text()))
    if disks == "loop":
        profile["storage"] = dict(profile.get("storage") or {},
                                  test_devices=[loop_device(node)])
    else:
        profile["storage"] = dict(profile.get("storage") or {},
                                  file_disks={"count": 1, "size_gib": FILE_DISK_GIB})
    profile["ceph"] = dict(profile.get("ceph") or {}, osd_memory_target_mib=OSD_MEMORY_MIB,
                           mon_data_avail_warn=MON_DATA_AVAIL_WARN)
    if openstack:
        profile["openstack"] = dict(profile.get("openstack") or {}, **openstack)
    if provider:
        provider_link(node)
        network = dict(profile.get("network") or {})
        network["provider"] = {"interface": "prov0", "physnet": "physnet1"}
        profile["network"] = network
    node.write(PROFILE, json.dumps(profile), mode=0o644)


def firstboot_done(node):
    return node.path("/var/lib/rackforge/firstboot.done").exists()


def wait_firstboot(node, timeout=FIRSTBOOT_TIMEOUT):
    def done():
        if node.proc is not None and node.proc.poll() is not None:
            raise AssertionError("%s stopped:\n%s" % (node.name, node.console_text()[-3000:]))
        log = node.journal("rackforge-firstboot.service")
        if "not joined:" in log:
            raise AssertionError("%s did not join:\n%s" % (node.name, log[-3000:]))
        return firstboot_done(node)
    wait_until(done, timeout, "%s's first boot" % node.name, interval=1)


def status(node):
    """``rackforge cluster status --json`` on ``node``: (exit code, data)."""
    res = node.run("rackforge", "cluster", "status", "--json", check=False, timeout=120)
    try:
        return res.returncode, json.loads(res.stdout)
    except ValueError:
        return res.returncode, {"problems": ["no JSON: %s" % res.stderr[-300:]]}


def wait_converged(node, timeout=CONVERGE_TIMEOUT, want_nodes=None):
    """Until ``cluster status`` on ``node`` has no problem; returns the seconds it took."""
    start = time.monotonic()
    last = {}

    def converged():
        rc, data = status(node)
        last["data"] = data
        nodes = sum((data.get("nodes") or {}).get("by_state", {}).values())
        return rc == 0 and (want_nodes is None or nodes == want_nodes)
    try:
        wait_until(converged, timeout, "the rack to converge", interval=3)
    except AssertionError:
        print(json.dumps(last.get("data"), indent=1)[-6000:])
        raise
    return time.monotonic() - start


def room_for(count, where):
    """Refuse, in one line, to form a rack the host's disk cannot hold: the nodes'
    monitors warn (MON_DISK_LOW, the rack never healthy) below MON_DATA_AVAIL_WARN %% free
    of the file system their stores share with the host, and each node writes up to
    NODE_GROWTH_GIB on it."""
    st = os.statvfs(where)
    gib = 1 << 30
    free, size = st.f_bavail * st.f_frsize / gib, st.f_blocks * st.f_frsize / gib
    need = size * MON_DATA_AVAIL_WARN / 100 + count * NODE_GROWTH_GIB
    if free < need:
        pytest.fail("%.0f GiB free on the file system of %s, a rack of %d node(s) needs "
                    "%.0f (its monitors warn below %d %% of %.0f GiB): free space (old test "
                    "temporary directories) and run again"
                    % (free, where, count, need, MON_DATA_AVAIL_WARN, size), pytrace=False)


def form(node_factory, count, controllers=3, vip=VIP, disks="file", provider=(),
         openstack=None):
    """Seed node1 and join the others; returns the nodes (booted, first boot done).
    ``disks``: each node's data disk, a file (``storage.file_disks``) or a loop device of
    the host (``storage.test_devices``).  ``provider``: the numbers of the nodes with a
    link on the provider network (attached to its bridge once they boot)."""
    seed = node_factory("node1")
    room_for(count, seed.dir)
    profile = None
    if controllers == 1:
        profile = {"name": "aio", "cluster": {"controllers": 1, "converged": True},
                   "storage": {"wipe": "never", "min_disk_gib": 20}}
    prepare(seed, 1, "seed: true\ncluster: rack1\n" + ("vip: %s\n" % vip if vip else ""),
            profile, disks, provider=1 in provider, openstack=openstack)
    seed.boot()
    if 1 in provider:
        attach_provider(node_factory.netns, [seed])
    wait_firstboot(seed)
    nodes = [seed]
    if count > 1:
        bundle = json.loads(seed.run("rackforge", "cluster", "token", "create", "--uses",
                                     str(count - 1), "--json").stdout)
        join = ("join: {endpoints: %s, token: '%s', ca_sha256: '%s'}\n"
                % (json.dumps(bundle["endpoints"]), bundle["token"], bundle["ca_sha256"]))
        for i in range(2, count + 1):
            n = node_factory("node%d" % i)
            prepare(n, i, join, profile, disks, provider=i in provider, openstack=openstack)
            nodes.append(n)
        for n in nodes[1:]:
            n.boot()
        if provider:
            attach_provider(node_factory.netns, [n for i, n in enumerate(nodes, 1)
                                                 if i > 1 and i in provider])
        for n in nodes[1:]:
            wait_firstboot(n)
    return nodes


def roles(nodes):
    """{name: first role} of ``nodes`` ({name: node}), asked of a node that is powered on
    (node1 may not be)."""
    asked = next(n for n in nodes.values() if n.leader() is not None)
    listing = json.loads(asked.run("rackforge", "node", "list", "--json").stdout)
    return {n["name"]: n["role"].split(",")[0] for n in listing}


def controllers(nodes):
    return [nodes[name] for name, role in sorted(roles(nodes).items()) if role == "controller"]


def compute(nodes):
    return next(nodes[name] for name, role in sorted(roles(nodes).items())
                if role == "compute")


def sql(node, query, host=None, user=None, password=None):
    """Rows of ``query`` run on ``node`` (root over its socket, or USER@HOST)."""
    argv = ["mariadb", "-N", "-B", "-e", query]
    env = []
    if host:
        argv[1:1] = ["-h", host, "-u", user, "--connect-timeout=5"]
        env = ["MYSQL_PWD=%s" % password]      # the test user's, not a rackforge secret
    res = node.run("env", *env, *argv, check=False, timeout=60)
    if res.returncode != 0:
        raise RuntimeError("%s: %s" % (node.name, res.stderr.strip()[-300:]))
    return [line.split("\t") for line in res.stdout.splitlines()]


def wsrep(node, variable):
    rows = sql(node, "SHOW GLOBAL STATUS LIKE '%s'" % variable)
    return rows[0][1] if rows else None


def galera_synced(node, size):
    """Whether ``node``'s MariaDB runs, Synced, in a cluster of ``size``; False while it is
    down, starting or still refusing connections (it is active before it serves)."""
    if node.leader() is None or node.run("systemctl", "is-active", "mariadb.service",
                                         check=False).stdout.strip() != "active":
        return False
    try:
        return wsrep(node, "wsrep_local_state") == "4" \
            and wsrep(node, "wsrep_cluster_size") == str(size)
    except RuntimeError:
        return False


def vip_holders(nodes, vip=VIP):
    held = []
    for n in nodes:
        if n.leader() is None:
            continue
        out = n.run("ip", "-o", "-4", "addr", "show", check=False).stdout
        if " %s/" % vip in out:
            held.append(n.name)
    return held


def leaks(nodes, secrets, etcd_node):
    """Where any of ``secrets`` ({name: value}) shows in clear: etcd's raw keys and values
    (read on ``etcd_node``), each node's journal of this boot, or any process's argv.
    Returns ``[(where, name)]``, empty when none does."""
    dump = etcd_node.run("python3", "-c", "import sys; sys.path.insert(0, '/usr/lib/rackforge')\n"
                         "from rackforge import registry\n"
                         "for e in registry.connect().kv.get_prefix('/'):\n"
                         "    sys.stdout.buffer.write(e.key.encode() + b'=' + e.value + b'\\n')")
    if "/rackforge/secrets/" not in dump.stdout:
        raise AssertionError("the etcd dump holds no /rackforge/secrets/: nothing was read")
    found = [("etcd", name) for name, value in secrets.items() if value in dump.stdout]
    for n in nodes:
        journal = n.run("journalctl", "-b", "--no-pager", "-o", "cat", check=False).stdout
        argv = n.run("sh", "-c", "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '",
                     check=False).stdout
        found += [("%s %s" % (n.name, where), name) for name, value in secrets.items()
                  for where, text in (("journal", journal), ("argv", argv)) if value in text]
    return found
