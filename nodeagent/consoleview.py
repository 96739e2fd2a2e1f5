"""The console's status page as lines of text, from the local API's status document
(:mod:`.nodestatus`): what an operator at the node's screen reads first.

Pure: a document in, lines out (at most 78 columns each, printable ASCII: the Linux
console's font), so every case is tested without a terminal.  The order is the
operator's: who this node is, how to reach it, whether the cluster is whole, what is
wrong here, what is wrong elsewhere.
"""

from rackforge import errors

WIDTH = 78
MAX_PROBLEMS = 8


def duration(seconds):
    if seconds is None:
        return "?"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return "%d d %d h" % (days, hours)
    if hours:
        return "%d h %02d min" % (hours, minutes)
    return "%d min" % minutes


def fit(line):
    line = errors.printable(line)
    return line if len(line) <= WIDTH else line[:WIDTH - 3] + "..."


def _quorum(cluster):
    """One line: etcd, Galera, RabbitMQ and Ceph as the cluster status saw them."""
    parts = []
    members = (cluster.get("etcd") or {}).get("members") or []
    if members:
        up = sum(1 for m in members if m.get("reachable"))
        parts.append("etcd %d/%d" % (up, len(members)))
    sizes = (cluster.get("galera") or {}).get("sizes") or {}
    if sizes:
        parts.append("Galera %d/%d" % (max(sizes.values()), len(sizes)))
    running = (cluster.get("rabbitmq") or {}).get("running") or {}
    if running:
        parts.append("RabbitMQ %d/%d" % (max((n or 0) for n in running.values()),
                                         len(running)))
    ceph = cluster.get("ceph") or {}
    if ceph:
        parts.append("Ceph %s, %d mons" % (ceph.get("health", "?"),
                                           len(ceph.get("quorum") or [])))
    return ", ".join(parts) or "no quorum reported yet"


def lines(doc):
    node = doc.get("node") or {}
    cluster = doc.get("cluster") or {}
    out = ["%s  (%s)  rackforge %s, profile %s, up %s" % (
        node.get("name") or "this node", node.get("state") or "?", node.get("version"),
        node.get("profile"), duration(node.get("uptime_s")))]
    roles = node.get("roles") or []
    out.append("roles: %s" % (", ".join(roles) or "none yet"))
    out += ["  " + r for r in node.get("reasons") or []]
    out.append("management %s   BMC %s" % (
        node.get("address") or "none", node.get("bmc") or "unknown"))
    if cluster.get("error"):
        out.append("cluster: %s" % cluster["error"])
        return [fit(x) for x in out]
    vip = cluster.get("vip") or {}
    if vip:
        out.append("VIP %s held by %s" % (vip.get("address"),
                                          ", ".join(vip.get("holders") or []) or "nobody"))
    out.append("cluster: %s" % _quorum(cluster))
    unhealthy = doc.get("unhealthy") or {}
    if unhealthy:
        out.append("not ok on this node:")
        for name, rec in sorted(unhealthy.items()):
            out.append("  %s %s%s" % (name, rec.get("state"),
                                      ": " + rec["error"] if rec.get("error") else ""))
    else:
        out.append("every service of this node is ok")
    problems = cluster.get("problems") or []
    if problems:
        out.append("problems in the cluster (%d):" % len(problems))
        out += ["  " + p for p in problems[:MAX_PROBLEMS]]
        if len(problems) > MAX_PROBLEMS:
            out.append("  ... and %d more: rackforge cluster status"
                       % (len(problems) - MAX_PROBLEMS))
    else:
        out.append("no problems in the cluster")
    return [fit(x) for x in out]
