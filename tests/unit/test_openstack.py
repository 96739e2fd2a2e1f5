"""OpenStack on the rack: the configuration each controller renders, the once-per-cluster
work (databases, Keystone's bootstrap, users and catalogue, schema syncs, cell
mapping), Keystone's key sets on disk and the operator's credentials."""

import configparser
import io
import json
import subprocess
import urllib.error
from types import SimpleNamespace

import pytest
from fakesystemd import FakeSystemd

from rackforge.kvstore import MemoryKV
from rackforge.nodeagent import catalogue, hooks, keyring, openstack, render, tasks
from rackforge.nodeagent.reconcile import StepContext
from rackforge.nodeagent.view import Peer, View

CONTROLLERS = [Peer("n1", "node1", "10.0.0.11", 0), Peer("n2", "node2", "10.0.0.12", 1),
               Peer("n3", "node3", "10.0.0.13", 2)]
SETTINGS = {"openstack": {"api_processes": 2, "api_threads": 4, "workers": 1,
                          "token_expiration": 86400, "fernet_keys": 5},
            "provider": {"interface": "prov0", "physnet": "physnet1"}, "ceph": {}}


def secrets():
    cat = catalogue.load(**hooks.names())
    return {name: keyring.generate(s).decode() for name, s in cat.secrets.items()}


def view(node="n2", roles=("controller",), vip="10.0.0.100"):
    me = next((p for p in CONTROLLERS if p.id == node), Peer(node, "node4", "10.0.0.14"))
    return View(node_id=node, name=me.name, address=me.address, roles=set(roles),
                state="active", cluster={"name": "rack", "vip": vip},
                controllers=CONTROLLERS, nodes=CONTROLLERS + [Peer("n4", "node4", "10.0.0.14")],
                facts={"interface": "eth0", "prefix": 24, "cpus": 4, "memory_mib": 16384},
                settings=SETTINGS)


def rendered(service, v=None, values=None):
    """The files of record ``service``, rendered with the secrets it declares only (what
    the agent gives its templates)."""
    cat = catalogue.load(**hooks.names())
    env = render.environment()
    values = values or secrets()
    svc = cat.by_name[service]
    context = (v or view()).context({k: values[k] for k in svc.secrets})
    return {c.path: render.render(env, c, context) for c in svc.configs}


def ini(text):
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.read_string(text)
    return parser


def test_every_openstack_service_is_in_the_catalogue_with_its_secrets():
    cat = catalogue.load(**hooks.names())
    for name in ("openstack-databases", "keystone", "keystone-users", "glance", "placement",
                 "nova", "nova-cells", "neutron-server", "cinder", "horizon",
                 "openstack-client"):
        assert cat.by_name[name].roles == ("controller",), name


def test_apis_bind_the_management_address_with_the_profiles_processes():
    files = rendered("keystone")
    uwsgi = files["/etc/rackforge/uwsgi/keystone.ini"]
    assert "http-socket = 10.0.0.12:5000" in uwsgi
    assert "processes = 2" in uwsgi and "threads = 4" in uwsgi
    assert "apparmor" not in uwsgi
    dropin = files["/etc/systemd/system/keystone.service.d/50-rackforge.conf"]
    assert "ExecStart=\nExecStart=/usr/bin/uwsgi_python3 --ini /etc/rackforge/uwsgi/" \
           "keystone.ini" in dropin
    glance = ini(rendered("glance")["/etc/glance/glance-api.conf"])
    assert glance["DEFAULT"]["bind_host"] == "10.0.0.12"
    nova = ini(rendered("nova")["/etc/nova/nova.conf"])
    assert nova["DEFAULT"]["osapi_compute_listen"] == "10.0.0.12"
    assert nova["vnc"]["novncproxy_base_url"] == "http://10.0.0.100:6080/vnc_lite.html"


def test_services_reach_the_database_through_the_vip_and_every_broker_and_memcached():
    values = secrets()
    nova = ini(rendered("nova", values=values)["/etc/nova/nova.conf"])
    assert nova["database"]["connection"] == (
        "mysql+pymysql://nova:%s@10.0.0.100/nova?charset=utf8" % values["nova-db"])
    assert nova["database"]["max_retries"] == "-1"
    url = nova["DEFAULT"]["transport_url"]
    assert url.count("@") == 3 and "@10.0.0.13:5672" in url
    assert nova["keystone_authtoken"]["memcached_servers"] == \
        "10.0.0.11:11211,10.0.0.12:11211,10.0.0.13:11211"
    assert nova["service_user"]["send_service_user_token"] == "true"
    assert nova["scheduler"]["discover_hosts_in_cells_interval"] == "-1"


def test_a_compute_node_gets_no_database_credentials_in_nova_conf():
    values = {k: v for k, v in secrets().items() if k not in ("nova-db",)}
    v = view(node="n4", roles=("compute",))
    text = render.render(render.environment(), catalogue.Config(
        template="nova/nova.conf.j2", path="/etc/nova/nova.conf"), v.context(values))
    conf = ini(text)
    assert not conf.has_section("database") and not conf.has_section("api_database")
    assert conf["DEFAULT"]["host"] == "node4" and conf["DEFAULT"]["my_ip"] == "10.0.0.14"


def test_a_converged_node_keeps_nova_computes_file_apart_from_the_controllers():
    values = secrets()
    v = view(roles=("controller", "compute"))
    nova = rendered("nova", v, values)["/etc/nova/nova.conf"]
    compute = rendered("nova-compute", v, values)["/etc/nova/nova-compute-node.conf"]
    assert values["nova-db"] in nova and values["nova-db"] not in compute
    assert ini(compute)["DEFAULT"]["host"] == ini(nova)["DEFAULT"]["host"] == "node2"


def test_neutron_uses_ovn_with_every_controllers_databases_and_the_provider_physnet():
    files = rendered("neutron-server")
    ml2 = ini(files["/etc/neutron/plugins/ml2/ml2_conf.ini"])
    assert ml2["ml2"]["mechanism_drivers"] == "ovn"
    assert ml2["ovn"]["ovn_nb_connection"] == \
        "tcp:10.0.0.11:6641,tcp:10.0.0.12:6641,tcp:10.0.0.13:6641"
    assert ml2["ovn"]["ovn_sb_connection"].endswith("tcp:10.0.0.13:6642")
    assert ml2["ml2_type_flat"]["flat_networks"] == "physnet1"
    neutron = ini(files["/etc/neutron/neutron.conf"])
    assert neutron["DEFAULT"]["core_plugin"] == "ml2"      # Debian's scripts grep this line
    assert neutron["DEFAULT"]["service_plugins"] == "ovn-router"
    uwsgi = files["/etc/rackforge/uwsgi/neutron-api.ini"]
    assert "--config-file=/etc/neutron/plugins/ml2/ml2_conf.ini" in uwsgi


def test_cinder_volumes_in_ceph_coordinated_through_etcd_over_tls():
    values = secrets()
    cinder = ini(rendered("cinder", values=values)["/etc/cinder/cinder.conf"])
    assert cinder["DEFAULT"]["cluster"] == "rackforge"
    assert cinder["rbd-1"]["rbd_secret_uuid"] == values["ceph-libvirt-cinder"]
    url = cinder["coordination"]["backend_url"]
    assert url.startswith("etcd3+https://10.0.0.12:2379?") and "cert_key=" in url


def test_glance_stores_images_in_the_images_pool():
    glance = ini(rendered("glance")["/etc/glance/glance-api.conf"])
    assert glance["glance_store"]["default_backend"] == "rbd"
    assert glance["rbd"]["rbd_store_pool"] == "images"
    assert glance["DEFAULT"]["show_image_direct_url"] == "true"     # copy-on-write clones


def test_keystone_key_sets_are_restart_free_lines():
    values = secrets()
    text = rendered("keystone", values=values)["/etc/keystone/rackforge-keys.conf"]
    fernet = json.loads(values["keystone-fernet"])
    for index, key in fernet.items():
        assert "fernet.%s = %s" % (index, key) in text
    cat = catalogue.load(**hooks.names())
    config = [c for c in cat.by_name["keystone"].configs
              if c.path.endswith("rackforge-keys.conf")][0]
    assert config.mode == 0o600


def test_a_rotation_of_keystones_keys_restarts_nothing(tmp_path):
    """The key file after a rotation (key 0 promoted, a new staged key, the oldest gone)
    differs from the one before only in restart-free lines: Keystone is not restarted
    on every controller at once (a rotation's outage)."""
    import os

    from rackforge.nodeagent import render as render_mod
    values = secrets()
    cat = catalogue.load(**hooks.names())
    config = [c for c in cat.by_name["keystone"].configs
              if c.path.endswith("rackforge-keys.conf")][0]
    before = rendered("keystone", values=values)[config.path]
    path = tmp_path / "rackforge-keys.conf"
    path.write_text(before)
    os.chmod(path, 0o600)
    rotated = keyring.fernet_rotated(values["keystone-fernet"].encode(), 3)
    after = rendered("keystone", values=dict(values, **{
        "keystone-fernet": rotated.decode() if isinstance(rotated, bytes) else rotated}))[
        config.path]
    assert after != before
    assert render_mod.restart_free_change(str(path), after, config)
    # a change beyond the keys is no rotation: it restarts
    assert not render_mod.restart_free_change(str(path), after + "debug = true\n", config)


def test_restart_free_names_keys_not_patterns(tmp_path):
    import shutil

    import yaml
    services = tmp_path / "services"
    shutil.copytree(catalogue.SERVICES_DIR, services)
    record = yaml.safe_load((services / "keystone.yaml").read_text())
    record["configs"][1]["restart_free"] = ["fernet.*"]
    (services / "keystone.yaml").write_text(yaml.safe_dump(record))
    with pytest.raises(catalogue.CatalogueError, match=r"not patterns: fernet\.\*"):
        catalogue.load(services, **hooks.names())


def test_fernet_keys_are_32_random_bytes_each_padded():
    import base64

    keys = json.loads(keyring.fernet_keys(3))
    assert sorted(keys) == ["0", "1", "2"] and len(set(keys.values())) == 3
    assert all(len(base64.urlsafe_b64decode(k)) == 32 and k.endswith("=")
               for k in keys.values())


def test_horizon_shares_one_secret_key_and_caches_sessions_in_memcached():
    values = secrets()
    text = rendered("horizon", values=values)["/etc/openstack-dashboard/local_settings.py"]
    assert 'SECRET_KEY = "%s"' % values["horizon-secret"] in text
    assert "django.contrib.sessions.backends.cache" in text
    assert 'OPENSTACK_KEYSTONE_URL = "http://%s:5000/v3" % OPENSTACK_HOST' in text
    assert 'OPENSTACK_HOST = "10.0.0.100"' in text
    compile(text, "local_settings.py", "exec")
    ports = rendered("horizon")["/etc/apache2/ports.conf"]
    assert "Listen 10.0.0.12:80" in ports and "Listen 80" not in ports


def test_clouds_yaml_names_the_cloud_rackforge_on_the_vip():
    import yaml

    values = secrets()
    files = rendered("openstack-client", values=values)
    cloud = yaml.safe_load(files["/etc/openstack/clouds.yaml"])["clouds"]["rackforge"]
    assert cloud["auth"]["auth_url"] == "http://10.0.0.100:5000/v3"
    assert cloud["auth"]["password"] == values["admin-password"]
    cat = catalogue.load(**hooks.names())
    assert {c.mode for c in cat.by_name["openstack-client"].configs} == {0o600}


def test_haproxy_fronts_every_api_with_an_http_check_on_the_vip():
    cat = catalogue.load(**hooks.names())
    text = render.render(render.environment(), cat.by_name["haproxy"].configs[0],
                         view().context(secrets()))
    for name, port in (("keystone", 5000), ("glance", 9292), ("placement", 8778),
                       ("nova", 8774), ("nova-metadata", 8775), ("neutron", 9696),
                       ("cinder", 8776), ("horizon", 80), ("novnc", 6080)):
        block = text.split("listen %s\n" % name)[1].split("\nlisten ")[0]
        assert "bind 10.0.0.100:%d" % port in block
        assert "option httpchk" in block and "http-check expect rstatus ^[23]" in block
        assert block.count(" check\n") == 3 or block.rstrip().endswith("check")
    no_cloud = dict(SETTINGS, openstack={})
    v = view()
    v.settings = no_cloud
    text = render.render(render.environment(), cat.by_name["haproxy"].configs[0],
                         v.context(secrets()))
    assert "listen keystone" not in text


# -- the once-per-cluster work -----------------------------------------------------------
class Run:
    def __init__(self, answers=None):
        self.answers = dict(answers or {})
        self.calls = []

    def __call__(self, argv, input=None, env=None, **kw):
        self.calls.append((list(argv), input, env))
        for prefix, answer in sorted(self.answers.items(), key=lambda kv: -len(kv[0])):
            if tuple(argv[:len(prefix)]) == prefix:
                rc, out, err = answer(argv) if callable(answer) else answer
                return subprocess.CompletedProcess(argv, rc, out, err)
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_databases_sql_goes_on_stdin_and_no_password_in_any_argv():
    values = secrets()
    run = Run({("mariadb",): lambda argv: (0, "wsrep_local_state_comment\tSynced\n"
                                           "wsrep_cluster_status\tPrimary\n"
                                           "wsrep_ready\tON\n", "")})
    os_ = openstack.OpenStack("n1", kv=None, run=run)
    os_.databases(view(), None, {"secrets": values})
    sql = run.calls[-1][1]
    for db in ("keystone", "nova_api", "nova_cell0", "neutron", "cinder", "placement"):
        assert "CREATE DATABASE IF NOT EXISTS `%s`" % db in sql
    assert "ALTER USER 'nova'@'%%' IDENTIFIED BY '%s'" % values["nova-db"] in sql
    for argv, _, _ in run.calls:
        assert not any(v in " ".join(argv) for v in values.values())


def test_keystone_bootstrap_passes_the_admin_password_in_its_environment_only(tmp_path):
    values = secrets()
    run = Run()
    os_ = openstack.OpenStack("n1", kv=None, run=run, root=tmp_path)
    os_.keystone_bootstrap(view(), None, {"secrets": values})
    (sync, _, _), (boot, _, env) = run.calls
    assert sync == ["runuser", "-u", "keystone", "--", "keystone-manage", "db_sync"]
    assert boot[4:6] == ["keystone-manage", "bootstrap"]
    assert "http://10.0.0.100:5000/v3/" in boot
    assert values["admin-password"] not in " ".join(boot)
    assert env["OS_BOOTSTRAP_PASSWORD"] == values["admin-password"]
    # the key repository exists before bootstrap (it reads it)
    assert len(list((tmp_path / "etc/keystone/fernet-keys").iterdir())) == 3


def test_nova_cell1_existing_is_not_an_error_and_the_order_is_debians():
    run = Run({("runuser", "-u", "nova", "--", "nova-manage", "cell_v2", "create_cell"):
               (2, "", "cell1 exists")})
    openstack.OpenStack("n1", kv=None, run=run).db_sync("nova-db-sync")(view(), None, {})
    assert [c[0][4:7] for c in run.calls] == [
        ["nova-manage", "api_db", "sync"], ["nova-manage", "cell_v2", "map_cell0"],
        ["nova-manage", "cell_v2", "create_cell"], ["nova-manage", "db", "sync"]]


def tables(counts):
    """mariadb's answer to the count of tables per database, ``{db: count}``."""
    return lambda argv: (0, "".join("%s\t%d\n" % kv for kv in counts.items()), "")


@pytest.mark.parametrize("task,user,dbs", [
    ("keystone-bootstrap", "keystone", ["keystone"]),
    ("nova-db-sync", "nova", ["nova_api", "nova", "nova_cell0"])])
def test_an_unfinished_attempt_s_tables_go_before_the_next_db_sync(task, user, dbs):
    """The claimant's connection went half way through the first db_sync (seen: Galera
    "Lost connection ... during query" mid CREATE TABLE): its databases hold tables no
    migration recorded.  The next attempt makes them again, empty, then syncs."""
    run = Run({("mariadb",): tables({db: 17 for db in dbs[:2]})})
    os_ = openstack.OpenStack("n1", kv=MemoryKV(), run=run, root="/nonexistent")
    if task == "keystone-bootstrap":
        os_.write_keys = lambda secrets: []
        os_.keystone_bootstrap(view(), None, {"secrets": secrets()})
    else:
        os_.db_sync(task)(view(), None, {})
    mariadb = [sql for argv, sql, _ in run.calls if argv[0] == "mariadb"]
    assert "information_schema.tables" in mariadb[0]
    assert all("'%s'" % db in mariadb[0] for db in dbs)
    # one gone (an earlier drop whose create was cut) is made before it is counted
    assert all(mariadb[0].index("CREATE DATABASE IF NOT EXISTS `%s`" % db)
               < mariadb[0].index("SELECT") for db in dbs)
    assert mariadb[1:] == ["DROP DATABASE IF EXISTS `%s`; CREATE DATABASE IF NOT EXISTS "
                           "`%s` CHARACTER SET utf8 COLLATE utf8_general_ci; " % (db, db)
                           for db in dbs[:2]]
    first_sync = next(i for i, c in enumerate(run.calls) if c[0][0] == "runuser")
    assert first_sync == len(mariadb) and run.calls[first_sync][0][2] == user


def test_every_database_belongs_to_the_one_db_sync_task_that_may_make_it_again():
    owned = [db for dbs in openstack.TASK_DATABASES.values() for db in dbs]
    assert sorted(owned) == sorted(db for _, _, dbs in openstack.DATABASES for db in dbs)
    assert set(openstack.TASK_DATABASES) == {"keystone-bootstrap"} | set(openstack.DB_SYNC)


def test_a_task_done_once_never_drops_a_database():
    """keystone-bootstrap runs again when the admin password is rotated: its database
    is the cloud's, never made again whatever it holds."""
    kv = MemoryKV()
    done = tasks.Tasks(kv, "n3", kv.lease_grant(60), "v1")
    assert done.run("keystone-bootstrap", lambda: {"admin": "admin"}) == "done"
    run = Run({("mariadb",): tables({"keystone": 40})})
    os_ = openstack.OpenStack("n1", kv=kv, run=run)
    os_.write_keys = lambda secrets: []
    os_.keystone_bootstrap(view(), None, {"secrets": secrets()})
    assert [c[0][0] for c in run.calls] == ["runuser", "runuser"]


def test_an_empty_database_is_left_as_it_is():
    run = Run({("mariadb",): tables({})})
    openstack.OpenStack("n1", kv=MemoryKV(), run=run).db_sync("glance-db-sync")(
        view(), None, {})
    assert [c[0][0] for c in run.calls] == ["mariadb", "runuser"]


def test_a_failed_sync_says_the_last_line_of_its_error():
    run = Run({("runuser",): (1, "", "noise\nOperationalError: (2003, 'Can't connect')\n")})
    with pytest.raises(openstack.OpenStackError) as exc:
        openstack.OpenStack("n1", kv=None, run=run).db_sync("glance-db-sync")(view(), None, {})
    assert "OperationalError" in str(exc.value) and "noise" not in str(exc.value)


class FakeKeystone:
    """Keystone's v3 API in memory: what the task asks for and what it made."""

    def __init__(self, users=()):
        self.items = {"projects": [{"id": "p-admin", "name": "admin"}],
                      "roles": [{"id": "r-admin", "name": "admin"}],
                      "users": [{"id": "u-" + u, "name": u} for u in users],
                      "services": [], "endpoints": []}
        self.calls = []

    def __call__(self, req, timeout=None):
        method, url = req.get_method(), req.full_url
        path, _, query = url.split(":5000", 1)[1].partition("?")
        body = json.loads(req.data) if req.data else None
        self.calls.append((method, path, body))
        if path == "/v3/auth/tokens":
            return Response(201, {}, {"X-Subject-Token": "tok"})
        parts = path.split("/")
        if method == "GET":
            coll = parts[2]
            filters = dict(kv.split("=") for kv in query.split("&") if kv)
            items = [i for i in self.items[coll]
                     if all(i.get(k) == v for k, v in filters.items()
                            if k in ("name", "service_id"))]
            return Response(200, {coll: items})
        if method == "POST":
            coll = parts[2]
            singular = coll[:-1]
            item = dict(body[singular], id="%s-%d" % (coll[0], len(self.items[coll]) + 1))
            self.items[coll].append(item)
            return Response(201, {singular: item})
        return Response(204, {})


class Response(io.BytesIO):
    def __init__(self, status, body, headers=None):
        super().__init__(json.dumps(body).encode())
        self.status, self.headers = status, headers or {}


def test_keystone_users_makes_users_roles_and_endpoints_once_and_sets_passwords_again():
    values = secrets()
    ks = FakeKeystone()
    os_ = openstack.OpenStack("n1", kv=None, urlopen=ks)
    os_.keystone_users(view(), None, {"secrets": values})
    users = {u["name"]: u for u in ks.items["users"]}
    assert set(users) == {"glance", "placement", "nova", "neutron", "cinder"}
    assert users["nova"]["password"] == values["nova-keystone"]
    urls = {(e["service_id"], e["interface"]): e["url"] for e in ks.items["endpoints"]}
    assert len(urls) == 10
    assert "http://10.0.0.100:8774/v2.1" in urls.values()
    made = len(ks.items["endpoints"])
    ks.calls.clear()
    os_.keystone_users(view(), None, {"secrets": values})        # again: nothing new
    assert len(ks.items["endpoints"]) == made
    patches = [c for c in ks.calls if c[0] == "PATCH"]
    assert len(patches) == 5                    # every password set again (a rotation)
    assert all(values[s] not in json.dumps(ks.calls[0]) for s in ("nova-keystone",))


def test_keystone_unreachable_is_one_retryable_line():
    def refuse(req, timeout=None):
        raise urllib.error.URLError("Connection refused")

    ks = openstack.Keystone("http://10.0.0.12:5000", "pw", urlopen=refuse)
    with pytest.raises(openstack.OpenStackError) as exc:
        ks.login()
    assert exc.value.retryable and "Connection refused" in str(exc.value)
    assert "pw" not in str(exc.value)


def test_key_sets_are_written_before_keystone_starts_and_stale_keys_dropped(tmp_path):
    values = secrets()
    systemd = FakeSystemd(installed=["keystone.service"])
    os_ = openstack.OpenStack("n1", kv=None, root=tmp_path)
    svc = SimpleNamespace(name="keystone", units=("keystone.service",))
    ctx = StepContext(service=svc, view=view(), systemd=systemd, kv=None, tasks=None,
                      changed=False, dry_run=False, context={"secrets": values})
    (tmp_path / "etc/keystone/fernet-keys").mkdir(parents=True)
    (tmp_path / "etc/keystone/fernet-keys/9").write_text("old")
    actions = os_.keystone_step(ctx)
    repo = tmp_path / "etc/keystone/fernet-keys"
    assert {p.name: p.read_text() for p in repo.iterdir()} == json.loads(
        values["keystone-fernet"])
    assert oct(repo.stat().st_mode & 0o777) == "0o700"
    assert [a.kind for a in actions][-2:] == ["enable", "start"]
    assert systemd.calls[-1] == ("start", "keystone.service")
    assert os_.keystone_step(ctx) == []         # nothing differs: nothing done


# -- Keystone's token keys: rotated by one controller, only once every one has them ------
def test_a_rotation_promotes_the_staged_key_and_keeps_at_most_max_keys():
    value = keyring.fernet_keys(3)
    before = json.loads(value)
    after = json.loads(keyring.fernet_rotated(value, 3))
    assert after["3"] == before["0"]            # the staged key is now the primary
    assert after["0"] not in before.values()    # a new staged key
    assert "1" not in after and after["2"] == before["2"]   # the oldest secondary went
    for _ in range(10):
        value = keyring.fernet_rotated(value, 5)
    assert len(json.loads(value)) == 5 and max(map(int, json.loads(value))) == 12


def test_rotation_waits_for_every_controller_then_runs_once_on_one(tmp_path):
    import agentrack

    from rackforge.nodeagent import tasks as tasks_mod
    from rackforge.nodeagent import view as view_mod

    reg, nodes = agentrack.make(tmp_path)
    cat = catalogue.load(**hooks.names())
    ids = {name: node.id for name, (node, _) in nodes.items()}
    rings = {name: keyring.Keyring(reg.kv, node.id, key, cat.secrets)
             for name, (node, key) in nodes.items()}
    rings["n1"].reconcile({"keystone-fernet"})
    value = rings["n1"].read(["keystone-fernet"])[0]["keystone-fernet"]
    info = {"version": 1, "updated": 0}
    settings = {"openstack": {"fernet_rotation": 100, "fernet_keys": 5}}

    def agent(name):
        v = view_mod.read(reg, ids[name], settings=settings)
        return openstack.OpenStack(ids[name], reg.kv), v
    os1, v1 = agent("n1")
    assert os1.rotation_due(v1, value, dict(info, updated=1000), now=1050) == "not due"
    os1.publish_applied(reg.kv, value)
    why = os1.rotation_due(v1, value, info, now=1000)
    assert why.startswith("waiting for") and v1.controllers[1].name in why
    for name in ("n2", "n3"):
        agent(name)[0].publish_applied(reg.kv, value)
    assert os1.rotation_due(v1, value, info, now=1000) == ""
    lease = reg.kv.lease_grant(30)
    runner = tasks_mod.Tasks(reg.kv, ids["n1"], lease, cat.version)
    assert runner.run("keystone-fernet-rotate", os1.rotate_fernet, value, 5,
                      inputs={"version": 1}) == "done"
    new, version = rings["n2"].store.get_versioned("keystone-fernet")
    assert version == 2 and json.loads(new.decode())["3"] == json.loads(value)["0"]
    # another controller sees it done for that version: no second rotation
    other = tasks_mod.Tasks(reg.kv, ids["n2"], reg.kv.lease_grant(30), cat.version)
    assert other.run("keystone-fernet-rotate", pytest.fail, inputs={"version": 1}) == "done"


def test_a_pass_follows_a_service_state_change_not_a_heartbeat_or_a_detail():
    from rackforge import keys
    from rackforge.kvstore import Event
    from rackforge.nodeagent.daemon import HealthStates

    states = HealthStates()

    def health(state, detail=None):
        return Event("PUT", keys.HEALTH + "n1/keystone",
                     json.dumps({"state": state, "detail": detail}).encode(), 1)
    assert states.matters(health("pending"))
    assert not states.matters(health("pending", {"x": 1}))      # only the detail changed
    assert states.matters(health("ok"))                          # came up: others go on
    assert not states.matters(Event("PUT", keys.HEARTBEATS + "n1", b"{}", 2))
    assert states.matters(Event("PUT", keys.CLUSTER, b"{}", 3))
    assert states.matters(True)                                  # a compacted watch


def test_a_rack_without_openstack_runs_none_of_its_records_and_haproxy_no_api():
    from rackforge.nodeagent import reconcile
    from rackforge.nodeagent.daemon import openstack_settings

    cat = catalogue.load(**hooks.names())
    cloud = {s.name for s in cat.services if s.openstack}
    assert {"keystone", "nova", "nova-compute", "ovn-central", "horizon"} <= cloud
    assert not cloud & {"mariadb", "haproxy", "ceph", "ceph-osd", "ceph-client"}

    class AllUnits:
        def states(self, units):
            return {u: SimpleNamespace(exists=True) for u in units}

    rec = reconcile.Reconciler(cat, AllUnits(), hooks=None)
    on = {s.name for s in rec.desired(view(roles=("controller", "compute", "storage")))}
    assert cloud <= on
    profile = SimpleNamespace(openstack={"enabled": False, "workers": 2})
    assert openstack_settings(profile, present=True) == {}
    assert openstack_settings(SimpleNamespace(openstack={}), present=True)["workers"] == 1
    off = view(roles=("controller", "compute", "storage"))
    off.settings = dict(SETTINGS, openstack={})
    left = {s.name for s in rec.desired(off)}
    assert not left & cloud and {"mariadb", "haproxy", "ceph"} <= left
    haproxy = rendered("haproxy", off)["/etc/haproxy/haproxy.cfg"]
    assert ":5000" not in haproxy and ":3306" in haproxy


class FakeCloud:
    """Keystone's token (with its catalogue) and the compute, network and volume services'
    lists as the cloud answers them; DELETEs recorded and applied."""

    def __init__(self):
        self.nova = [{"id": 1, "binary": "nova-compute", "host": "node1", "state": "up"},
                     {"id": 2, "binary": "nova-compute", "host": "node4", "state": "down"},
                     {"id": 3, "binary": "nova-compute", "host": "node5", "state": "up"},
                     {"id": 4, "binary": "nova-conductor", "host": "node2", "state": "down"}]
        self.agents = [{"id": "a1", "agent_type": "OVN Controller agent", "host": "node4",
                        "alive": False},
                       {"id": "a2", "agent_type": "OVN Controller agent", "host": "node1",
                        "alive": True}]
        self.volume = [{"binary": "cinder-volume", "host": "node4@rbd", "state": "down"},
                       {"binary": "cinder-volume", "host": "node1@rbd", "state": "up"}]
        self.deleted = []

    def __call__(self, req, timeout=None):
        method, url = req.get_method(), req.full_url
        if url.endswith("/v3/auth/tokens"):
            catalog = [{"type": t, "endpoints": [{"interface": "public", "url": u}]}
                       for t, u in (("compute", "http://vip:8774/v2.1"),
                                    ("network", "http://vip:9696"),
                                    ("volumev3", "http://vip:8776/v3/p1"))]
            return Response(201, {"token": {"project": {"id": "p1"}, "catalog": catalog}},
                            {"X-Subject-Token": "tok"})
        if method == "DELETE":
            self.deleted.append(url)
            if url.endswith("/os-services/99"):
                raise urllib.error.HTTPError(url, 404, "gone", {}, io.BytesIO(b""))
            if url.endswith("/os-services/98"):         # a host still holding instances
                raise urllib.error.HTTPError(url, 409, "in use", {}, io.BytesIO(b""))
            gone = url.rsplit("/", 1)[1]
            self.nova = [x for x in self.nova if str(x["id"]) != gone]
            self.agents = [x for x in self.agents if x["id"] != gone]
            return Response(204, {})
        return Response(200, {"http://vip:8774/v2.1/os-services": {"services": self.nova},
                              "http://vip:9696/v2.0/agents": {"agents": self.agents},
                              "http://vip:8776/v3/p1/os-services": {"services": self.volume}
                              }[url])


def forgetter(tmp_path, cloud, members, now):
    import lifecycle
    import yaml

    from rackforge import registry
    from rackforge.kvstore import MemoryKV
    from rackforge.nodeagent import tasks
    kv = MemoryKV()
    reg = registry.NodeRegistry(kv)
    for i, name in enumerate(members):
        lifecycle.create(reg, "active", name=name, macs=["52:54:00:00:01:%02x" % i])
    clouds = tmp_path / "etc/openstack/clouds.yaml"
    clouds.parent.mkdir(parents=True)
    clouds.write_text(yaml.safe_dump({"clouds": {"rackforge": {"auth": {"password": "pw"}}}}))
    ran = []

    def run(argv, **kw):
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")
    os_ = openstack.OpenStack("n1", kv, run=run, root=tmp_path, urlopen=cloud,
                              clock=lambda: now[0])
    ctx = SimpleNamespace(dry_run=False, view=view(), kv=kv,
                          tasks=tasks.Tasks(kv, "n1", lease=None, version="1"))
    return os_, ctx, ran


def test_a_departed_hosts_records_are_deleted_once_by_one_controller(tmp_path):
    """node4 left the cluster (a factory reset): its down compute service, agent and volume
    service go; node5's, up though unregistered, and node2's down conductor (a node of
    the cluster, rebooting perhaps) stay."""
    cloud, now = FakeCloud(), [1000.0]
    os_, ctx, ran = forgetter(tmp_path, cloud, ["node1", "node2", "node3"], now)
    actions = os_.forget_step(ctx)
    assert [a.detail for a in actions] == [
        "deleted OVN Controller agent@node4, cinder-volume@node4@rbd, nova-compute@node4 "
        "(their hosts left the cluster)"]
    assert cloud.deleted == ["http://vip:9696/v2.0/agents/a1",
                             "http://vip:8774/v2.1/os-services/2"]
    assert ran == [["runuser", "-u", "cinder", "--", "cinder-manage", "service", "remove",
                    "cinder-volume", "node4@rbd"]]
    # not looked for again within five minutes, whatever the cloud says
    cloud.nova.append({"id": 99, "binary": "nova-compute", "host": "node6", "state": "down"})
    now[0] += 60
    assert os_.forget_step(ctx) == [] and len(cloud.deleted) == 2
    # then it is (a record already gone meanwhile is fine), and the task runs again
    cloud.volume = []
    now[0] += openstack.OpenStack.FORGET_EVERY
    actions = os_.forget_step(ctx)
    assert cloud.deleted[-1] == "http://vip:8774/v2.1/os-services/99"
    assert "nova-compute@node6" in actions[0].detail
    # node4 joined again and left again: the same labels, new records: deleted again
    cloud.nova = [{"id": 7, "binary": "nova-compute", "host": "node4", "state": "down"}]
    now[0] += openstack.OpenStack.FORGET_EVERY
    assert os_.forget_step(ctx) and cloud.deleted[-1] == "http://vip:8774/v2.1/os-services/7"


def test_a_record_nova_refuses_to_delete_leaves_the_others_deleted_and_is_retried(
        tmp_path, caplog):
    cloud, now = FakeCloud(), [1000.0]
    cloud.nova.append({"id": 98, "binary": "nova-compute", "host": "node6", "state": "down"})
    os_, ctx, ran = forgetter(tmp_path, cloud, ["node1", "node2", "node3"], now)
    assert os_.forget_step(ctx) == []           # not done: the task failed
    assert "http://vip:8774/v2.1/os-services/2" in cloud.deleted        # node4's went
    assert "nova-compute@node6" in caplog.text and "answered 409" in caplog.text
    assert ctx.tasks.claimant("openstack-forget-hosts") is None         # claim released
    cloud.volume = []                                   # cinder-manage removed it
    cloud.nova[-1]["id"] = 97                           # its VMs deleted: deletable now
    now[0] += openstack.OpenStack.FORGET_EVERY
    actions = os_.forget_step(ctx)
    assert [a.detail for a in actions] == ["deleted nova-compute@node6 (their hosts left "
                                           "the cluster)"]
    assert cloud.deleted[-1] == "http://vip:8774/v2.1/os-services/97"


def test_nothing_departed_nothing_deleted_and_a_cloud_away_is_no_error(tmp_path):
    cloud, now = FakeCloud(), [1000.0]
    os_, ctx, ran = forgetter(tmp_path, cloud, ["node1", "node2", "node3", "node4"], now)
    assert os_.forget_step(ctx) == [] and cloud.deleted == [] and ran == []

    def refuse(req, timeout=None):
        raise urllib.error.URLError("Connection refused")
    os_.urlopen = refuse
    now[0] += openstack.OpenStack.FORGET_EVERY
    assert os_.forget_step(ctx) == []
