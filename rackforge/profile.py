"""Profiles: what an appliance image holds and how its rack is laid out.

A profile is a YAML file in ``profiles/``.  ``extends: NAME`` makes it a
variant of another profile in the same directory that states only what
differs: mappings merge key by key, lists and scalars replace the parent's,
and ``elements`` and ``packages`` may be given as ``{add: [...], remove:
[...]}`` relative to the parent's list.

Checking happens in two passes.  Every file of the chain is checked on its
own (``rackforge.schema``), so each problem names its own file and line; if
all files are sound, the merged result is checked for what only the whole can
show (required keys, add/remove against the parent, elements that exist).
Each pass reports every problem it finds, one line each.
"""

import copy
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from rackforge import errors, paths, schema, yamlfile
from rackforge.schema import Problem, shown

DEFAULT_PROFILE = "hci"
REQUIRED = ("distro", "elements", "outputs")
DELTA_KEYS = ("elements", "packages")


class ProfileInvalid(errors.ConfigError):
    """One or more problems in a profile.

    ``lines`` holds one line per problem (``FILE:LINE: key: problem``), the
    first ``errors.MAX_LINES`` of them and then "... and N more";
    ``str()`` joins them with newlines and the CLI prints one per line.
    """

    def __init__(self, problems):
        self.lines = errors.capped(" ".join(str(p).split()) for p in problems)
        super().__init__(self.lines[0] if self.lines else "invalid profile")
        self.args = ("\n".join(self.lines),)


@dataclass(frozen=True)
class Distro:
    name: str
    release: str


@dataclass(frozen=True)
class DiskSettings:
    esp_mib: int = 128
    root_free_mib: int = 512


@dataclass(frozen=True)
class BuildSettings:
    min_free_gib: int = 10


# What a merged profile gets for the keys it leaves out (deep-merged under it).
DEFAULTS = {
    "description": "",
    "packages": [],
    "cluster": {"controllers": 3},
    "roles": {},
    "network": {"management": {"interface": "auto", "mode": "dhcp"}},
    "storage": {"wipe": "never", "min_disk_gib": 20},
    "ceph": {},
    "openstack": {},
    "disk": dataclasses.asdict(DiskSettings()),
    "build": dataclasses.asdict(BuildSettings()),
}


@dataclass(frozen=True)
class Profile:
    """A loaded, merged and validated profile; mappings are read-only views."""

    name: str
    path: Path              # the leaf file
    chain: tuple            # profile names, leaf first: ("aio", "hci")
    description: str
    distro: Distro
    elements: tuple
    packages: tuple
    outputs: tuple
    cluster: Mapping
    roles: Mapping
    network: Mapping
    storage: Mapping
    ceph: Mapping = dataclasses.field(default_factory=dict)
    openstack: Mapping = dataclasses.field(default_factory=dict)
    disk: DiskSettings = DiskSettings()
    build: BuildSettings = BuildSettings()

    def as_dict(self):
        """The merged profile with defaults applied, as plain JSON- and YAML-safe data."""
        return {
            "name": self.name,
            "description": self.description,
            "distro": dataclasses.asdict(self.distro),
            "elements": list(self.elements),
            "packages": list(self.packages),
            "cluster": _thaw(self.cluster),
            "roles": _thaw(self.roles),
            "network": _thaw(self.network),
            "storage": _thaw(self.storage),
            "ceph": _thaw(self.ceph),
            "openstack": _thaw(self.openstack),
            "outputs": list(self.outputs),
            "disk": dataclasses.asdict(self.disk),
            "build": dataclasses.asdict(self.build),
        }


def _freeze(value):
    """Dicts become read-only mappings and lists tuples, all the way down."""
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value):
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


# -- finding things ----------------------------------------------------------
def element_search_path():
    """Where elements are looked up: ours, then ELEMENTS_PATH, then diskimage-builder's."""
    dirs = [paths.elements_dir()]
    dirs += [Path(p) for p in os.environ.get("ELEMENTS_PATH", "").split(":") if p]
    try:
        import diskimage_builder
    except ImportError:
        return dirs
    return dirs + [Path(diskimage_builder.__file__).parent / "elements"]


def _profile_file(name_or_path):
    """The file of a profile name (in the profiles directory) or of a path."""
    text = os.fspath(name_or_path)
    if "/" in text or text.endswith((".yaml", ".yml")):
        path = Path(text)
        if not path.is_file():
            raise errors.ConfigError("profile file %s does not exist or is not a regular file; "
                                     "give a profile name "
                                     "or the path of a profile YAML file" % path)
        return path
    path = paths.profiles_dir() / ("%s.yaml" % text)
    if not path.is_file():
        raise errors.UnknownProfile(name=text, searched=shown(paths.profiles_dir()))
    return path


def list_profiles():
    """``[(name, description)]`` of the profiles in the profiles directory, sorted by name."""
    found = []
    for path in sorted(paths.profiles_dir().glob("*.yaml")):
        try:
            data = yamlfile.load(path)
            desc = data.get("description", "") if isinstance(data, dict) else ""
        except (OSError, errors.RackforgeError):
            desc = "(invalid YAML: run 'rackforge profile validate %s')" % path.stem
        desc = desc if isinstance(desc, str) else ""
        found.append((path.stem, errors.printable(" ".join(desc.split()))))
    return found


# -- pass 1: each file of the chain on its own --------------------------------
@dataclass(frozen=True)
class _Layer:
    name: str
    path: Path
    data: dict
    lines: dict


def _read_chain(path):
    """``(layers leaf first, problems)`` of the file at ``path`` and all it extends.

    A file whose ``extends`` is sound is followed even if the file has other
    problems, so one run reports the problems of the whole chain.
    """
    layers, problems = [], []
    while True:
        doc = schema.read(path)
        problems += doc.problems
        if doc.data is None:
            return layers, problems
        layer = _Layer(path.stem, path, doc.data, doc.lines)
        layers.append(layer)
        parent = layer.data.get("extends")
        if not isinstance(parent, str) or any(p.key == "extends" for p in doc.problems):
            return layers, problems
        seen = [each.name for each in layers]
        if parent in seen:
            problems.append(Problem(path, layer.lines["extends"], "extends",
                                    "circular: %s" % " -> ".join(seen + [parent])))
            return layers, problems
        path = path.parent / ("%s.yaml" % parent)
        if not path.is_file():
            problems.append(Problem(layer.path, layer.lines["extends"], "extends",
                                    "no profile '%s': no %s.yaml in %s"
                                    % (parent, parent, shown(layer.path.parent))))
            return layers, problems


# -- merging -------------------------------------------------------------------
def _apply_delta(parent_list, given):
    """The child's list, or the parent's list changed by ``{add, remove}``."""
    if isinstance(given, list):
        return list(given)
    remove = given.get("remove") or []
    result = [x for x in parent_list if x not in remove]
    return result + [x for x in given.get("add") or [] if x not in result]


def _merge(base, over):
    """``over`` on top of ``base``: mappings merge deeply, everything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if key in DELTA_KEYS:
            out[key] = _apply_delta(base.get(key) or [], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _delta_problems(parent_list, layer, key):
    """What is wrong with ``layer``'s ``{add, remove}`` for ``key`` against the parent's list."""
    given = layer.data[key]
    if parent_list is None:
        return [Problem(layer.path, layer.lines[key], key,
                        "add/remove needs a parent profile (extends) that sets %s" % key)]
    problems = []
    remove = given.get("remove") or []
    for i, item in enumerate(remove):
        if item not in parent_list:
            sub = "%s.remove[%d]" % (key, i)
            problems.append(Problem(layer.path, layer.lines[sub], sub,
                                    "%r is not in the parent's %s" % (item, key)))
    for i, item in enumerate(given.get("add") or []):
        if item in parent_list and item not in remove:
            sub = "%s.add[%d]" % (key, i)
            problems.append(Problem(layer.path, layer.lines[sub], sub,
                                    "%r is already in the parent's %s" % (item, key)))
    return problems


def _merge_chain(layers):
    """``(merged data, problems)``: the layers applied root first, ``extends`` dropped."""
    merged, problems = {}, []
    for depth, layer in enumerate(reversed(layers)):
        for key in DELTA_KEYS:
            if isinstance(layer.data.get(key), dict):
                # under a parent, a list the parents leave out has its default ([] packages)
                parent_list = merged.get(key, DEFAULTS.get(key)) if depth else None
                problems += _delta_problems(parent_list, layer, key)
        merged = _merge(merged, layer.data)
    merged.pop("extends", None)
    return merged, problems


# -- pass 2: the merged profile ------------------------------------------------
def _where(layers, key):
    """``(path, line)`` of the leaf-most layer that sets ``key``."""
    for layer in layers:
        if key in layer.lines:
            return layer.path, layer.lines[key]
    return layers[0].path, layers[0].lines[""]


def _origin(layers, key, value):
    """``(path, line, dotted key)`` where the item ``value`` of the merged list ``key`` is set."""
    for layer in layers:
        given, name = layer.data.get(key), key
        if isinstance(given, dict):
            given, name = given.get("add") or [], key + ".add"
        if isinstance(given, list) and value in given:
            item = "%s[%d]" % (name, given.index(value))
            return layer.path, layer.lines[item], item
    path, line = _where(layers, key)
    return path, line, key


def _element_problems(layers, elements):
    search = element_search_path()
    problems = []
    for element in elements:
        if not any((d / element).is_dir() for d in search):
            path, line, key = _origin(layers, "elements", element)
            problems.append(Problem(path, line, key, "element %r not found in ELEMENTS_PATH (%s)"
                                    % (element, ", ".join(shown(d) + "/" for d in search))))
    return problems


def _check_merged(layers, data):
    """Problems only the merged profile can show; [] if none."""
    leaf = layers[0]
    problems = [Problem(leaf.path, leaf.lines[""], key,
                        "missing; the profile (or one it extends) must set it")
                for key in REQUIRED if key not in data]
    if "distro" in data:
        path, line = _where(layers, "distro")
        problems += [Problem(path, line, "distro." + sub, "missing")
                     for sub in ("name", "release") if sub not in data["distro"]]
    return problems + _element_problems(layers, data.get("elements", []))


def _profile(path, layers, data):
    data = _merge(copy.deepcopy(DEFAULTS), data)
    return Profile(
        name=path.stem, path=path, chain=tuple(layer.name for layer in layers),
        description=data["description"], distro=Distro(**data["distro"]),
        elements=tuple(data["elements"]), packages=tuple(data["packages"]),
        outputs=tuple(data["outputs"]),
        cluster=_freeze(data["cluster"]), roles=_freeze(data["roles"]),
        network=_freeze(data["network"]), storage=_freeze(data["storage"]),
        ceph=_freeze(data["ceph"]), openstack=_freeze(data["openstack"]),
        disk=DiskSettings(**data["disk"]),
        build=BuildSettings(**data["build"]))


def load_profile(name_or_path):
    """Load, merge and validate a profile by name (in the profiles directory) or path.

    Raises ``UnknownProfile`` for a name with no file, ``ProfileInvalid``
    with every problem found otherwise.
    """
    path = _profile_file(name_or_path)
    layers, problems = _read_chain(path)
    if problems:
        raise ProfileInvalid(problems)
    data, problems = _merge_chain(layers)
    problems += _check_merged(layers, data)
    if problems:
        raise ProfileInvalid(problems)
    return _profile(path, layers, data)
