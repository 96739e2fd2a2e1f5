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

from rackforge import paths
from rackforge.fileutil import atomic_write
from rackforge.firstboot import journal

CLUSTER_KEY = "/rackforge/cluster"


def _default_inventory():
    from rackforge.firstboot import inventory
    return inventory.collect().to_dict()


def _default_network(spec):
    from rackforge.firstboot import network
    network.apply(spec)


def _default_registry(endpoints, tls=None):
    from rackforge import registry
    return registry.connect(endpoints[0] if endpoints else None)


def _default_join(**kw):
    from rackforge.firstboot import join
    return join.join(**kw)


def _no_etcd(ctx):
    from rackforge.firstboot.join import JoinError
    raise JoinError(endpoint="etcd", detail="starting etcd on the seed is not wired yet; "
                    "start etcd-server by hand and set RACKFORGE_ETCD")


@dataclass
class Env:
    """What the steps use from the outside world (all injectable)."""
    collect_inventory: Callable = _default_inventory
    apply_network: Callable = _default_network
    start_etcd: Callable = _no_etcd                # ctx -> [client URLs]
    connect_registry: Callable = _default_registry  # (endpoints, tls) -> NodeRegistry
    join_client: Callable = _default_join
    storage_run: Optional[Callable] = None         # probe runner for storage.select
    enable_nodeagent: Callable = lambda ctx: None
    profile: object = None
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
        from rackforge.firstboot import ca, join
        authority = ca.CertificateAuthority.init(cluster=boot.cluster)
        endpoints = env.start_etcd(ctx)
        reg = env.connect_registry(endpoints, None)
        address = (intent["addresses"] or ["127.0.0.1"])[0]
        join_endpoint = "https://%s:%d" % (address, env.join_port)
        _put_cluster(reg.kv, {"name": boot.cluster, "join_endpoint": join_endpoint,
                              "ca_sha256": authority.pin, "etcd_endpoints": endpoints})
        service = join.JoinService(reg, authority, endpoints, _role_policy(env))
        node = service.admit(intent["name"], intent["addresses"],
                             ctx.results.get("inventory") or {})
        issued = authority.issue(intent["name"], intent["addresses"])
        return {"node_id": node.id, "name": intent["name"], "etcd_endpoints": endpoints,
                "join_endpoint": join_endpoint, "ca_sha256": authority.pin,
                "certificate": _pki_write("node.crt", issued.cert_pem, 0o644),
                "key": _pki_write("node.key", issued.key_pem),
                "ca": _pki_write("ca.crt", authority.cert_pem, 0o644)}

    def join_step(ctx, intent):
        j = boot.join
        answer = env.join_client(endpoint=j.endpoint, token=j.token, pin=j.ca_sha256,
                                 name=intent["name"], addresses=intent["addresses"],
                                 inventory=ctx.results.get("inventory") or {}, role=boot.role)
        out = {k: answer[k] for k in ("node_id", "name", "role", "roles", "etcd_endpoints")}
        out["certificate"] = _pki_write("node.crt", answer["certificate"].encode(), 0o644)
        if answer.get("key"):
            out["key"] = _pki_write("node.key", answer["key"].encode())
        out["ca"] = _pki_write("ca.crt", answer["ca"].encode(), 0o644)
        return out      # never the token

    def role(ctx, intent):
        m = ctx.results["seed" if boot.seed else "join"]
        if not boot.seed:
            return {"role": m["role"], "roles": m["roles"]}
        from rackforge.firstboot import roles
        reg = env.connect_registry(m["etcd_endpoints"], None)
        decision = roles.RoleElection(reg.kv, _role_policy(env)).decide(m["node_id"],
                                                                        pin=boot.role)
        roles.record_role(reg, m["node_id"], decision)
        return {"role": decision.role, "roles": decision.roles}

    def storage_step(ctx, intent):
        from rackforge.firstboot import inventory as inv_mod
        from rackforge.firstboot import storage
        m = ctx.results["seed" if boot.seed else "join"]
        inv = inv_mod.Inventory.from_dict(ctx.results["inventory"])
        policy = storage.StoragePolicy.from_profile(env.profile)
        kw = {"run": env.storage_run} if env.storage_run else {}
        selection = storage.select(inv, policy, **kw)
        reg = env.connect_registry(m["etcd_endpoints"], None)
        storage.record(reg, m["node_id"], selection)
        data = selection.to_dict()
        if data.get("disks"):
            def add(n):
                parts = [p for p in (n.role or ctx.results["role"]["role"]).split(",") if p]
                n.role = ",".join(parts + ([] if "storage" in parts else ["storage"]))
            reg.update_node(m["node_id"], add)
        return data

    def handover(ctx, intent):
        m = ctx.results["seed" if boot.seed else "join"]
        reg = env.connect_registry(m["etcd_endpoints"], None)
        disks = (ctx.results.get("storage") or {}).get("disks") or []
        desired = {"role": ctx.results["role"]["role"], "storage": bool(disks),
                   "etcd_endpoints": m["etcd_endpoints"]}

        def change(n):
            n.boot = dict(n.boot, desired=desired, firstboot="done")
            n.state = "active"
        reg.update_node(m["node_id"], change)
        node = {"node_id": m["node_id"], "name": m["name"], **desired,
                "certificate": m.get("certificate"), "key": m.get("key"), "ca": m.get("ca")}
        atomic_write(paths.state_dir() / "node.json", json.dumps(node, indent=2) + "\n",
                     mode=0o600)
        env.enable_nodeagent(ctx)
        return desired

    middle = (journal.Step("seed", seed, once=True, prepare=identity) if boot.seed else
              journal.Step("join", join_step, once=True, prepare=identity))
    return [journal.Step("inventory", inventory), journal.Step("network", net), middle,
            journal.Step("role", role), journal.Step("storage", storage_step),
            journal.Step("handover", handover)]


def _role_policy(env):
    from rackforge.firstboot import roles
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
