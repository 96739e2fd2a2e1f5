"""Profiles: what an appliance image holds and how its rack is laid out.

A profile is a YAML file in ``profiles/``.  ``extends: NAME`` makes it a
variant of another profile that states only what differs: mappings merge
key by key, other values replace the parent's, and ``elements`` and
``packages`` may be given as ``{add: [...], remove: [...]}`` relative to the
parent.  Every file of the chain is checked on its own (so each problem
names its own file and line), then the merged result is checked for what
only the whole can show (required keys, elements that exist).
"""

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rackforge import errors, paths
from rackforge.schema import (Enum, Int, List, Map, OneOf, Problem, Str, compose,
                              key_lines, validate)

DEFAULT_PROFILE = "hci"
ROLES = ("controller", "compute", "storage")
OUTPUTS = ("qcow2", "raw", "iso", "pxe")
REQUIRED = ("distro", "elements", "outputs")
DEB_PACKAGE = r"[a-z0-9][a-z0-9+.-]+"
ELEMENT_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


def _names(pattern, hint):
    return List(Str(pattern, hint))


def _list_or_delta(item):
    """A list, or ``{add: [...], remove: [...]}`` relative to the parent profile."""
    return OneOf(List(item), Map({"add": List(item), "remove": List(item)}))


ELEMENT = Str(ELEMENT_NAME, "an element name")
PACKAGE = Str(DEB_PACKAGE, "a Debian package name")

SCHEMA = Map({
    "description": Str(),
    "extends": Str(ELEMENT_NAME, "a profile name"),
    "distro": Map({"name": Enum("debian"), "release": Enum("bookworm", "trixie")}),
    "elements": _list_or_delta(ELEMENT),
    "packages": _list_or_delta(PACKAGE),
    "cluster": Map({"controllers": Int(1, 7, odd=True)}),
    "roles": Map({role: Map({"services": List(Str())}) for role in ROLES}),
    "network": Map({
        "management": Map({"interface": Str(), "mode": Enum("dhcp", "static")}),
        "bond": Map({"mode": Enum("active-backup", "802.3ad", "balance-alb")}),
        "vlan": Int(1, 4094),
    }),
    "storage": Map({"wipe": Enum("never", "force"), "min_disk_gib": Int(1, 1_000_000)}),
    "outputs": List(Enum(*OUTPUTS), non_empty=True),
    "disk": Map({"esp_mib": Int(64, 1024), "root_free_mib": Int(0, 65536)}),
    "build": Map({"min_free_gib": Int(1, 1000)}),
})

DEFAULTS = {
    "description": "",
    "packages": [],
    "cluster": {"controllers": 1},
    "roles": {},
    "network": {"management": {"interface": "auto", "mode": "dhcp"}},
    "storage": {"wipe": "never", "min_disk_gib": 20},
    "disk": {"esp_mib": 128, "root_free_mib": 512},
    "build": {"min_free_gib": 10},
}


class ProfileInvalid(errors.ConfigError):
    """One or more problems in a profile; ``str()`` has one problem per line."""

    def __init__(self, problems):
        self.lines = [str(p) for p in problems]
        errors.RackforgeError.__init__(self, self.lines[0])
        self.args = ("\n".join(self.lines),)


@dataclass(frozen=True)
class Distro:
    name: str
    release: str


@dataclass(frozen=True)
class DiskSettings:
    esp_mib: int
    root_free_mib: int


@dataclass(frozen=True)
class BuildSettings:
    min_free_gib: int


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    chain: tuple            # leaf first: ("aio", "hci")
    description: str
    distro: Distro
    elements: tuple
    packages: tuple
    outputs: tuple
    disk: DiskSettings
    build: BuildSettings
    data: dict = field(repr=False, compare=False)

    @property
    def cluster(self):
        return self.data["cluster"]

    @property
    def roles(self):
        return self.data["roles"]

    @property
    def network(self):
        return self.data["network"]

    @property
    def storage(self):
        return self.data["storage"]

    def as_dict(self):
        """The merged profile with defaults applied, as plain JSON-able data."""
        return copy.deepcopy(self.data)


# -- finding things ----------------------------------------------------------
def element_search_path():
    """Where elements are looked up: ours, then ELEMENTS_PATH, then diskimage-builder's."""
    dirs = [paths.elements_dir()]
    dirs += [Path(p) for p in os.environ.get("ELEMENTS_PATH", "").split(":") if p]
    try:
        import diskimage_builder
        dirs.append(Path(diskimage_builder.__file__).parent / "elements")
    except ImportError:
        pass
    return dirs


def _profile_file(name_or_path):
    if "/" in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        if not path.is_file():
            raise errors.ConfigError("profile file %s does not exist" % path)
        return path
    path = paths.profiles_dir() / ("%s.yaml" % name_or_path)
    if not path.is_file():
        raise errors.UnknownProfile(name=name_or_path, searched=paths.profiles_dir())
    return path


def list_profiles():
    """[(name, description)] of the profiles in the profiles directory, sorted."""
    found = []
    for path in sorted(paths.profiles_dir().glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text()) or {}
            desc = data.get("description", "") if isinstance(data, dict) else ""
        except yaml.YAMLError:
            desc = "(invalid YAML: run 'rackforge profile validate %s')" % path.stem
        found.append((path.stem, desc))
    return found


# -- loading -----------------------------------------------------------------
@dataclass
class _Layer:
    name: str
    path: Path
    data: dict
    lines: dict


def _read_layer(path):
    text = path.read_text()
    node, problem = compose(text, path)
    if problem:
        raise ProfileInvalid([problem])
    problems = validate(node, SCHEMA, path)
    if problems:
        raise ProfileInvalid(problems)
    return _Layer(path.stem, path, yaml.safe_load(text) or {}, key_lines(node))


def _chain(path):
    """Layers from the leaf up to the root of its ``extends`` chain."""
    layers = [_read_layer(path)]
    while "extends" in layers[-1].data:
        child = layers[-1]
        parent = child.data["extends"]
        seen = [layer.name for layer in layers]
        if parent in seen:
            raise ProfileInvalid([Problem(child.path, child.lines.get("extends", 0), "extends",
                                          "circular: %s" % " -> ".join(seen + [parent]))])
        ppath = child.path.parent / ("%s.yaml" % parent)
        if not ppath.is_file():
            raise ProfileInvalid([Problem(child.path, child.lines.get("extends", 0), "extends",
                                          "no profile %r in %s" % (parent, child.path.parent))])
        layers.append(_read_layer(ppath))
    return layers


def _apply_delta(parent_list, delta):
    if isinstance(delta, list):
        return list(delta)
    result = [x for x in parent_list if x not in (delta.get("remove") or [])]
    result += [x for x in (delta.get("add") or []) if x not in result]
    return result


def _merge(base, over):
    out = dict(base)
    for key, value in over.items():
        if key in ("elements", "packages"):
            out[key] = _apply_delta(base.get(key) or [], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _where(layers, key):
    """(file, line) of the leaf-most layer that sets ``key``."""
    for layer in layers:
        if key in layer.lines:
            return layer.path, layer.lines[key]
    return layers[0].path, 0


def _check_merged(layers, data):
    problems = []
    for key in REQUIRED:
        if key not in data:
            problems.append(Problem(layers[0].path, 0, key,
                                    "missing; every profile needs %s" % ", ".join(REQUIRED)))
    for sub in ("name", "release"):
        if "distro" in data and sub not in (data["distro"] or {}):
            path, line = _where(layers, "distro")
            problems.append(Problem(path, line, "distro." + sub, "missing"))
    for delta_key in ("elements", "packages"):
        if isinstance(data.get(delta_key), dict):
            path, line = _where(layers, delta_key)
            problems.append(Problem(path, line, delta_key,
                                    "add/remove needs a parent profile (extends)"))
    search = element_search_path()
    elements = data.get("elements")
    for i, element in enumerate(elements if isinstance(elements, list) else []):
        if isinstance(element, str) and not any((d / element).is_dir() for d in search):
            path, line = _where(layers, "elements")
            problems.append(Problem(path, line, "elements[%d]" % i,
                                    "element %r not found in %s"
                                    % (element, ":".join(map(str, search)))))
    if problems:
        raise ProfileInvalid(problems)


def _with_defaults(data):
    return _merge(copy.deepcopy(DEFAULTS), data)


def load_profile(name_or_path):
    """Load, merge and validate a profile; raises ProfileInvalid or UnknownProfile."""
    path = _profile_file(name_or_path)
    layers = _chain(path)
    merged = {}
    for layer in reversed(layers):
        merged = _merge(merged, layer.data)
    # a leaf's add/remove with no parent list to apply to is caught here
    if len(layers) == 1:
        for key in ("elements", "packages"):
            if isinstance(layers[0].data.get(key), dict):
                merged[key] = layers[0].data[key]
    _check_merged(layers, merged)
    merged.pop("extends", None)
    data = _with_defaults(merged)
    data["name"] = path.stem
    return Profile(
        name=path.stem, path=path, chain=tuple(layer.name for layer in layers),
        description=data["description"],
        distro=Distro(data["distro"]["name"], data["distro"]["release"]),
        elements=tuple(data["elements"]), packages=tuple(data["packages"]),
        outputs=tuple(data["outputs"]),
        disk=DiskSettings(**data["disk"]), build=BuildSettings(**data["build"]), data=data)
