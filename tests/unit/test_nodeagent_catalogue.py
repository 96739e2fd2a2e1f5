"""The catalogue is data: every record valid, its templates there, no cycle; and a broken
record is one line naming it."""

from pathlib import Path

import pytest

from rackforge.nodeagent import catalogue, hooks


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
