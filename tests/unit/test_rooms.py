"""The rooms keep their boundaries: nothing that runs on a node imports a build-side room.

Build-side rooms (the image pipeline, the virtual rack) are not installed on
nodes (``images/rootfs.py``: ``BUILD_SIDE``), so a node-side module that
imported one, even lazily inside a function, would fail there.  Every import
statement of every node-side module is read (``ast``), top-level or not.
"""

import ast
from pathlib import Path

import pytest

from rackforge.images import rootfs

REPO = Path(__file__).resolve().parents[2]
NODE_SIDE = ("rackforge", "bmc", "bringup", "cluster", "firstboot", "installer", "nodeagent", "pxe")
BUILD_SIDE = tuple("rackforge.%s" % room for room in rootfs.BUILD_SIDE)


def imported_modules(path):
    """Every module name an ``import`` or ``from ... import`` in ``path`` names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:     # from rackforge import images
                yield node.lineno, "%s.%s" % (node.module, alias.name)


def node_side_files():
    for room in NODE_SIDE:
        yield from sorted((REPO / room).rglob("*.py"))


def test_the_build_side_rooms_are_the_ones_the_image_leaves_out():
    assert set(BUILD_SIDE) == {"rackforge.images", "rackforge.virt"}


@pytest.mark.parametrize("path", list(node_side_files()), ids=lambda p: str(p.relative_to(REPO)))
def test_no_node_side_module_imports_a_build_side_room(path):
    bad = ["%s:%d imports %s" % (path.relative_to(REPO), line, name)
           for line, name in imported_modules(path)
           if any(name == b or name.startswith(b + ".") for b in BUILD_SIDE)]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_lazy_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from rackforge.images import pipeline\n"
                      "    import rackforge.virt.rack\n    from rackforge import virt\n")
    names = [name for _, name in imported_modules(sample)]
    assert "rackforge.images" in names and "rackforge.virt.rack" in names
    assert "rackforge.virt" in names
