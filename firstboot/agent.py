"""``rackforge firstboot run``: the bootstrap file turned into journal steps.

The steps, in order (:data:`STEPS`; each a function below, resumable through
:mod:`.journal`, one record per step under ``state_dir()/firstboot/steps/``)::

    inventory    the hardware (inventory.collect), stored whole
    network      the bootstrap's management address; again on every boot until done
    seed | join  (once) create the cluster here, or join one with the token
    role         the seed elects its own; a joiner takes the service's answer
    etcd         a controller becomes a voting etcd member; others are clients
    joinservice  a controller serves joins too (the CA key, sealed for it)
    storage      data disks chosen and recorded; the role gains "storage"
    handover     joining -> active, node.json, the node agent started

The node's key is made here, on the node, before the seed or join step's
intent is recorded (``state_dir()/pki/node.key``, 0600), so a join resumed
after a power cut presents the same key and the join service recognises the
node by it.  No private key ever leaves the node.

Everything that touches the machine or the network is an attribute of the
:class:`Env`, so the unit tests run the wiring on the in-memory registry.
"""

import json
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from rackforge import errors, keys, paths, states
from rackforge.fileutil import atomic_write, make_dirs
from rackforge.firstboot import journal
from rackforge.kvstore import Compare


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
    from rackforge.cluster import joinclient
    return joinclient.join(**kw)


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
    _systemctl("enable", "rackforge-join.service")
    _systemctl("restart", "rackforge-join.service")


def _address_in_use(spec, address):
    from rackforge.firstboot import network
    return network.address_in_use(spec.interface, address)


def _persist_network(spec):
    from rackforge.firstboot import persist
    persist.write(spec)
    _systemctl("enable", "systemd-networkd.service")


def _start_console(say):
    """The console on tty1 while first boot runs (started, not enabled: hand-over
    enables it): it shows first boot's line, and a node whose join fails is given new
    join settings there.  Best effort: without it tty1 keeps its getty and banner."""
    try:
        _systemctl("start", "--no-block", "rackforge-console.service")
    except errors.RackforgeError as exc:
        say("the console on tty1 did not start (%s); tty1 keeps its login prompt" % exc)


def _enable_nodeagent(ctx):
    # --no-block: the node agent is ordered after this unit; waiting for its
    # start job from inside this one would wait forever
    # the console on tty1 reads the agent's local API; it takes tty1 from its getty
    _systemctl("enable", "rackforge-nodeagent.service", "rackforge-console.service")
    _systemctl("start", "--no-block", "rackforge-nodeagent.service",
               "rackforge-console.service")


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
    join_client: Callable = _default_join           # joinclient.join's keywords
    start_join_server: Callable = _start_join_server
    storage_run: Optional[Callable] = None         # probe runner for storage.select
    enable_nodeagent: Callable = _enable_nodeagent
    start_console: Callable = _start_console          # (say): tty1's console, now
    address_in_use: Callable = _address_in_use        # (spec, address) -> bool (ARP)
    persist_network: Callable = _persist_network      # (spec): networkd files, enabled
    profile: object = field(default_factory=_default_profile)
    hostname: str = field(default_factory=socket.gethostname)
    join_port: int = 9443


# -- helpers -------------------------------------------------------------------------------
def node_name(hostname, inventory=None):
    """A registry-safe name from the hostname (else from the first MAC)."""
    name = re.sub(r"[^a-z0-9-]+", "-", (hostname or "").split(".")[0].lower()).strip("-")[:63]
    if name and name not in ("localhost", "debian"):
        return name
    for nic in (inventory or {}).get("interfaces") or []:
        if nic.get("mac"):
            return "node-" + nic["mac"].replace(":", "")
    return name or "node"


def pki_dir():
    return paths.state_dir() / "pki"


def _pki_write(name, data, mode=0o600):
    d = pki_dir()
    make_dirs(d, 0o700)
    atomic_write(d / name, data, mode=mode)
    return str(d / name)


def node_key_pem():
    """This node's private key, made on first use (0600) and never sent anywhere."""
    from rackforge.cluster import ca
    path = pki_dir() / "node.key"
    if not path.is_file():
        _pki_write("node.key", ca.new_key_pem())
    return path.read_bytes()


def _write_pki(ca_pem, cert_pem):
    """The cluster CA and this node's certificate beside its key in ``state_dir()/pki``."""
    node_key_pem()
    return {"ca_cert": _pki_write("ca.crt", ca_pem, 0o644),
            "cert": _pki_write("node.crt", cert_pem, 0o644),
            "key": str(pki_dir() / "node.key")}


def _tls(m):
    return {k: m[k] for k in ("ca_cert", "cert", "key") if m.get(k)}


def _member(ctx):
    return ctx.results.get("seed") or ctx.results["join"]


def _registry(ctx, env):
    m = _member(ctx)
    endpoints = (ctx.results.get("etcd") or {}).get("endpoints") or m["etcd_endpoints"]
    return env.connect_registry(endpoints, _tls(m))


def _role_policy(env):
    from rackforge.cluster import roles
    return roles.RolePolicy.from_profile(env.profile) if env.profile else None


def _update_cluster(kv, change):
    """Apply ``change(record)`` to the cluster record by compare-and-set."""
    for _ in range(32):
        entry = kv.get(keys.CLUSTER)
        old = json.loads(entry.value) if entry else {}
        new = change(json.loads(json.dumps(old)))
        if new == old:
            return new
        if kv.txn([Compare(keys.CLUSTER, entry.mod_revision if entry else 0)],
                  [(keys.CLUSTER, json.dumps(new, sort_keys=True).encode())], ()):
            return new
    from rackforge.kvstore import RegistryUnavailable
    raise RegistryUnavailable(endpoint="etcd", detail="the cluster record kept changing")


def _cluster_name(kv):
    entry = kv.get(keys.CLUSTER)
    return json.loads(entry.value).get("name", "rackforge") if entry else "rackforge"


# -- the steps -------------------------------------------------------------------------
def step_inventory(boot, env, ctx, intent):
    return env.collect_inventory()


def step_network(boot, env, ctx, intent):
    if boot.management is None:
        return {"skipped": True, "why": "no management network in the bootstrap file"}
    env.apply_network(boot.management)
    return {"skipped": False, "interface": boot.management.interface,
            "address": boot.management.address}


def identity(boot, env, ctx):
    """The seed or join step's intent: name, addresses and the key's pin (the key is
    made now, before the intent is recorded, and reused when the step resumes)."""
    from rackforge.cluster import ca
    spec = boot.management
    addresses = [] if spec is None or spec.dhcp else [spec.address.split("/")[0]]
    key = ca.load_key(node_key_pem())
    return {"name": node_name(env.hostname, ctx.results.get("inventory")),
            "addresses": addresses, "key": ca.public_key_pin(key.public_key())}


class VipProblem(errors.ConfigError):
    message = "the cluster's VIP: {detail}"


def check_vip(boot, env):
    """Before anything starts: a VIP where the profile has more than one controller,
    inside the management network and answered by no one (ARP)."""
    controllers = (getattr(env.profile, "cluster", None) or {}).get("controllers", 3)
    if boot.vip is None:
        if controllers > 1:
            raise VipProblem(detail="the profile has %d controllers, so the seed's bootstrap "
                             "file needs 'vip: ADDRESS' (a free address of the management "
                             "network, which HAProxy and keepalived serve)" % controllers)
        return
    if boot.management is not None and not boot.management.dhcp and \
            env.address_in_use(boot.management, boot.vip):
        raise VipProblem(detail="%s answers ARP on %s: another machine uses it; pick a free "
                         "address" % (boot.vip, boot.management.interface))


def step_seed(boot, env, ctx, intent):
    from rackforge.cluster import ca, join, secrets
    check_vip(boot, env)
    authority = ca.CertificateAuthority.init(cluster=boot.cluster)
    name = intent["name"]
    address = (intent["addresses"] or ["127.0.0.1"])[0]
    key_pem = node_key_pem()
    cert, _ = ca.certify_here(authority, name, [address], ca.CONTROLLER, key_pem=key_pem)
    pki = _write_pki(authority.cert_pem, cert)
    endpoints = env.start_etcd(name, address, boot.cluster,
                               (authority.cert_pem, cert, key_pem), pki)
    env.write_client(endpoints, pki)
    reg = env.connect_registry(endpoints, pki)
    join_endpoint = "https://%s:%d" % (address, env.join_port)
    _update_cluster(reg.kv, lambda c: dict(c, name=boot.cluster, ca_sha256=authority.pin,
                                           join_endpoints=c.get("join_endpoints") or [],
                                           **({"vip": boot.vip} if boot.vip else {})))
    service = join.JoinService(reg, authority, endpoints, _role_policy(env))
    node, cert = service.admit_self(name, address, ctx.results.get("inventory") or {}, key_pem)
    pki = _write_pki(authority.cert_pem, cert)
    own = ca.load_key(key_pem)
    secrets.SecretStore(reg.kv, node.id, own).put(
        secrets.CA_KEY, (authority.directory / ca.KEY_FILE).read_bytes(),
        {node.id: own.public_key()}, only_if_absent=True)
    return {"node_id": node.id, "name": name, "addresses": intent["addresses"],
            "etcd_endpoints": endpoints, "join_endpoints": [join_endpoint],
            "ca_sha256": authority.pin, **pki}


def step_join(boot, env, ctx, intent):
    from rackforge.cluster import ca
    j = boot.join
    csr, _ = ca.make_csr(intent["name"], node_key_pem())
    source = intent["addresses"][0] if intent["addresses"] else None
    answer = env.join_client(endpoints=j.endpoints, token=j.token, pin=j.ca_sha256,
                             name=intent["name"], csr_pem=csr,
                             inventory=ctx.results.get("inventory") or {}, role=boot.role,
                             source=source)
    pki = _write_pki(answer["ca"].encode(), answer["certificate"].encode())
    env.write_client(answer["etcd_endpoints"], pki)
    out = {k: answer[k] for k in ("node_id", "name", "role", "roles", "etcd_endpoints")}
    return dict(out, addresses=intent["addresses"],
                join_endpoints=answer.get("join_endpoints") or list(j.endpoints),
                **pki)      # never the token


def step_role(boot, env, ctx, intent):
    m = _member(ctx)
    if not boot.seed:
        return {"role": m["role"], "roles": m["roles"]}
    from rackforge.cluster import roles
    reg = _registry(ctx, env)
    decision = roles.RoleElection(reg.kv, _role_policy(env)).decide(m["node_id"],
                                                                    pin=boot.role)
    roles.record_role(reg, m["node_id"], decision)
    return {"role": decision.role, "roles": decision.roles}


def step_etcd(boot, env, ctx, intent):
    m = _member(ctx)
    if boot.seed:
        return {"member": True, "endpoints": m["etcd_endpoints"]}
    if ctx.results["role"]["role"] != "controller":
        return {"member": False, "endpoints": m["etcd_endpoints"]}
    if not m["addresses"]:
        from rackforge.cluster.etcd import EtcdError
        raise EtcdError(detail="a controller needs a static management address; set "
                        "management.address in the bootstrap file")
    pems = tuple(Path(m[k]).read_bytes() for k in ("ca_cert", "cert", "key"))
    reg = env.connect_registry(m["etcd_endpoints"], _tls(m))
    endpoints = env.join_etcd(m["name"], m["addresses"][0], _cluster_name(reg.kv), pems,
                              m["etcd_endpoints"], reg)
    env.write_client(endpoints, _tls(m))
    return {"member": True, "endpoints": endpoints}


def step_joinservice(boot, env, ctx, intent):
    """A controller serves joins: the CA key (sealed for it when it was admitted)
    goes to ``state_dir()/ca``, its endpoint into the cluster record, and
    ``rackforge-join.service`` starts."""
    from rackforge.cluster import ca, secrets
    if ctx.results["role"]["role"] != "controller":
        return {"serving": None, "why": "only controllers serve joins"}
    m = _member(ctx)
    reg = _registry(ctx, env)
    address = (m["addresses"] or ["127.0.0.1"])[0]
    if not boot.seed:
        store = secrets.SecretStore(reg.kv, m["node_id"], ca.load_key(node_key_pem()))
        ca.CertificateAuthority.install(store.get(secrets.CA_KEY),
                                        Path(m["ca_cert"]).read_bytes())
    endpoint = "https://%s:%d" % (address, env.join_port)
    make_dirs(paths.config_dir(), 0o755)
    atomic_write(paths.config_dir() / "join-server.json",
                 json.dumps({"listen": address, "port": env.join_port,
                             "node_id": m["node_id"]}) + "\n", mode=0o644)
    _update_cluster(reg.kv, lambda c: dict(c, join_endpoints=sorted(
        set(c.get("join_endpoints") or []) | {endpoint})))
    env.start_join_server(ctx)
    return {"serving": endpoint}


def step_storage(boot, env, ctx, intent):
    from rackforge.cluster import roles
    from rackforge.firstboot import inventory as inv_mod
    from rackforge.firstboot import storage
    m = _member(ctx)
    inv = inv_mod.Inventory.from_dict(ctx.results["inventory"])
    policy = storage.StoragePolicy.from_profile(env.profile)
    kw = {"run": env.storage_run} if env.storage_run else {}
    selection = storage.select(inv, policy, **kw)
    reg = _registry(ctx, env)
    storage.record(reg, m["node_id"], selection)
    data = selection.to_dict()
    if data.get("disks"):
        def add(n):
            parts = [p for p in (n.role or ctx.results["role"]["role"]).split(",") if p]
            n.role = ",".join(parts + ([] if "storage" in parts else ["storage"]))
        reg.update_node(m["node_id"], add)
        roles.RoleElection(reg.kv, _role_policy(env)).mark_storage(m["node_id"])
    return data


def step_handover(boot, env, ctx, intent):
    m = _member(ctx)
    reg = _registry(ctx, env)
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
    if boot.management is not None:
        env.persist_network(boot.management)    # the address comes back on every boot
    env.enable_nodeagent(ctx)
    return desired


#: (name, function, options) in order; "seed" or "join" runs, as the bootstrap says
STEPS = (
    ("inventory", step_inventory, {}),
    # the management address does not survive a reboot: set it again on each boot
    # until first boot is complete (a resumed join needs it)
    ("network", step_network, {"every_boot": True}),
    ("seed", step_seed, {"once": True, "prepare": identity}),
    ("join", step_join, {"once": True, "prepare": identity}),
    ("role", step_role, {}),
    ("etcd", step_etcd, {}),
    ("joinservice", step_joinservice, {}),
    ("storage", step_storage, {}),
    ("handover", step_handover, {}),
)


def build_steps(boot, env):
    """The journal steps for the :class:`bootstrap.Bootstrap` ``boot``."""
    skip = "join" if boot.seed else "seed"
    out = []
    for name, func, options in STEPS:
        if name == skip:
            continue
        opts = dict(options)
        if "prepare" in opts:
            prepare = opts["prepare"]
            opts["prepare"] = lambda ctx, prepare=prepare: prepare(boot, env, ctx)

        def step(ctx, intent, func=func):
            return func(boot, env, ctx, intent)
        out.append(journal.Step(name, step, **opts))
    return out


def run(boot, env=None, ctx=None, say=None, on_retry=None):
    """Run first boot for ``boot``; returns the journal context."""
    env = env or Env()
    return journal.run(build_steps(boot, env), ctx=ctx, say=say, on_retry=on_retry)
