"""``rackforge firstboot run``: the bootstrap file turned into journal steps.

Steps (:mod:`.journal`, resumable; ``NN-name.json`` under
``state_dir()/firstboot/steps/``)::

    inventory -> network -> seed | join -> role -> storage -> handover

- **inventory**: :func:`inventory.collect`, stored whole;
- **network**: :func:`network.apply` of the bootstrap's ``management``
  (skipped when there is none);
- **seed** (``once``): creates the cluster CA (idempotent), starts etcd
  through the injected ``start_etcd`` runner, writes the cluster record
  (``/rackforge/cluster``: name, join endpoint) and admits this node like a
  join would (registry record + node certificate), without a token;
- **join** (``once``, intent = this node's name and addresses, so a
  resumed join presents the same identity and the seed answers the same
  node and role): :func:`join.join` with the pinned CA; the node
  certificate and key go to ``state_dir()/pki/`` (0600);
- **role**: the seed decides its own by the etcd transaction; a joined node
  takes the one in the seed's answer;
- **storage**: :func:`storage.select` and :func:`storage.record`; when data
  disks are chosen the node record's role gains ``storage``;
- **handover**: the node's desired state (``boot.desired``: role, etcd
  endpoints) and ``state: active`` in the registry, ``state_dir()/node.json``
  for the node agent, then the injected ``enable_nodeagent`` runner;
  :func:`journal.run` writes ``firstboot.done`` after it.

Everything that touches the machine or the network is an attribute of the
:class:`Env` so the unit tests run the wiring on the in-memory registry.
"""

import json
import re
import socket
from dataclasses import dataclass, field
from typing import Callable, Optional

from rackforge import keys, paths, states
from rackforge.fileutil import atomic_write
from rackforge.firstboot import journal

CLUSTER_KEY = keys.CLUSTER


def _default_inventory():
    from rackforge.firstboot import inventory
    return inventory.collect().to_dict()


def _default_network(spec):
    from rackforge.firstboot import network
    network.apply(spec)


def _default_registry(endpoints, tls=None):
    from rackforge import registry
    return registry.connect(list(endpoints) or None, **(tls or {}))


def _default_join(**kw):
    from rackforge.cluster import join
    return join.join(**kw)


def _default_profile():
    from rackforge import nodeprofile
    return nodeprofile.load()


def _start_seed_etcd(name, address, cluster, tls_pems, tls):
    from rackforge.cluster import etcd
    return etcd.start_seed(name, address, cluster, tls_pems, etcd.Starter(),
                           lambda eps: _default_registry(eps, tls))


def _join_etcd(name, address, cluster, tls_pems, endpoints, reg):
    from rackforge.cluster import etcd
    return etcd.join_member(name, address, cluster, tls_pems, endpoints, reg.kv,
                            etcd.Starter())


def _write_client(endpoints, tls):
    from rackforge import kvstore
    kvstore.write_client(endpoints, tls)


def _systemctl(*args):
    from rackforge import systemd
    systemd.systemctl(*args)


def _start_join_server(ctx):
    _systemctl("enable", "--now", "rackforge-join.service")


def _enable_nodeagent(ctx):
    # --no-block: the node agent is ordered after this unit; waiting for its
    # start job from inside this one would wait forever
    _systemctl("enable", "rackforge-nodeagent.service")
    _systemctl("start", "--no-block", "rackforge-nodeagent.service")


@dataclass
class Env:
    """What the steps use from the outside world (all injectable)."""
    collect_inventory: Callable = _default_inventory
    apply_network: Callable = _default_network
    # (name, address, cluster, (ca, cert, key) PEMs, tls paths) -> [client URLs]
    start_etcd: Callable = _start_seed_etcd
    # (name, address, cluster, PEMs, endpoints, registry) -> [client URLs]
    join_etcd: Callable = _join_etcd
    write_client: Callable = _write_client          # (endpoints, tls paths)
    connect_registry: Callable = _default_registry  # (endpoints, tls) -> NodeRegistry
    join_client: Callable = _default_join
    start_join_server: Callable = _start_join_server
    storage_run: Optional[Callable] = None         # probe runner for storage.select
    enable_nodeagent: Callable = _enable_nodeagent
    profile: object = field(default_factory=_default_profile)
    hostname: str = field(default_factory=socket.gethostname)
    join_port: int = 9443


def node_name(hostname, inventory=None):
    """A registry-safe name from the hostname (else from the first MAC)."""
    name = re.sub(r"[^a-z0-9-]+", "-", (hostname or "").split(".")[0].lower()).strip("-")[:63]
    if name and name not in ("localhost", "debian"):
        return name
    for nic in (inventory or {}).get("interfaces") or []:
        if nic.get("mac"):
            return "node-" + nic["mac"].replace(":", "")
    return name or "node"


def _addresses(boot):
    spec = boot.management
    if spec is None or spec.dhcp:
        return []
    return [spec.address.split("/")[0]]


def _pki_write(name, data, mode=0o600):
    d = paths.state_dir() / "pki"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(d / name, data, mode=mode)
    return str(d / name)


def build_steps(boot, env):
    """The journal steps for the :class:`bootstrap.Bootstrap` ``boot``."""

    def inventory(ctx, intent):
        return env.collect_inventory()

    def net(ctx, intent):
        if boot.management is None:
            return {"skipped": True, "why": "no management network in the bootstrap file"}
        env.apply_network(boot.management)
        return {"skipped": False, "interface": boot.management.interface,
                "address": boot.management.address}

    def identity(ctx):
        return {"name": node_name(env.hostname, ctx.results.get("inventory")),
                "addresses": _addresses(boot)}

    def seed(ctx, intent):
        from rackforge.cluster import ca, join
        authority = ca.CertificateAuthority.init(cluster=boot.cluster)
        name = intent["name"]
        address = (intent["addresses"] or ["127.0.0.1"])[0]
        issued = authority.issue(name, sorted({address, "127.0.0.1"}))
        pki = _write_pki(authority.cert_pem, issued.cert_pem, issued.key_pem)
        pems = (authority.cert_pem, issued.cert_pem, issued.key_pem)
        endpoints = env.start_etcd(name, address, boot.cluster, pems, pki)
        env.write_client(endpoints, pki)
        reg = env.connect_registry(endpoints, pki)
        join_endpoint = "https://%s:%d" % (address, env.join_port)
        _put_cluster(reg.kv, {"name": boot.cluster, "join_endpoint": join_endpoint,
                              "ca_sha256": authority.pin})
        service = join.JoinService(reg, authority, endpoints, _role_policy(env))
        node = service.admit(name, intent["addresses"], ctx.results.get("inventory") or {})
        env.start_join_server(ctx)
        return {"node_id": node.id, "name": name, "addresses": intent["addresses"],
                "etcd_endpoints": endpoints, "join_endpoint": join_endpoint,
                "ca_sha256": authority.pin, **pki}

    def join_step(ctx, intent):
        j = boot.join
        answer = env.join_client(endpoint=j.endpoint, token=j.token, pin=j.ca_sha256,
                                 name=intent["name"], addresses=intent["addresses"],
                                 inventory=ctx.results.get("inventory") or {}, role=boot.role)
        pki = _write_pki(answer["ca"].encode(), answer["certificate"].encode(),
                         answer["key"].encode() if answer.get("key") else None)
        env.write_client(answer["etcd_endpoints"], pki)
        out = {k: answer[k] for k in ("node_id", "name", "role", "roles", "etcd_endpoints")}
        return dict(out, addresses=intent["addresses"], **pki)      # never the token

    def registry(ctx):
        m = ctx.results["seed" if boot.seed else "join"]
        endpoints = (ctx.results.get("etcd") or {}).get("endpoints") or m["etcd_endpoints"]
        return env.connect_registry(endpoints, _tls(m))

    def role(ctx, intent):
        m = ctx.results["seed" if boot.seed else "join"]
        if not boot.seed:
            return {"role": m["role"], "roles": m["roles"]}
        from rackforge.cluster import roles
        reg = registry(ctx)
        decision = roles.RoleElection(reg.kv, _role_policy(env)).decide(m["node_id"],
                                                                        pin=boot.role)
        roles.record_role(reg, m["node_id"], decision)
        return {"role": decision.role, "roles": decision.roles}

    def etcd_step(ctx, intent):
        m = ctx.results["seed" if boot.seed else "join"]
        if boot.seed:
            return {"member": True, "endpoints": m["etcd_endpoints"]}
        if ctx.results["role"]["role"] != "controller":
            return {"member": False, "endpoints": m["etcd_endpoints"]}
        if not m["addresses"]:
            from rackforge.cluster.etcd import EtcdError
            raise EtcdError(detail="a controller needs a static management address; set "
                            "management.address in the bootstrap file")
        pems = tuple(_read(m[k]) for k in ("ca_cert", "cert", "key"))
        endpoints = env.join_etcd(m["name"], m["addresses"][0], _cluster_name(ctx, env, m),
                                  pems, m["etcd_endpoints"],
                                  env.connect_registry(m["etcd_endpoints"], _tls(m)))
        env.write_client(endpoints, _tls(m))
        return {"member": True, "endpoints": endpoints}

    def storage_step(ctx, intent):
        from rackforge.firstboot import inventory as inv_mod
        from rackforge.firstboot import storage
        m = ctx.results["seed" if boot.seed else "join"]
        inv = inv_mod.Inventory.from_dict(ctx.results["inventory"])
        policy = storage.StoragePolicy.from_profile(env.profile)
        kw = {"run": env.storage_run} if env.storage_run else {}
        selection = storage.select(inv, policy, **kw)
        reg = registry(ctx)
        storage.record(reg, m["node_id"], selection)
        data = selection.to_dict()
        if data.get("disks"):
            def add(n):
                parts = [p for p in (n.role or ctx.results["role"]["role"]).split(",") if p]
                n.role = ",".join(parts + ([] if "storage" in parts else ["storage"]))
            reg.update_node(m["node_id"], add)
            from rackforge.cluster import roles
            roles.RoleElection(reg.kv, _role_policy(env)).mark_storage(m["node_id"])
        return data

    def handover(ctx, intent):
        m = ctx.results["seed" if boot.seed else "join"]
        reg = registry(ctx)
        disks = (ctx.results.get("storage") or {}).get("disks") or []
        desired = {"role": ctx.results["role"]["role"], "storage": bool(disks),
                   "etcd_endpoints": ctx.results["etcd"]["endpoints"],
                   "etcd_member": ctx.results["etcd"]["member"]}

        def change(n):
            n.boot = dict(n.boot, desired=desired, firstboot="done")
        if reg.get_node(m["node_id"]).state == "active":       # resumed after this write
            reg.update_node(m["node_id"], change)
        else:
            reg.transition(m["node_id"], "active", states.FIRSTBOOT, frm=("joining", "failed"),
                           change=change)
        node = {"node_id": m["node_id"], "name": m["name"], **desired, **_tls(m)}
        atomic_write(paths.state_dir() / "node.json", json.dumps(node, indent=2) + "\n",
                     mode=0o600)
        env.enable_nodeagent(ctx)
        return desired

    middle = (journal.Step("seed", seed, once=True, prepare=identity) if boot.seed else
              journal.Step("join", join_step, once=True, prepare=identity))
    # the management address does not survive a reboot: set it again on each boot
    # until first boot is complete (resumed joins need it)
    return [journal.Step("inventory", inventory),
            journal.Step("network", net, every_boot=True), middle,
            journal.Step("role", role), journal.Step("etcd", etcd_step),
            journal.Step("storage", storage_step), journal.Step("handover", handover)]


def _tls(m):
    return {k: m[k] for k in ("ca_cert", "cert", "key") if m.get(k)}


def _read(path):
    from pathlib import Path
    return Path(path).read_bytes()


def _write_pki(ca_pem, cert_pem, key_pem):
    """The cluster CA, this node's certificate and key in ``state_dir()/pki``."""
    out = {"ca_cert": _pki_write("ca.crt", ca_pem, 0o644),
           "cert": _pki_write("node.crt", cert_pem, 0o644)}
    if key_pem:
        out["key"] = _pki_write("node.key", key_pem)
    return out


def _cluster_name(ctx, env, m):
    """The cluster's name (etcd's initial-cluster-token) from the cluster record."""
    entry = env.connect_registry(m["etcd_endpoints"], _tls(m)).kv.get(CLUSTER_KEY)
    return json.loads(entry.value).get("name", "rackforge") if entry else "rackforge"


def _role_policy(env):
    from rackforge.cluster import roles
    return roles.RolePolicy.from_profile(env.profile) if env.profile else None


def _put_cluster(kv, data):
    from rackforge.kvstore import Compare
    for _ in range(10):
        entry = kv.get(CLUSTER_KEY)
        old = json.loads(entry.value) if entry else {}
        new = dict(old, **data)
        if new == old:
            return
        if kv.txn([Compare(CLUSTER_KEY, entry.mod_revision if entry else 0)],
                  [(CLUSTER_KEY, json.dumps(new, sort_keys=True).encode())], ()):
            return


def run(boot, env=None, ctx=None, say=None):
    """Run first boot for ``boot``; returns the journal context."""
    env = env or Env()
    return journal.run(build_steps(boot, env), ctx=ctx, say=say)
