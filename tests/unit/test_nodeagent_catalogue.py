"""The catalogue is data: every record valid, its templates there, no cycle; and a broken
record is one line naming it."""

from pathlib import Path

import pytest

from rackforge.nodeagent import catalogue, hooks, render, units


def test_the_real_catalogue_is_valid_and_ordered():
    cat = catalogue.load(**hooks.names())
    names = [s.name for s in cat.services]
    for svc in cat.services:
        for dep in svc.requires:
            assert names.index(dep) < names.index(svc.name), (dep, svc.name)
    assert {"mariadb", "rabbitmq", "memcached", "haproxy", "keepalived", "etcd",
            "join"} <= set(names)
    assert len(cat.version) == 16


def write(tmp_path, files):
    services = tmp_path / "services"
    templates = tmp_path / "templates"
    services.mkdir()
    (templates / "t").mkdir(parents=True)
    (templates / "t" / "ok.j2").write_text("x\n")
    (tmp_path / "secrets.yaml").write_text("- {name: s1, kind: password, readers: "
                                           "[controller]}\n")
    for name, text in files.items():
        (services / name).write_text(text)
    return dict(services_dir=services, templates=templates,
                secrets_file=tmp_path / "secrets.yaml")


@pytest.mark.parametrize("files, words", [
    ({"a.yaml": "name: a\nroles: [controller]\ncolour: red\n"}, "unknown key 'colour'"),
    ({"a.yaml": "name: a\nroles: [wizard]\n"}, "role 'wizard' is not one of"),
    ({"a.yaml": "name: a\nroles: [all]\nconfigs: [{template: t/none.j2, path: /x}]\n"},
     "template t/none.j2 is missing"),
    ({"a.yaml": "name: a\nroles: [all]\nsecrets: [s2]\n"}, "unknown secret 's2'"),
    ({"a.yaml": "name: a\nroles: [all]\nstart: magic\n"}, "start step 'magic'"),
    ({"a.yaml": "name: a\nroles: [all]\nrequires: [b]\n",
      "b.yaml": "name: b\nroles: [all]\nrequires: [a]\n"}, "cycle: a -> b -> a"),
    ({"a.yaml": "name: a\nroles: [all]\nrequires: [zz]\n"}, "requires 'zz'"),
    ({"a.yaml": "name: b\nroles: [all]\n"}, "differs from the file's"),
    ({"a.yaml": "name: a\nroles: [all]\nhealth: {type: tcp}\n"}, "health.port"),
    ({"a.yaml": "name: a\nroles: [all]\nhealth: {type: builtin, name: x}\n"},
     "builtin check 'x'"),
    ({"a.yaml": "name: a\nroles: [all]\nconfigs: [{template: t/ok.j2, path: /x, "
      "mode: '999'}]\n"}, "mode '999' is not octal"),
    ({"a.yaml": "name: a\nroles: [compute]\nsecrets: [s1]\n"},      # only controllers make one
     "secret s1 is used by no service of the controllers"),
])
def test_a_broken_record_is_one_line(tmp_path, files, words):
    with pytest.raises(catalogue.CatalogueError) as err:
        catalogue.load(**write(tmp_path, files), **hooks.names())
    assert words in str(err.value) and "\n" not in str(err.value)


def test_every_template_of_the_tree_is_used_by_a_record():
    cat = catalogue.load(**hooks.names())
    used = {c.template for s in cat.services for c in s.configs}
    present = {str(p.relative_to(catalogue.TEMPLATES_DIR))
               for p in Path(catalogue.TEMPLATES_DIR).rglob("*.j2")
               if not p.name.startswith("_")}      # _macros.j2: imported by the others
    assert present == used


SAMPLES = Path(__file__).parent / "samples" / "systemd"
PULLS = ("Wants", "Requires", "BindsTo", "Requisite", "Upholds")


def unit_sections(text):
    """``{section: {key: [words]}}`` of a unit file's ``Key=value`` lines (comments and
    blank lines skipped); the recorded sample names units as its sections."""
    out, current = {}, None
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("["):
            current = out.setdefault(line.strip("[]"), {})
            continue
        key, value = line.split("=", 1)
        current.setdefault(key, []).extend(value.split())
    return out


def recorded_units():
    """``{unit: {key: [names]}}`` from the recorded dependency lines of Debian 13's units."""
    return unit_sections((SAMPLES / "debian13-unit-deps.txt").read_text())


def pulled(deps):
    return {name for key in PULLS for name in deps.get(key, [])}


def test_a_compute_only_node_starts_no_unit_of_the_controllers():
    """Debian's nova-compute and metadata agent units want mysql, rabbitmq-server and
    keystone; a compute-only node that started them through these would run a database,
    a broker and an identity service of its own (and a factory reset would then refuse it
    for their data).  The catalogue writes those units whole: what a compute node's units
    pull in, as the node would load them, names no unit of a controller-only service."""
    cat = catalogue.load(**hooks.names())
    env = render.environment()
    debian = recorded_units()
    compute = cat.for_roles(["compute"])
    theirs = {u for s in cat.for_roles(["controller"]) if s not in compute for u in s.units}
    aliases = {alias: unit for unit, deps in debian.items() for alias in deps.get("Alias", [])}
    theirs |= {alias for alias, unit in aliases.items() if unit in theirs}
    assert {"mysql.service", "rabbitmq-server.service", "keystone.service"} <= theirs

    def loaded(svc, unit):
        for config in svc.configs:
            if config.path == "/etc/systemd/system/" + unit:     # ours wins over Debian's
                return unit_sections(render.render(env, config, {}))["Unit"]
        return debian[unit]

    assert pulled(debian["nova-compute.service"]) & theirs      # what this test would catch
    for svc in compute:
        for unit in svc.units:
            assert not pulled(loaded(svc, unit)) & theirs, (svc.name, unit)


def test_every_gated_unit_starts_only_when_the_agent_opened_its_gate():
    """The drop-in of each unit only the agent starts names the file the agent writes."""
    cat = catalogue.load(**hooks.names())
    env = render.environment()
    for unit in units.GATED:
        dropins = [c for svc in cat.services for c in svc.configs
                   if c.path.startswith("/etc/systemd/system/%s.d/" % unit)]
        assert dropins, unit
        texts = [render.render(env, c, {}) for c in dropins]
        assert any("ConditionPathExists=%s/%s\n" % (units.GATES, unit) in t
                   for t in texts), unit
