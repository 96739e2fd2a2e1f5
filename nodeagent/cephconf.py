"""Ceph's numbers for this rack, as pure functions: replica sizes for the hosts that carry
OSDs, memory targets for the node's RAM, the monitors' addresses.

The templates (``templates/ceph/``) see :func:`context` as ``ceph``; the cluster
task that sizes the pools (:mod:`.ceph`) uses :func:`pool_size` and friends.

Sizing (the Ceph issue; MicroCeph and ceph-ansible do alike):

=================  ====  ========  ==============
hosts with OSDs    size  min_size  failure domain
=================  ====  ========  ==============
1                  1     1         osd
2                  2     1         host
3 or more          3     2         host
=================  ====  ========  ==============

``osd_memory_target`` is 20 % of the node's RAM over its OSD count, never below
Ceph's floor (``osd_memory_base`` + ``osd_memory_cache_min`` = 896 MiB); a
profile may set it (``ceph.osd_memory_target_mib``).  ``mon_memory_target`` is
5 % of RAM within 512 MiB-2 GiB (Ceph's default is 2 GiB, too much for an 8 GiB
node that also runs the control plane).
"""

import ipaddress

MIB = 1 << 20
OSD_MEMORY_FLOOR_MIB = 896
MON_MEMORY_MIB = (512, 2048)
MON_PORTS = (3300, 6789)            # msgr v2, v1
POOLS = ("images", "volumes", "vms", "backups")
MGR_POOL = ".mgr"


def pool_size(hosts):
    """Replicas for ``hosts`` hosts with OSDs: one per host, at most three."""
    return max(1, min(3, int(hosts)))


def min_size(size):
    """Copies a PG needs to take writes: a majority of three; one of one or two (two
    hosts: writes go on while one is down, on a single copy)."""
    return 2 if size >= 3 else 1


def failure_domain(hosts):
    """Where replicas must differ: the host, or the OSD while there is one host."""
    return "host" if hosts >= 2 else "osd"


def crush_rule(hosts):
    return "replicated_%s" % failure_domain(hosts)


def osd_memory_target_mib(memory_mib, osds, configured=None):
    if configured:
        return max(OSD_MEMORY_FLOOR_MIB, int(configured))
    return max(OSD_MEMORY_FLOOR_MIB, int(memory_mib * 0.2 / max(1, osds)))


def mon_memory_target_mib(memory_mib, configured=None):
    if configured:
        return int(configured)
    low, high = MON_MEMORY_MIB
    return max(low, min(high, int(memory_mib * 0.05)))


def mon_address(address):
    """A monitor's address vector, msgr v2 and v1: ``[v2:A:3300,v1:A:6789]``."""
    return "[v2:%s:%d,v1:%s:%d]" % (address, MON_PORTS[0], address, MON_PORTS[1])


def mon_host(view):
    """``mon_host`` of ceph.conf: every monitor made so far; a controller lists itself
    before any is (it makes the first)."""
    mons = [m["address"] for m in view.mons if m.get("address")]
    if not mons and view.is_controller:
        mons = [view.address]
    return ",".join(mon_address(a) for a in mons)


def public_network(address, prefix):
    return str(ipaddress.ip_interface("%s/%s" % (address, prefix)).network)


def context(view):
    """What ``templates/ceph/`` use, from the node's view and the profile's ``ceph``
    settings."""
    settings = view.settings.get("ceph") or {}
    memory = view.facts.get("memory_mib", 8192)
    osds = max(1, len(view.disks))
    return {
        "mon_host": mon_host(view),
        "public_network": public_network(view.address, view.facts.get("prefix", 24)),
        "osd_memory_target": osd_memory_target_mib(
            memory, osds, settings.get("osd_memory_target_mib")) * MIB,
        "mon_memory_target": mon_memory_target_mib(
            memory, settings.get("mon_memory_target_mib")) * MIB,
        "mon_data_avail_warn": settings.get("mon_data_avail_warn"),
        "mon": view.is_controller,
    }
