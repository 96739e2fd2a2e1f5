"""The service catalogue: one record per service, as data (``nodeagent/services/*.yaml``).

In the manner of kolla-ansible's service maps, a record says everything the
agent needs to run one service on the nodes of its roles::

    name: memcached                     # the file's name, too
    description: one line
    roles: [controller]                 # controller | compute | storage | all
    units: [memcached.service]          # enabled and started in this order (may be empty)
    configs:                            # rendered from nodeagent/templates/
      - {template: memcached/memcached.conf.j2, path: /etc/memcached.conf,
         mode: "0644", owner: root, group: root,
         restart_free: [key]}           # lines (key = ...) whose change needs no restart
    reload: true                        # a changed file is applied by systemctl reload
    secrets: [rabbitmq-cookie]          # from nodeagent/secrets.yaml, sealed for its readers
    requires: [mariadb]                 # local services healthy before this one starts
    waits_for: [galera-primary]         # cluster conditions (nodeagent/conditions.py)
    tasks: [galera-bootstrap]           # once-per-cluster tasks done before it starts
    start: systemd                      # or the name of a step that starts it (galera)
    health: {type: tcp, port: 11211, timeout: 2, interval: 10}
            # or {type: http, port: 8080, path: /, status: 200}
            # or {type: command, argv: [...]}    (exit 0: ok; 2: degraded)
            # or {type: builtin, name: galera}   (the agent's own check: nodeagent/hooks.py)
    restart: {limit: 5, window: 3600}   # automatic restarts of a failed unit
    vip: true                           # only where the cluster has a VIP (HAProxy, keepalived)
    openstack: true                     # only where the node runs OpenStack (its packages are
                                        # in the image and the profile does not turn it off)

Adding a service means adding a record and its templates.  :func:`load`
checks every record (unknown keys, missing templates, unknown secrets, steps,
tasks or conditions, and cycles through ``requires``) and returns the
services in an order where each comes after what it requires.
"""

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from rackforge import errors, yamlfile

HERE = Path(__file__).parent
SERVICES_DIR = HERE / "services"
TEMPLATES_DIR = HERE / "templates"
SECRETS_FILE = HERE / "secrets.yaml"
ROLES = ("controller", "compute", "storage", "all")
KEYS = {"name", "description", "roles", "units", "configs", "secrets", "requires",
        "waits_for", "tasks", "start", "health", "restart", "vip", "reload", "openstack"}
CONFIG_KEYS = {"template", "path", "mode", "owner", "group", "restart_free"}
HEALTH_KEYS = {"builtin": {"type", "name", "timeout", "interval"},
               "tcp": {"type", "port", "timeout", "interval"},
               "http": {"type", "port", "path", "status", "timeout", "interval"},
               "command": {"type", "argv", "timeout", "interval"}}
SECRET_KEYS = {"name", "kind", "length", "readers", "description", "applied_by", "fixed"}
KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")     # a config line's key
SECRET_KINDS = ("password", "cookie", "hex", "uuid", "cephx", "fernet")


class CatalogueError(errors.ConfigError):
    message = "service catalogue: {where}: {problem}"


@dataclass(frozen=True)
class Config:
    template: str
    path: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    # keys ("key = value" lines, "key.*" too) read only when a cluster forms or a member
    # joins: a change of those lines alone restarts nothing
    restart_free: tuple = ()


@dataclass(frozen=True)
class Health:
    type: str
    name: str = None
    port: int = None
    path: str = "/"
    status: int = 200
    argv: tuple = ()
    timeout: float = 5.0
    interval: float = 10.0


@dataclass(frozen=True)
class Service:
    name: str
    description: str
    roles: tuple
    units: tuple
    configs: tuple = ()
    secrets: tuple = ()
    requires: tuple = ()
    waits_for: tuple = ()
    tasks: tuple = ()
    start: str = "systemd"
    health: Health = None
    restart_limit: int = 5
    restart_window: float = 3600.0
    vip: bool = False
    reload: bool = False        # apply a changed file with reload (a unit file: restart)
    openstack: bool = False     # part of the cloud: run only where settings["openstack"] is set

    def runs_on(self, roles):
        """True if a node with ``roles`` (a set of role names) runs this service."""
        return "all" in self.roles or bool(set(self.roles) & set(roles))


@dataclass(frozen=True)
class Secret:
    name: str
    kind: str
    length: int
    readers: tuple
    description: str = ""
    applied_by: str = ""    # the cluster task that sets it inside a service; re-run on rotation
    fixed: str = ""         # why it cannot be rotated on a running cluster ("": it can)


@dataclass
class Catalogue:
    services: list                        # in start order
    secrets: dict                         # name -> Secret
    version: str = ""                     # sha256 of every record and template
    by_name: dict = field(default_factory=dict)

    def __post_init__(self):
        self.by_name = {s.name: s for s in self.services}

    def task_inputs(self, task, versions):
        """{secret: version} of the secrets task ``task`` applies (``versions``: every
        secret's version); the task is done only for these."""
        return {name: versions[name] for name, s in self.secrets.items()
                if s.applied_by == task and name in versions}

    def for_roles(self, roles):
        return [s for s in self.services if s.runs_on(roles)]


def _bad(where, problem):
    return CatalogueError(where=where, problem=problem)


def _strings(value, where, key):
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _bad(where, "'%s' must be a list of names" % key)
    return tuple(value)


def _mode(value, where):
    try:
        mode = int(str(value), 8)
    except ValueError:
        raise _bad(where, "mode %r is not octal like \"0640\"" % (value,)) from None
    if not 0 <= mode <= 0o7777:
        raise _bad(where, "mode %r is out of range" % (value,))
    return mode


def _config(data, where, templates):
    if not isinstance(data, dict) or set(data) - CONFIG_KEYS \
            or not {"template", "path"} <= set(data):
        raise _bad(where, "a config is {template, path, mode?, owner?, group?, "
                   "restart_free?}")
    if not (templates / data["template"]).is_file():
        raise _bad(where, "template %s is missing from %s" % (data["template"], templates))
    if not str(data["path"]).startswith("/"):
        raise _bad(where, "config path %s must be absolute" % data["path"])
    free = _strings(data.get("restart_free"), where, "restart_free")
    if any(not KEY_RE.match(k) for k in free):
        raise _bad(where, "restart_free names keys ('fernet' covers fernet.0), not patterns: "
                   "%s" % ", ".join(k for k in free if not KEY_RE.match(k)))
    return Config(template=data["template"], path=data["path"],
                  mode=_mode(data.get("mode", "0644"), where),
                  owner=str(data.get("owner", "root")), group=str(data.get("group", "root")),
                  restart_free=free)


def _health(data, where):
    if data is None:
        return None
    kind = data.get("type") if isinstance(data, dict) else None
    if kind not in HEALTH_KEYS:
        raise _bad(where, "health.type must be one of %s" % ", ".join(HEALTH_KEYS))
    unknown = set(data) - HEALTH_KEYS[kind]
    if unknown:
        raise _bad(where, "health key '%s' is not one of %s"
                   % (sorted(unknown)[0], ", ".join(sorted(HEALTH_KEYS[kind]))))
    if kind in ("tcp", "http") and not isinstance(data.get("port"), int):
        raise _bad(where, "health.port must be a port number")
    if kind == "command" and not (isinstance(data.get("argv"), list) and data["argv"]):
        raise _bad(where, "health.argv must be a command line as a list")
    if kind == "builtin" and not isinstance(data.get("name"), str):
        raise _bad(where, "health.name must name one of the agent's checks")
    return Health(type=kind, name=data.get("name"), port=data.get("port"),
                  path=data.get("path", "/"),
                  status=int(data.get("status", 200)), argv=tuple(data.get("argv") or ()),
                  timeout=float(data.get("timeout", 5)),
                  interval=float(data.get("interval", 10)))


def parse_service(data, where, templates=TEMPLATES_DIR):
    if not isinstance(data, dict):
        raise _bad(where, "a service record is a mapping")
    unknown = set(data) - KEYS
    if unknown:
        raise _bad(where, "unknown key '%s'; the keys are %s"
                   % (sorted(unknown)[0], ", ".join(sorted(KEYS))))
    for key in ("name", "roles"):
        if not data.get(key):
            raise _bad(where, "'%s' is missing" % key)
    for flag in ("vip", "reload", "openstack"):
        if not isinstance(data.get(flag, False), bool):
            raise _bad(where, "'%s' is true or false" % flag)
    roles = _strings(data["roles"], where, "roles")
    if set(roles) - set(ROLES):
        raise _bad(where, "role '%s' is not one of %s"
                   % (sorted(set(roles) - set(ROLES))[0], ", ".join(ROLES)))
    configs = data.get("configs") or []
    if not isinstance(configs, list):
        raise _bad(where, "'configs' must be a list")
    restart = data.get("restart") or {}
    if not isinstance(restart, dict) or set(restart) - {"limit", "window"}:
        raise _bad(where, "'restart' is {limit, window}")
    return Service(name=str(data["name"]), description=str(data.get("description", "")),
                   roles=roles, units=_strings(data.get("units"), where, "units"),
                   configs=tuple(_config(c, where, templates) for c in configs),
                   secrets=_strings(data.get("secrets"), where, "secrets"),
                   requires=_strings(data.get("requires"), where, "requires"),
                   waits_for=_strings(data.get("waits_for"), where, "waits_for"),
                   tasks=_strings(data.get("tasks"), where, "tasks"),
                   start=str(data.get("start", "systemd")),
                   health=_health(data.get("health"), where),
                   restart_limit=int(restart.get("limit", 5)),
                   restart_window=float(restart.get("window", 3600)),
                   vip=bool(data.get("vip", False)), reload=bool(data.get("reload", False)),
                   openstack=bool(data.get("openstack", False)))


def parse_secrets(data, where):
    if not isinstance(data, list):
        raise _bad(where, "the secrets file is a list of {name, kind, length, readers}")
    out = {}
    for item in data:
        if not isinstance(item, dict) or set(item) - SECRET_KEYS or "name" not in item:
            raise _bad(where, "a secret is {name, kind, length?, readers, description?, "
                       "applied_by?, fixed?}")
        if item.get("kind") not in SECRET_KINDS:
            raise _bad(where, "secret %s: kind must be one of %s"
                       % (item["name"], ", ".join(SECRET_KINDS)))
        readers = _strings(item.get("readers"), where, "readers")
        if not readers or set(readers) - set(ROLES):
            raise _bad(where, "secret %s: readers must be roles (%s)"
                       % (item["name"], ", ".join(ROLES)))
        out[item["name"]] = Secret(name=item["name"], kind=item["kind"],
                                   length=int(item.get("length", 32)), readers=readers,
                                   description=str(item.get("description", "")),
                                   applied_by=str(item.get("applied_by", "")),
                                   fixed=str(item.get("fixed", "")))
        if out[item["name"]].applied_by and out[item["name"]].fixed:
            raise _bad(where, "secret %s: 'applied_by' and 'fixed' exclude each other"
                       % item["name"])
    return out


def order(services):
    """``services`` sorted so each comes after what it requires; raises on a cycle."""
    by_name = {s.name: s for s in services}
    done, out, visiting = set(), [], []

    def visit(s):
        if s.name in done:
            return
        if s.name in visiting:
            cycle = visiting[visiting.index(s.name):] + [s.name]
            raise _bad(s.name, "'requires' goes round in a cycle: %s" % " -> ".join(cycle))
        visiting.append(s.name)
        for dep in s.requires:
            if dep not in by_name:
                raise _bad(s.name, "requires '%s', which is not in the catalogue" % dep)
            visit(by_name[dep])
        visiting.pop()
        done.add(s.name)
        out.append(s)

    for s in sorted(services, key=lambda s: s.name):
        visit(s)
    return out


def load(services_dir=SERVICES_DIR, templates=TEMPLATES_DIR, secrets_file=SECRETS_FILE,
         steps=(), tasks=(), conditions=(), checks=()):
    """The whole catalogue, checked.  ``steps``, ``tasks``, ``conditions``, ``checks``: the
    names the agent implements (a record naming anything else is refused)."""
    services, digest = [], hashlib.sha256()
    for path in sorted(Path(services_dir).glob("*.yaml")):
        data = yamlfile.load(path)
        svc = parse_service(data, path.name, Path(templates))
        if svc.name != path.stem:
            raise _bad(path.name, "name '%s' differs from the file's" % svc.name)
        services.append(svc)
        digest.update(path.read_bytes())
    secrets = parse_secrets(yamlfile.load(secrets_file), Path(secrets_file).name)
    digest.update(Path(secrets_file).read_bytes())
    for svc in services:
        for name, known, what in ((svc.secrets, secrets, "secret"), (svc.tasks, tasks, "task"),
                                  (svc.waits_for, conditions, "condition")):
            missing = sorted(set(name) - set(known))
            if missing:
                raise _bad(svc.name, "unknown %s '%s'" % (what, missing[0]))
        if svc.start != "systemd" and svc.start not in steps:
            raise _bad(svc.name, "start step '%s' is not one the agent has" % svc.start)
        if svc.health and svc.health.type == "builtin" and svc.health.name not in checks:
            raise _bad(svc.name, "builtin check '%s' is not one the agent has"
                       % svc.health.name)
        for config in svc.configs:
            digest.update((Path(templates) / config.template).read_bytes())
    for secret in secrets.values():
        users = [s for s in services if secret.name in s.secrets]
        if users and not any(s.runs_on({"controller"}) for s in users):
            raise _bad(Path(secrets_file).name, "secret %s is used by no service of the "
                       "controllers, which alone create secrets: nobody would make it"
                       % secret.name)
        if secret.applied_by and not any(secret.applied_by in s.tasks and secret.name
                                         in s.secrets for s in services):
            raise _bad(Path(secrets_file).name, "secret %s is applied by task '%s', which no "
                       "service that uses the secret runs" % (secret.name, secret.applied_by))
    return Catalogue(services=order(services), secrets=secrets,
                     version=digest.hexdigest()[:16])
