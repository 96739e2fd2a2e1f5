"""``rackforge cluster status``: the cluster at a glance, and one line per problem.

What it reads: etcd's members (each one's reachability, leader, back-end size
against the quota rackforge gives it), etcd's alarms, the nodes by state and
role from the registry, and each node's services as its agent published them
(under its lease: a dead node's services vanish, and say so): every service
not ok, the VIP and which controller holds it, Galera's and RabbitMQ's
quorum, and Ceph's health as the controllers' ``ceph`` check last read it.

Every problem is one line saying what is wrong and what to do; the exit code
is 0 when there is none, 1 otherwise (scripts and the console can rely on it).
"""

import json
from dataclasses import dataclass, field

from rackforge import keys
from rackforge.kvstore import RegistryRejected, RegistryUnavailable

QUOTA_WARN = 0.8            # of the back-end quota: warn before etcd turns read-only


@dataclass
class Status:
    members: list = field(default_factory=list)
    alarms: list = field(default_factory=list)
    services: dict = field(default_factory=dict)   # node name -> {service: record}
    vip: dict = field(default_factory=dict)        # {address, holders}
    galera: dict = field(default_factory=dict)
    rabbitmq: dict = field(default_factory=dict)
    ceph: dict = field(default_factory=dict)       # as the freshest controller saw it
    openstack: dict = field(default_factory=dict)  # likewise: APIs, services, agents
    nodes: dict = field(default_factory=dict)      # state -> count
    roles: dict = field(default_factory=dict)      # role -> count
    problems: list = field(default_factory=list)

    def to_dict(self):
        return {"etcd": {"members": self.members, "alarms": self.alarms},
                "nodes": {"by_state": self.nodes, "by_role": self.roles},
                "services": self.services, "vip": self.vip, "galera": self.galera,
                "rabbitmq": self.rabbitmq, "ceph": self.ceph, "openstack": self.openstack,
                "problems": self.problems}


def collect(registry, quota):
    """The :class:`Status` of the cluster behind ``registry`` (its etcd quota: ``quota``)."""
    kv = registry.kv
    status = Status()
    try:
        members = kv.members()
    except (RegistryUnavailable, RegistryRejected, AttributeError) as exc:
        status.problems.append("etcd's member list cannot be read (%s); check etcd on the "
                               "controllers ('systemctl status rackforge-etcd')" % exc)
        members = []
    leaders = set()
    for m in members:
        urls = m.get("clientURLs") or []
        view = {"name": m.get("name") or "(not started)", "id": str(m.get("ID")),
                "endpoint": urls[0] if urls else None, "learner": bool(m.get("isLearner"))}
        if view["endpoint"]:
            try:
                st = kv.member_status(view["endpoint"])
            except RegistryUnavailable as exc:
                view["reachable"] = False
                status.problems.append("etcd member %s does not answer (%s); the cluster "
                                       "keeps its quorum while a majority answers"
                                       % (view["name"], exc.kwargs.get("detail", exc)))
            else:
                size = int(st.get("dbSize", 0))
                view.update(reachable=True, db_bytes=size,
                            db_in_use=int(st.get("dbSizeInUse", size)),
                            leader=str(st.get("leader")) == view["id"])
                leaders.add(str(st.get("leader")))
                if size >= QUOTA_WARN * quota:
                    status.problems.append(
                        "etcd member %s holds %d MiB of its %d MiB quota; find what writes "
                        "so much ('rackforge pxe status' for boot records), then compact "
                        "and defragment" % (view["name"], size >> 20, quota >> 20))
        status.members.append(view)
    voting = [m for m in status.members if not m["learner"]]
    up = [m for m in voting if m.get("reachable")]
    if members and len(up) * 2 <= len(voting):
        status.problems.append("etcd has lost its quorum: %d of %d voting members answer; "
                               "power the controllers on" % (len(up), len(voting)))
    if len(leaders) > 1:
        status.problems.append("etcd members disagree on the leader (%s); a network "
                               "partition: check the management network" % ", ".join(leaders))
    try:
        status.alarms = kv.alarms()
    except (RegistryUnavailable, RegistryRejected, AttributeError):
        status.alarms = []
    for alarm in status.alarms:
        status.problems.append("etcd alarm %s on member %s: the registry is read-only until "
                               "it is compacted, defragmented and the alarm disarmed"
                               % (alarm.get("alarm"), alarm.get("memberID")))
    try:
        nodes = registry.list_nodes()
    except RegistryUnavailable as exc:
        status.problems.append("the node registry cannot be read (%s)" % exc)
        nodes = []
    for n in nodes:
        status.nodes[n.state] = status.nodes.get(n.state, 0) + 1
        role = (n.role or "-").split(",")[0]
        status.roles[role] = status.roles.get(role, 0) + 1
        if n.state == "failed":
            status.problems.append("node %s failed: %s; 'rackforge node show %s'"
                                   % (n.name, (n.boot or {}).get("error", "no reason recorded"),
                                      n.name))
    entry = kv.get(keys.CLUSTER) if nodes else None
    cluster = json.loads(entry.value) if entry is not None else {}
    if nodes and entry is not None and not cluster.get("join_endpoints"):
        status.problems.append("no controller serves joins; new nodes cannot join")
    _services(status, kv, nodes, cluster)
    return status


def _services(status, kv, nodes, cluster):
    """Each node's services, the VIP, Galera's and RabbitMQ's quorum, from the health the
    agents published."""
    from rackforge.nodeagent import health

    published = health.read_all(kv)
    controllers = [n for n in nodes if (n.role or "").startswith("controller")]

    def record(node, service):
        return (published.get(node.id) or {}).get(service)

    def detail(node, service, key):
        return ((record(node, service) or {}).get("detail") or {}).get(key)

    for n in nodes:
        if n.state != "active":
            continue
        found = published.get(n.id)
        if found is None:
            status.problems.append("node %s publishes no service states: its node agent is "
                                   "not running ('systemctl status rackforge-nodeagent' on it)"
                                   % n.name)
            continue
        status.services[n.name] = found
        for name, rec in sorted(found.items()):
            if rec.get("state") != health.OK:
                status.problems.append("node %s: service %s is %s%s" % (
                    n.name, name, rec.get("state"),
                    ": " + rec["error"] if rec.get("error") else ""))
    if cluster.get("vip") and any(record(n, "keepalived") for n in controllers):
        holders = [n.name for n in controllers if detail(n, "keepalived", "vip")]
        status.vip = {"address": cluster["vip"], "holders": holders}
        if len(holders) != 1:
            status.problems.append("the VIP %s is held by %s; it must be held by exactly one "
                                   "controller: check keepalived on the controllers"
                                   % (cluster["vip"], ", ".join(holders) or "no controller"))
    if any(record(n, "mariadb") for n in controllers):
        sizes = {n.name: detail(n, "mariadb", "size") or 0 for n in controllers}
        status.galera = {"sizes": sizes}
        if max(sizes.values()) * 2 <= len(controllers):
            status.problems.append("Galera has no quorum: its largest component holds %d of "
                                   "%d controllers" % (max(sizes.values()), len(controllers)))
    if any(record(n, "rabbitmq") for n in controllers):
        status.rabbitmq = {"running": {n.name: detail(n, "rabbitmq", "running")
                                       for n in controllers}}
    seen = [(record(n, "ceph") or {}) for n in controllers]
    seen = [rec for rec in seen if rec.get("detail")]
    if seen:        # every controller's 'ceph status' says the same; take the newest
        status.ceph = dict(max(seen, key=lambda rec: rec.get("since", 0))["detail"])
    seen = [rec for rec in ((record(n, "openstack") or {}) for n in controllers)
            if rec.get("detail")]
    if seen:
        status.openstack = dict(max(seen, key=lambda rec: rec.get("since", 0))["detail"])


def openstack_lines(cloud):
    """``openstack ...`` lines: the APIs through the VIP, then each kind of service up of
    those OpenStack lists, with the ones that are not."""
    apis = cloud.get("apis") or {}
    bad = sorted(n for n, s in apis.items() if not (isinstance(s, int) and s < 500))
    lines = ["openstack APIs through the VIP: %d of %d answer%s" % (
        len(apis) - len(bad), len(apis), " (not: %s)" % ", ".join(bad) if bad else "")]
    for kind, label in (("compute", "compute services"), ("agents", "network agents"),
                        ("volume", "volume services")):
        group = cloud.get(kind) or {}
        down = sorted(k.replace("@", " on ") for k, v in group.items() if v != "up")
        lines.append("  %s up: %d of %d%s" % (label, len(group) - len(down), len(group),
                                              " (down: %s)" % ", ".join(down) if down else ""))
    return lines


def render(status):
    """The text form: members, nodes, then the problems."""
    lines = ["etcd members:"]
    for m in status.members:
        if not m.get("reachable"):
            state = "DOWN" if m.get("endpoint") else "not started"
        else:
            state = "leader" if m["leader"] else ("learner" if m["learner"] else "follower")
            state += ", %d MiB" % (m["db_bytes"] >> 20)
        lines.append("  %-16s %-28s %s" % (m["name"], m["endpoint"] or "-", state))
    if status.vip:
        holders = ", ".join(status.vip["holders"]) or "nobody"
        lines.append("vip %s held by %s" % (status.vip["address"], holders))
    if status.ceph:
        ceph, osds = status.ceph, status.ceph.get("osds") or {}
        lines.append("ceph %s: %d monitors in quorum (%s), OSDs %d up, %d in, of %d" % (
            ceph.get("health"), len(ceph.get("quorum") or []), ", ".join(
                ceph.get("quorum") or []), osds.get("up", 0), osds.get("in", 0),
            osds.get("total", 0)))
        if ceph.get("note"):
            lines.append("  note: %s" % ceph["note"])
    if status.openstack:
        lines += openstack_lines(status.openstack)
    for name, services in sorted(status.services.items()):
        ok = sum(1 for rec in services.values() if rec.get("state") == "ok")
        lines.append("node %-14s %d/%d services ok" % (name, ok, len(services)))
    lines.append("nodes: %s" % (", ".join("%d %s" % (c, s) for s, c in sorted(
        status.nodes.items())) or "none"))
    lines.append("roles: %s" % (", ".join("%d %s" % (c, r) for r, c in sorted(
        status.roles.items())) or "none"))
    lines += ["problem: %s" % p for p in status.problems] or ["no problems"]
    return lines
