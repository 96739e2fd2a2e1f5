"""OpenStack on the rack: the work done once per cluster, Keystone's keys, and the steps
that start the API services.

In the one-shot order of kolla-ansible's and Debian's recipes, each a cluster task
that one controller claims (``tasks.py``) and the others wait for:

- ``openstack-databases``: a database and a MariaDB user per service (the SQL goes to
  ``mariadb`` on stdin: it holds the passwords);
- ``keystone-bootstrap``: ``keystone-manage db_sync`` and ``bootstrap`` (the admin
  user, the identity endpoints on the VIP; the password in the environment of that
  one command, never in argv);
- ``keystone-users``: the ``service`` project and role, a user per service, and the
  catalogue's services and endpoints (public and internal on the VIP), over
  Keystone's own API on this node;
- ``glance-db-sync``, ``placement-db-sync``, ``nova-db-sync`` (api_db, cell0, cell1,
  db), ``neutron-db-sync``, ``cinder-db-sync``: each run as the service's user;
  before a db_sync of a task never done, what an earlier attempt of it left in its
  databases goes (MariaDB's DDL is not transactional: see ``clear_unfinished``);
- ``nova-discover-hosts``: run again whenever the set of compute nodes whose
  nova-compute is up changes, until every one of them is mapped to cell1;
- ``openstack-forget-hosts``: the compute services, network agents and volume
  services of a host that is no node of the cluster any more (a factory reset
  took it out) and is not up, deleted (looked for every 5 minutes, in step
  ``nova-cells``), so the cloud does not report a departed node down forever.

Keystone's keys (step ``keystone``): the cluster's key sets are secrets (sealed in
etcd, the same on every controller); before Keystone starts, and on every pass, the
agent writes them into ``/etc/keystone/fernet-keys`` and ``credential-keys``, so a
Keystone never starts without keys and a rotation (staged key 0 promoted, a new
staged key) needs no restart.
"""

import json
import logging
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from rackforge import errors, keys, yamlfile
from rackforge.fileutil import atomic_write, make_dirs
from rackforge.kvstore import RegistryUnavailable
from rackforge.nodeagent import galera, health
from rackforge.nodeagent.reconcile import Action, Waiting
from rackforge.nodeagent.tasks import TaskFailed

LOG = logging.getLogger(__name__)

#: (secret, MariaDB user, databases)
DATABASES = (("keystone-db", "keystone", ("keystone",)),
             ("glance-db", "glance", ("glance",)),
             ("placement-db", "placement", ("placement",)),
             ("nova-db", "nova", ("nova_api", "nova", "nova_cell0")),
             ("neutron-db", "neutron", ("neutron",)),
             ("cinder-db", "cinder", ("cinder",)))
#: (user, secret) of the services' Keystone users
SERVICE_USERS = (("glance", "glance-keystone"), ("placement", "placement-keystone"),
                 ("nova", "nova-keystone"), ("neutron", "neutron-keystone"),
                 ("cinder", "cinder-keystone"))
#: (service name, type, port, path) in Keystone's catalogue (keystone's own: bootstrap)
CATALOG = (("glance", "image", 9292, ""), ("placement", "placement", 8778, ""),
           ("nova", "compute", 8774, "/v2.1"), ("neutron", "network", 9696, ""),
           ("cinderv3", "volumev3", 8776, "/v3"))
#: task -> (user, [command, ...]) run in order
DB_SYNC = {
    "glance-db-sync": ("glance", [["glance-manage", "--config-file",
                                   "/etc/glance/glance-api.conf", "db_sync"]]),
    "placement-db-sync": ("placement", [["placement-manage", "db", "sync"]]),
    "nova-db-sync": ("nova", [["nova-manage", "api_db", "sync"],
                              ["nova-manage", "cell_v2", "map_cell0"],
                              ["nova-manage", "cell_v2", "create_cell", "--name", "cell1"],
                              ["nova-manage", "db", "sync"]]),
    "neutron-db-sync": ("neutron", [["neutron-db-manage", "--config-file",
                                     "/etc/neutron/neutron.conf", "--config-file",
                                     "/etc/neutron/plugins/ml2/ml2_conf.ini", "upgrade",
                                     "head"]]),
    "cinder-db-sync": ("cinder", [["cinder-manage", "db", "sync"]]),
}
#: the databases of each task that runs a db_sync (what ``clear_unfinished`` may make
#: again: named here, never derived)
TASK_DATABASES = {"keystone-bootstrap": ("keystone",), "glance-db-sync": ("glance",),
                  "placement-db-sync": ("placement",),
                  "nova-db-sync": ("nova_api", "nova", "nova_cell0"),
                  "neutron-db-sync": ("neutron",), "cinder-db-sync": ("cinder",)}
CREATE_DATABASE = ("CREATE DATABASE IF NOT EXISTS `%s` CHARACTER SET utf8 "
                   "COLLATE utf8_general_ci; ")
KEY_DIRS = {"keystone-fernet": "/etc/keystone/fernet-keys",
            "keystone-credential": "/etc/keystone/credential-keys"}
#: nova-manage cell_v2 create_cell's exit code when cell1 exists already
CELL_EXISTS = 2


class OpenStackError(errors.RackforgeError):
    message = "openstack: {what}: {detail}"
    retryable = True


def api_host(view):
    """Where the services reach each other: the VIP, or the only controller."""
    return view.vip or view.controllers[0].address


def databases_sql(secrets):
    """The SQL that makes every database and user (idempotent; a rotated password is
    set again).  It holds the passwords: it goes to ``mariadb`` on stdin only."""
    out = []
    for secret, user, dbs in DATABASES:
        password = secrets[secret].replace("\\", "\\\\").replace("'", "''")
        for db in dbs:
            out.append((CREATE_DATABASE % db).strip())
        out.append("CREATE USER IF NOT EXISTS '%s'@'%%' IDENTIFIED BY '%s';" % (user, password))
        out.append("ALTER USER '%s'@'%%' IDENTIFIED BY '%s';" % (user, password))
        for db in dbs:
            out.append("GRANT ALL PRIVILEGES ON `%s`.* TO '%s'@'%%';" % (db, user))
    return "\n".join(out) + "\n"


def key_files(secret_value):
    """``{index: key}`` of a key-set secret (JSON ``{"0": key, ...}``)."""
    data = json.loads(secret_value)
    return {str(int(k)): v for k, v in data.items()}


def start_units(ctx, units):
    """Enable and start ``units``, or restart them if their inputs changed: what the
    reconciler does for a service systemd starts, for a service with a start step."""
    actions, states = [], ctx.systemd.states(list(units))
    for unit in units:
        st = states[unit]
        verb = None
        if not st.is_enabled:
            actions.append(Action("enable", unit, ctx.service.name))
            if not ctx.dry_run:
                ctx.systemd.act("enable", unit)
        if not (st.is_active or st.active == "activating"):
            verb = "start"
            if st.is_failed and not ctx.dry_run:
                ctx.systemd.act("reset-failed", unit)
        elif ctx.changed:
            verb = "restart"
        if verb:
            actions.append(Action(verb, unit, ctx.service.name,
                                  "its configuration changed" if verb == "restart" else ""))
            if not ctx.dry_run:
                ctx.systemd.act(verb, unit)
    return actions


class Keystone:
    """A small client of Keystone's v3 API (urllib: the agent needs no SDK for this)."""

    def __init__(self, url, password, urlopen=urllib.request.urlopen, timeout=30):
        self.url = url.rstrip("/")
        self.password = password
        self.urlopen = urlopen
        self.timeout = timeout
        self.token = None

    def call(self, method, path, body=None, ok=(200, 201, 204)):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("X-Auth-Token", self.token)
        try:
            with self.urlopen(req, timeout=self.timeout) as res:
                text = res.read()
                status, headers = res.status, res.headers
        except urllib.error.HTTPError as exc:
            status, headers, text = exc.code, exc.headers, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise OpenStackError(what="keystone at %s" % self.url,
                                 detail="%s %s: %s" % (method, path, exc)) from None
        if status not in ok:
            raise OpenStackError(what="keystone at %s" % self.url,
                                 detail="%s %s answered %d" % (method, path, status))
        return status, headers, json.loads(text) if text else {}

    def login(self):
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": self.password}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
        _, headers, data = self.call("POST", "/v3/auth/tokens", body, ok=(201,))
        self.token = headers["X-Subject-Token"]
        self.project = ((data.get("token") or {}).get("project") or {}).get("id")
        self.catalog = {s["type"]: e["url"] for s in (data.get("token") or {}).get(
            "catalog") or [] for e in s.get("endpoints") or [] if e.get("interface") == "public"}

    def delete(self, url):
        """DELETE an absolute ``url`` of another service; one gone already is fine."""
        req = urllib.request.Request(url, method="DELETE")
        req.add_header("X-Auth-Token", self.token)
        try:
            with self.urlopen(req, timeout=self.timeout) as res:
                return res.status
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return 404
            raise OpenStackError(what="DELETE %s" % url, detail="answered %d" % exc.code) \
                from None
        except (urllib.error.URLError, OSError) as exc:
            raise OpenStackError(what="DELETE %s" % url, detail=str(exc)) from None

    def get(self, url):
        """GET an absolute ``url`` of another service with this token; its JSON."""
        req = urllib.request.Request(url, method="GET")
        req.add_header("X-Auth-Token", self.token)
        req.add_header("Accept", "application/json")
        with self.urlopen(req, timeout=self.timeout) as res:
            return json.loads(res.read() or b"{}")

    def find(self, collection, name, **filters):
        query = "&".join(["name=%s" % name] + ["%s=%s" % kv for kv in filters.items()])
        _, _, data = self.call("GET", "/v3/%s?%s" % (collection, query))
        items = data.get(collection) or []
        return items[0] if items else None

    def ensure(self, collection, singular, body, **filters):
        """The id of ``collection``'s item named ``body["name"]``, made if missing."""
        found = self.find(collection, body["name"], **filters)
        if found is not None:
            return found["id"], False
        _, _, data = self.call("POST", "/v3/%s" % collection, {singular: body}, ok=(201,))
        return data[singular]["id"], True


class OpenStack:
    FORGET_EVERY = 300.0            # seconds between looks for departed hosts

    def __init__(self, node_id, kv, run=subprocess.run, root="/",
                 urlopen=urllib.request.urlopen, clock=None):
        import time
        self.node_id = node_id
        self.kv = kv
        self.run = run
        self.root = Path(root)
        self.urlopen = urlopen
        self.clock = clock or time.monotonic
        self.forget_next = 0.0

    def path(self, inside):
        return self.root / str(inside).lstrip("/")

    def manage(self, user, argv, env=None, timeout=900, ok=(0,)):
        """Run a service's manage command as its user (its configuration holds the
        passwords; the command line holds none)."""
        res = self.run(["runuser", "-u", user, "--"] + list(argv), capture_output=True,
                       text=True, timeout=timeout, env=env)
        if res.returncode not in ok:
            lines = (res.stderr or res.stdout or "").strip().splitlines()
            raise OpenStackError(what=" ".join(argv[:3]), detail=(lines or [
                "exit %d" % res.returncode])[-1][:300])
        return res

    # -- task openstack-databases -------------------------------------------------------
    def databases(self, view, systemd, context):
        if not galera.is_primary(galera.wsrep_status(self.run)):
            raise OpenStackError(what="databases", detail="Galera is not Primary here")
        galera.mysql(databases_sql(context["secrets"]), self.run, timeout=60)
        return {"databases": [db for _, _, dbs in DATABASES for db in dbs]}

    # -- what an attempt of a db_sync that did not finish left -------------------------
    def clear_unfinished(self, task):
        """Make task ``task``'s databases again, empty, if task ``task`` was never done and
        they hold tables: an earlier attempt of it left them.  MariaDB's DDL is not
        transactional: a db_sync whose connection went half way (a Galera node that
        left the VIP's pool, a claimant's power cut) leaves tables that no migration
        recorded, and every db_sync after it fails on "Table ... already exists".
        Nothing but the task writes these databases before it is done, so nothing is
        lost; a task done once (re-run for a rotated secret) never comes here.  The
        grants stay (they are MariaDB's, not the database's)."""
        if self.kv is None or self.kv.get(keys.TASKS + task) is not None:
            return []
        dbs = TASK_DATABASES[task]
        # a database an earlier drop left gone (its create cut) is made first; reads
        # wait for what the cluster committed (another claimant's DDL)
        rows = galera.mysql("".join(CREATE_DATABASE % db for db in dbs) +
                            "SET SESSION wsrep_sync_wait=1; "
                            "SELECT table_schema, COUNT(*) FROM information_schema.tables "
                            "WHERE table_schema IN (%s) GROUP BY table_schema;"
                            % ", ".join("'%s'" % db for db in dbs), self.run, timeout=60)
        made = []
        for db, count in rows:
            if db in dbs and int(count):
                LOG.warning("cluster task %s: database %s holds %s table(s) an attempt that "
                            "did not finish left: made again, empty", task, db, count)
                galera.mysql("DROP DATABASE IF EXISTS `%s`; " % db + CREATE_DATABASE % db,
                             self.run, timeout=600)
                made.append(db)
        return made

    # -- task keystone-bootstrap --------------------------------------------------------
    def keystone_bootstrap(self, view, systemd, context):
        self.write_keys(context["secrets"])         # bootstrap reads the key repository
        self.clear_unfinished("keystone-bootstrap")
        self.manage("keystone", ["keystone-manage", "db_sync"])
        url = "http://%s:5000/v3/" % api_host(view)
        env = dict(os.environ, OS_BOOTSTRAP_PASSWORD=context["secrets"]["admin-password"])
        self.manage("keystone", ["keystone-manage", "bootstrap", "--bootstrap-username",
                                 "admin", "--bootstrap-project-name", "admin",
                                 "--bootstrap-role-name", "admin",
                                 "--bootstrap-service-name", "keystone",
                                 "--bootstrap-region-id", "RegionOne",
                                 "--bootstrap-admin-url", url,
                                 "--bootstrap-internal-url", url,
                                 "--bootstrap-public-url", url], env=env)
        return {"admin": "admin", "url": url}

    # -- step keystone: the key sets on disk before Keystone starts ---------------------
    def write_keys(self, secrets, dry_run=False):
        """Write each key set into its repository (0600, owned by keystone), dropping
        keys the set no longer holds; the actions."""
        actions = []
        for secret, where in KEY_DIRS.items():
            wanted = key_files(secrets[secret])
            repo = self.path(where)
            have = {p.name: p.read_text() for p in repo.glob("*")} if repo.is_dir() else {}
            if have == wanted:
                continue
            actions.append(Action("step", where, "keystone", "%d keys" % len(wanted)))
            if dry_run:
                continue
            make_dirs(repo, 0o700)
            os.chmod(repo, 0o700)
            _chown(repo, "keystone")
            for index, key in wanted.items():
                if have.get(index) != key:
                    atomic_write(repo / index, key, mode=0o600)
                    _chown(repo / index, "keystone")
            for index in set(have) - set(wanted):
                (repo / index).unlink(missing_ok=True)
        return actions

    def keystone_step(self, ctx):
        actions = self.write_keys(ctx.context["secrets"], ctx.dry_run)
        actions += start_units(ctx, ctx.service.units)
        if not ctx.dry_run and ctx.kv is not None:
            self.publish_applied(ctx.kv, ctx.context["secrets"]["keystone-fernet"])
            actions += self.maybe_rotate(ctx)
        return actions

    # -- Keystone's token keys rotated on a schedule, by one controller ---------------------
    def applied(self, node_id):
        """The digest of the key set controller ``node_id`` last wrote ("" if none)."""
        entry = self.kv.get(keys.FERNET_APPLIED + node_id)
        return entry.value.decode() if entry is not None else ""

    def publish_applied(self, kv, value):
        """Record which key set this controller has on disk (its digest, not the keys)."""
        digest = _digest(value)
        entry = kv.get(keys.FERNET_APPLIED + self.node_id)
        if entry is None or entry.value.decode() != digest:
            kv.txn([], [(keys.FERNET_APPLIED + self.node_id, digest.encode())])

    def rotation_due(self, view, value, info, now):
        """Why the key set is not rotated now ("" when it is due): it is younger than the
        rotation interval, or some controller has not written the current set yet (its
        staged key must be on every controller before it becomes the primary)."""
        interval = view.settings.get("openstack", {}).get("fernet_rotation", 86400)
        updated = (info or {}).get("updated")
        if updated is None or now - updated < interval:
            return "not due"
        digest = _digest(value)
        behind = [p.name for p in view.controllers
                  if self.applied(p.id) != digest]
        if behind:
            return "waiting for %s to write the current keys" % ", ".join(behind)
        return ""

    def maybe_rotate(self, ctx, now=None):
        import time

        from rackforge.cluster import secrets as store_mod

        value = ctx.context["secrets"]["keystone-fernet"]
        info = store_mod.SecretStore(ctx.kv).info("keystone-fernet")
        why = self.rotation_due(ctx.view, value, info, time.time() if now is None else now)
        if why or ctx.tasks is None:
            return []
        max_keys = ctx.view.settings.get("openstack", {}).get("fernet_keys", 5)
        got = ctx.tasks.run("keystone-fernet-rotate", self.rotate_fernet, value, max_keys,
                            inputs={"version": info["version"]})
        if got == "done" and ctx.tasks.done("keystone-fernet-rotate").by == self.node_id:
            return [Action("step", "keystone-fernet-rotate", "keystone",
                           "token keys rotated (version %d)" % (info["version"] + 1))]
        return []

    def rotate_fernet(self, value, max_keys):
        from rackforge.nodeagent import catalogue, keyring

        secrets = catalogue.parse_secrets(yamlfile.load(catalogue.SECRETS_FILE),
                                          catalogue.SECRETS_FILE.name)
        info = keyring.rotate(self.kv, secrets, "keystone-fernet",
                              value=keyring.fernet_rotated(value, max_keys))
        LOG.info("keystone: token keys rotated to version %d", info["version"])
        return {"version": info["version"]}

    # -- task keystone-users: the service users and the catalogue -----------------------
    def keystone_users(self, view, systemd, context):
        secrets = context["secrets"]
        ks = Keystone("http://%s:5000" % view.address, secrets["admin-password"],
                      urlopen=self.urlopen)
        ks.login()
        project, _ = ks.ensure("projects", "project", {"name": "service", "domain_id":
                                                       "default", "description":
                                                       "OpenStack's own services"})
        roles = {name: ks.ensure("roles", "role", {"name": name})[0]
                 for name in ("admin", "service", "member", "reader")}
        for user, secret in SERVICE_USERS:
            uid, made = ks.ensure("users", "user", {"name": user, "domain_id": "default",
                                                    "password": secrets[secret],
                                                    "enabled": True}, domain_id="default")
            if not made:            # a rotated password: set again
                ks.call("PATCH", "/v3/users/%s" % uid, {"user": {"password": secrets[secret]}})
            for role in ("admin", "service"):
                ks.call("PUT", "/v3/projects/%s/users/%s/roles/%s"
                        % (project, uid, roles[role]))
        host = api_host(view)
        for name, kind, port, path in CATALOG:
            sid, _ = ks.ensure("services", "service", {"name": name, "type": kind,
                                                       "enabled": True})
            _, _, data = ks.call("GET", "/v3/endpoints?service_id=%s" % sid)
            have = {e["interface"]: e for e in data.get("endpoints") or []}
            url = "http://%s:%d%s" % (host, port, path)
            for interface in ("public", "internal"):
                e = have.get(interface)
                if e is None:
                    ks.call("POST", "/v3/endpoints", {"endpoint": {
                        "service_id": sid, "interface": interface, "url": url,
                        "region_id": "RegionOne", "enabled": True}}, ok=(201,))
                elif e["url"] != url:
                    ks.call("PATCH", "/v3/endpoints/%s" % e["id"], {"endpoint": {"url": url}})
        return {"users": [u for u, _ in SERVICE_USERS],
                "services": [c[0] for c in CATALOG]}

    # -- tasks *-db-sync ----------------------------------------------------------------
    def db_sync(self, name):
        def task(view, systemd, context):
            user, commands = DB_SYNC[name]
            self.clear_unfinished(name)
            for argv in commands:
                ok = (0, CELL_EXISTS) if "create_cell" in argv else (0,)
                self.manage(user, argv, ok=ok)
            return {"ran": [" ".join(a[:3]) for a in commands]}
        return task

    # -- step cinder: its etcd client files, then its units -----------------------------
    def cinder_step(self, ctx):
        actions = []
        client = self.path("/etc/rackforge/etcd/client.json")
        if client.exists():
            files = json.loads(client.read_text())
            for key, name in (("ca_cert", "ca.crt"), ("cert", "client.crt"),
                              ("key", "client.key")):
                src, dst = self.path(files[key]), self.path("/etc/cinder/etcd") / name
                if not dst.exists() or dst.read_bytes() != src.read_bytes():
                    actions.append(Action("step", str(dst), "cinder", "etcd client file"))
                    if not ctx.dry_run:
                        make_dirs(dst.parent, 0o750)
                        _chown(dst.parent, "cinder")
                        atomic_write(dst, src.read_bytes(), mode=0o600)
                        _chown(dst, "cinder")
        return actions + start_units(ctx, ctx.service.units)

    # -- step nova-cells: map compute nodes to cell1 as their nova-compute comes up -----
    def computes_up(self, view):
        """Names (nova's ``host``) of the nodes whose nova-compute the agents publish ok."""
        names = {p.id: p.name for p in view.nodes}
        return sorted(names.get(node_id, node_id)
                      for node_id, services in health.read_all(self.kv).items()
                      if (services.get("nova-compute") or {}).get("state") == health.OK)

    def cells_step(self, ctx):
        forgot = self.forget_step(ctx)
        hosts = self.computes_up(ctx.view)
        if not hosts or ctx.dry_run or ctx.tasks is None:
            return forgot
        before = ctx.tasks.done("nova-discover-hosts")
        got = ctx.tasks.run("nova-discover-hosts", self.discover_hosts, hosts,
                            inputs={"hosts": hosts})
        if got == "waiting":
            if before is None:
                raise Waiting("task nova-discover-hosts (claimed by %s)"
                              % ctx.tasks.claimant("nova-discover-hosts"))
            return forgot
        if before is None or not before.holds_for({"hosts": hosts}):
            return forgot + [Action("task", "nova-discover-hosts", "nova-cells",
                                    "%d compute host(s) mapped" % len(hosts))]
        return forgot

    # -- task openstack-forget-hosts: what a departed node left in the cloud ------------
    def admin(self, view):
        """Keystone logged in as the cloud's admin (this controller's clouds.yaml)."""
        import yaml

        auth = yaml.safe_load(self.path(CLOUDS_YAML).read_text())["clouds"]["rackforge"][
            "auth"]
        ks = Keystone("http://%s:5000" % api_host(view), auth["password"],
                      urlopen=self.urlopen)
        ks.login()
        return ks

    def departed(self, ks, members):
        """``[(label, kind, id, version)]`` of the service records on hosts that are no
        node of the cluster (``members``: node names) and are not up; ``kind``: nova,
        neutron, cinder (whose ``id`` is ``(binary, host)``: its API deletes none);
        ``version``: what tells this record from one of the same host before (its id,
        or when it was made)."""
        out = []
        for s in ks.get(ks.catalog["compute"].rstrip("/") + "/os-services").get(
                "services", []):
            if s["host"] not in members and s.get("state") != "up":
                out.append(("%s@%s" % (s["binary"], s["host"]), "nova", s["id"], s["id"]))
        for a in ks.get(ks.catalog["network"].rstrip("/") + "/v2.0/agents").get(
                "agents", []):
            if a["host"] not in members and not a.get("alive"):
                out.append(("%s@%s" % (a["agent_type"], a["host"]), "neutron", a["id"],
                            a["id"]))
        for s in ks.get(ks.catalog["volumev3"].rstrip("/") + "/os-services").get(
                "services", []):
            if s["host"].split("@")[0] not in members and s.get("state") != "up":
                out.append(("%s@%s" % (s["binary"], s["host"]), "cinder",
                            (s["binary"], s["host"]), s.get("updated_at")))
        return sorted(out, key=lambda r: r[0])

    def forget_hosts(self, ks, records):
        """Each record deleted; the ones that failed (a host still holding instances:
        nova says 409) named in one error after the others went (retried later)."""
        failed = []
        for label, kind, ident, _ in records:
            try:
                if kind == "nova":
                    ks.delete("%s/os-services/%s" % (ks.catalog["compute"].rstrip("/"),
                                                     ident))
                elif kind == "neutron":
                    ks.delete("%s/v2.0/agents/%s" % (ks.catalog["network"].rstrip("/"),
                                                     ident))
                else:
                    self.manage("cinder", ["cinder-manage", "service", "remove"]
                                + list(ident))
            except OpenStackError as exc:
                failed.append("%s (%s)" % (label, exc))
                continue
            LOG.warning("openstack: %s deleted: its host left the cluster", label)
        if failed:
            raise OpenStackError(what="forgetting departed hosts", detail="; ".join(failed))
        return {"forgot": [r[0] for r in records]}

    def members(self):
        """The names of every node in the registry, whatever its state or address."""
        from rackforge import registry
        return {n.name for n in registry.NodeRegistry(self.kv).list_nodes()}

    def forget_step(self, ctx):
        """Every :attr:`FORGET_EVERY` seconds, the records of departed hosts deleted by
        one controller (task ``openstack-forget-hosts``)."""
        now = self.clock()
        if ctx.dry_run or ctx.tasks is None or now < self.forget_next:
            return []
        self.forget_next = now + self.FORGET_EVERY
        try:
            ks = self.admin(ctx.view)
            records = self.departed(ks, self.members())
        except (OSError, KeyError, ValueError, TypeError, OpenStackError,
                RegistryUnavailable, urllib.error.URLError) as exc:
            LOG.info("openstack: departed hosts not looked for: %s", exc)
            return []
        if not records:
            return []
        labels = [r[0] for r in records]
        try:
            got = ctx.tasks.run("openstack-forget-hosts", self.forget_hosts, ks, records,
                                inputs={"records": ["%s#%s" % (r[0], r[3]) for r in records]})
        except TaskFailed as exc:       # the others went; again in FORGET_EVERY
            LOG.warning("%s", exc)
            return []
        if got != "done":
            return []
        return [Action("task", "openstack-forget-hosts", "nova-cells",
                       "deleted %s (their hosts left the cluster)" % ", ".join(labels))]

    # -- builtin check "openstack": the cloud as its users and OpenStack see it ----------
    def cloud_check(self, view, systemd):
        host = api_host(view)
        apis = {name: http_status("http://%s:%d%s" % (host, port, path), self.urlopen)
                for name, port, path in APIS}
        try:
            ks = self.admin(view)
            compute = {"%s@%s" % (s["binary"], s["host"]): s["state"] for s in ks.get(
                ks.catalog["compute"].rstrip("/") + "/os-services").get("services", [])}
            agents = {"%s@%s" % (a["agent_type"], a["host"]): "up" if a["alive"] else "down"
                      for a in ks.get(ks.catalog["network"].rstrip("/") +
                                      "/v2.0/agents").get("agents", [])}
            volume = {"%s@%s" % (s["binary"], s["host"]): s["state"] for s in ks.get(
                ks.catalog["volumev3"].rstrip("/") + "/os-services").get("services", [])}
        except (OSError, KeyError, ValueError, TypeError, OpenStackError,
                urllib.error.URLError) as exc:
            return health.Result(health.FAILED, "the cloud's services: %s" % (
                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__),
                {"apis": apis})
        return summarize(apis, compute, agents, volume)

    def discover_hosts(self, hosts):
        self.manage("nova", ["nova-manage", "cell_v2", "discover_hosts", "--by-service"])
        listed = self.manage("nova", ["nova-manage", "cell_v2", "list_hosts"]).stdout
        missing = [h for h in hosts if " %s " % h not in listed]
        if missing:
            raise OpenStackError(what="discover_hosts", detail="%s not mapped to a cell yet "
                                 "(its nova-compute has not registered)" % ", ".join(missing))
        return {"hosts": hosts}


#: (name, port, path) of every API as HAProxy serves it on the VIP
APIS = (("keystone", 5000, "/v3"), ("glance", 9292, "/healthcheck"),
        ("placement", 8778, "/"), ("nova", 8774, "/"), ("neutron", 9696, "/"),
        ("cinder", 8776, "/"), ("horizon", 80, "/horizon/auth/login/"))
CLOUDS_YAML = "/etc/openstack/clouds.yaml"


def http_status(url, urlopen=urllib.request.urlopen, timeout=10):
    """The HTTP status of GET ``url``, or the error's text."""
    try:
        with urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as res:
            return res.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))[:120]


def summarize(apis, compute, agents, volume):
    """The ``openstack`` check's result from what the cloud reports: every API through
    the VIP, and the compute services, network agents and volume services as OpenStack
    itself lists them."""
    detail = {"apis": apis, "compute": compute, "agents": agents, "volume": volume}
    bad_apis = [n for n, s in apis.items() if not (isinstance(s, int) and s < 500)]
    down = sorted(key.replace("@", " on ") for group in (compute, agents, volume)
                  for key, state in group.items() if state != "up")
    if bad_apis:
        return health.Result(health.FAILED, "API %s not answering through the VIP (%s)" % (
            bad_apis[0], apis[bad_apis[0]]), detail)
    if down:
        return health.Result(health.DEGRADED, "down: %s" % ", ".join(down), detail)
    return health.Result(health.OK, "", detail)


def _digest(value):
    import hashlib

    return hashlib.sha256(value.encode()).hexdigest()[:16]


def _chown(path, user):
    try:
        shutil.chown(path, user, user)
    except (LookupError, PermissionError):
        pass                # a test root without the user
