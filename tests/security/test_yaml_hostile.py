"""Hostile and careless YAML against every YAML reader (issue "Hardening", input parsing).

Profiles (``rackforge profile validate``, ``schema.read``, ``load_profile``,
``list_profiles``) and the node's bootstrap file (``bootstrap.load``,
``rackforge firstboot run`` with its console banner) must answer anything with
one line naming the file (and line and key where known), in bounded time and
memory, and the bootstrap side must never repeat a value from the file.

The worst inputs (an alias bomb, deep nesting, a FIFO, /dev/zero) run the real
command in a child process under an address-space limit, so a regression
fails the test instead of taking the machine's memory.  Everything else runs
in-process: explicit cases, then hypothesis-generated documents with anchors,
aliases, merge keys, tags and deep nesting, each under a time and
``tracemalloc`` bound.  No service, no root, a few seconds.
"""

import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rackforge import errors, profile, schema, yamlfile
from rackforge.firstboot import bootstrap, netspec

SECRET = "0123456789abcdef"
TOKEN = "abc123." + SECRET
MEMORY_LIMIT = 1 << 30          # the child's address space: a bomb dies well before 2 GiB
TIME_LIMIT = 60                 # the child's wall clock; a FIFO used to hang here for ever
PEAK = 64 << 20                 # in-process: tracemalloc peak per document
SECONDS = 5.0                   # in-process: per reader and document (tracemalloc on)

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    "%s: &%s [%s]\n" % (chr(98 + i), chr(98 + i), ", ".join(["*" + chr(97 + i)] * 10))
    for i in range(8))

# name -> file content (bytes); each is also a bootstrap file with a secret nearby
HOSTILE = {
    "alias-bomb": BOMB.encode(),
    "recursive-list": b"seed: true\ncluster: &a [*a]\n",
    "recursive-map": b"seed: true\ncluster: a\nmanagement: &m {bond: *m}\n",
    "deep-nesting": b"seed: true\ncluster: " + b"[" * 20000 + b"]" * 20000 + b"\n",
    "deep-mapping": b"seed: true\ncluster: " + b"{a: " * 5000 + b"\n",
    "invalid-date": b"seed: true\ncluster: a\nrole: !!timestamp 2024-13-45\n",
    "bad-integer": b"seed: true\ncluster: 0b_\n",
    "huge-integer": b"seed: true\ncluster: " + b"9" * 20000 + b"\n",
    "not-utf8": b"seed: true\ncluster: caf\xe9\n",
    "nul-byte": b"seed: true\ncluster: a\x00\n",
    "list-key": b"seed: true\ncluster: a\n? [x, y]\n: 1\n",
    "unknown-tag": ("seed: true\ncluster: a\nrole: !%s x\n" % TOKEN).encode(),
    "escapes": b'seed: true\ncluster: a\n"\\e]0;owned\\a\\e[2J": 1\n',
    "token-as-key": ("seed: true\ncluster: a\nmanagement: {%s: 1}\n" % TOKEN).encode(),
    "token-as-alias": ("seed: true\ncluster: &%s a\nrole: *%s\n" % (SECRET, SECRET)).encode(),
    "many-keys": b"seed: true\ncluster: a\n" + b"".join(
        b"k%06d: 1\n" % i for i in range(200000)),
}


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def rackforge(args, tmp_path, **env):
    """The real command in a child under the memory and time limits."""
    environ = dict(os.environ, RACKFORGE_STATE=str(tmp_path / "state"),
                   RACKFORGE_CONFIG=str(tmp_path / "etc"),
                   RACKFORGE_ISSUE_DIR=str(tmp_path / "issue.d"), **env)
    environ.pop("JOURNAL_STREAM", None)
    environ.pop("INVOCATION_ID", None)
    return subprocess.run([sys.executable, "-m", "rackforge"] + args, env=environ,
                          preexec_fn=limit_memory, capture_output=True, text=True,
                          timeout=TIME_LIMIT, stdin=subprocess.DEVNULL)


def hostile_file(tmp_path, name):
    if name == "fifo":
        path = tmp_path / "fifo.yaml"
        os.mkfifo(path)
        return path
    if name == "dev-zero":
        return Path("/dev/zero")
    path = tmp_path / ("%s.yaml" % name)
    path.write_bytes(HOSTILE[name])
    return path


CHILD_CASES = ["alias-bomb", "deep-nesting", "fifo", "dev-zero", "many-keys"]


@pytest.mark.parametrize("name", CHILD_CASES)
def test_profile_validate_answers_in_one_line_within_bounds(tmp_path, name):
    path = hostile_file(tmp_path, name)
    if name == "dev-zero":
        (tmp_path / "zero.yaml").symlink_to(path)
        path = tmp_path / "zero.yaml"
    res = rackforge(["profile", "validate", str(path), "minimal"], tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rackforge: error: ") and str(path) in lines[0]
    assert res.stdout == "minimal: valid\n"     # and the next profile is still checked


@pytest.mark.parametrize("name", CHILD_CASES)
def test_firstboot_run_answers_and_writes_its_banner_within_bounds(tmp_path, name):
    path = hostile_file(tmp_path, name)
    res = rackforge(["firstboot", "run"], tmp_path, RACKFORGE_BOOTSTRAP=str(path))
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr == ""
    out = res.stdout.splitlines()
    assert len(out) == 2 and out[1].startswith("rackforge-firstboot: not joined: bootstrap "
                                               "file %s" % path)
    banner = (tmp_path / "issue.d" / "rackforge-firstboot.issue").read_text()
    assert banner.startswith("rackforge first boot: not joined: bootstrap file %s" % path)


# -- every reader, in-process, on each hostile file -------------------------------------
def readers(path):
    """Each YAML reader on ``path``: (name, call)."""
    return [
        ("yamlfile operator", lambda: yamlfile.load(path)),
        ("yamlfile node", lambda: yamlfile.load(path, yamlfile.NODE)),
        ("schema.read", lambda: schema.read(path)),
        ("load_profile", lambda: profile.load_profile(path)),
        ("bootstrap.load", lambda: bootstrap.load(path, cmdline="")),
    ]


def check_reader(name, call):
    """Run one reader; returns its error line or None.  Fails on anything but data or
    one RackforgeError line, or past the time and memory bounds."""
    tracemalloc.start()
    start = time.monotonic()
    try:
        result = call()
    except errors.RackforgeError as e:
        result = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    took = time.monotonic() - start
    assert took < SECONDS, "%s took %.1f s" % (name, took)
    assert peak < PEAK, "%s peaked at %d MiB" % (name, peak >> 20)
    if isinstance(result, schema.Document):
        lines = [str(p) for p in result.problems]
        assert all("\n" not in line and line.isprintable() for line in lines), lines
        return lines[0] if lines else None
    if isinstance(result, errors.RackforgeError):
        line = str(result)
        if isinstance(result, profile.ProfileInvalid):
            assert len(result.lines) <= errors.MAX_LINES + 1
            line = result.lines[0]
        else:
            assert "\n" not in line, (name, line)
        assert line.isprintable(), (name, line)
        return line
    return None


@pytest.mark.parametrize("name", sorted(set(HOSTILE) - {"alias-bomb", "many-keys"}))
def test_every_reader_answers_each_hostile_file_in_one_line(tmp_path, name):
    path = hostile_file(tmp_path, name)
    for reader, call in readers(path):
        line = check_reader(reader, call)
        if reader == "bootstrap.load":
            assert line and line.startswith("bootstrap file %s" % path), line
            assert SECRET not in line and "owned" not in line, line


def test_the_bootstrap_reader_refuses_a_fifo_at_once(tmp_path):
    path = hostile_file(tmp_path, "fifo")
    line = check_reader("bootstrap.load", lambda: bootstrap.load(path, cmdline=""))
    assert line == "bootstrap file %s: cannot read: not a regular file; fix the file (or " \
        "what wrote it)" % path


def test_a_bug_reading_the_bootstrap_file_still_writes_the_banner(tmp_path, monkeypatch,
                                                                  capsys):
    from rackforge.firstboot import cli as fb_cli

    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("RACKFORGE_BOOTSTRAP", str(tmp_path / "bootstrap.yaml"))
    monkeypatch.setenv("RACKFORGE_ISSUE_DIR", str(tmp_path / "issue.d"))

    def broken(*args, **kwargs):
        raise MemoryError()
    monkeypatch.setattr(bootstrap, "load", broken)
    with pytest.raises(MemoryError):
        fb_cli.cmd_firstboot_run(None)
    banner = (tmp_path / "issue.d" / fb_cli.BANNER).read_text()
    assert banner.startswith("rackforge first boot: not joined: reading the bootstrap file")


# -- hypothesis: generated documents ----------------------------------------------------
SCALARS = [
    "x", "seed", "true", "null", "~", "0", "-1", "0b_", "0x_", "0o_", "0b1", "0x1f", "017",
    "1_000", "1:30", "190:20:30", ".inf", "-.nan", "1e999", "2024-01-31", "2024-13-45",
    "2001-12-14t21:59:43.10-05:00", "2001-02-29", "9" * 400, "'quoted'", '"\\e[2J"',
    '"\\x00"', '"\\u202e"', "'%s'" % TOKEN, TOKEN, "10.0.0.5/24", "dhcp", "eno1",
    "https://a:1", "!!timestamp 2024-13-45", "!!int x", "!!bool maybe", "!!float x",
    "!!binary x", "!!binary '%'", "!!null x", "!!str", "!!set {a: 1}", "!!omap [a]",
    "!!pairs {a: 1}", "!!map [a]", "!!seq {a: 1}", "!unknown x", "!%s x" % TOKEN,
    "!!python/object/apply:os.system [true]", "|\n  block", ">\n  folded", "''",
]
KEYS = (sorted(bootstrap.TOP_KEYS | bootstrap.JOIN_KEYS | netspec.TOP_KEYS)
        + ["description", "distro", "elements", "packages", "cluster", "<<", "? [a]", TOKEN,
           "'\\e'", "1", "null", "2024-13-45"])


@st.composite
def documents(draw):
    """A YAML document as text: block or flow mappings and lists, anchors on any node,
    aliases to earlier anchors (and some to none), merge keys, tags, deep nesting."""
    anchors = []

    def node(depth, indent):
        kind = draw(st.sampled_from(["scalar"] * 3 + ["flowseq", "flowmap", "blockmap",
                                                      "blockseq", "alias", "deep"]))
        prefix = ""
        if kind not in ("alias", "deep") and draw(st.integers(0, 4)) == 0:
            name = "a%d" % len(anchors)
            anchors.append(name)
            prefix = "&%s " % name
        if depth > 6 or kind == "scalar":
            return prefix + draw(st.sampled_from(SCALARS))
        if kind == "alias":
            names = anchors + ["nope"]
            return "*" + draw(st.sampled_from(names))
        if kind == "deep":
            n = draw(st.sampled_from([5, 31, 32, 33, 200]))
            return "[" * n + "x" + "]" * n
        if kind == "flowseq":
            items = [node(depth + 1, indent) for _ in range(draw(st.integers(0, 4)))]
            return prefix + "[" + ", ".join(i.replace("\n", " ") for i in items) + "]"
        if kind == "flowmap":
            pairs = ["%s: %s" % (draw(st.sampled_from(KEYS)), node(depth + 1, indent)
                                 .replace("\n", " ")) for _ in range(draw(st.integers(0, 4)))]
            return prefix + "{" + ", ".join(pairs) + "}"
        pad = " " * (indent + 2)
        if kind == "blockseq":
            items = [node(depth + 1, indent + 2) for _ in range(draw(st.integers(1, 4)))]
            return prefix + "".join("\n%s- %s" % (pad, i) for i in items)
        pairs = []
        for _ in range(draw(st.integers(1, 5))):
            key = draw(st.sampled_from(KEYS))
            value = ("*" + draw(st.sampled_from(anchors))) if key == "<<" and anchors \
                else node(depth + 1, indent + 2)
            pairs.append("\n%s%s: %s" % (pad, key, value))
        return prefix + "".join(pairs)

    top = "".join("%s: %s\n" % (draw(st.sampled_from(KEYS)), node(0, -2))
                  for _ in range(draw(st.integers(1, 6))))
    return draw(st.sampled_from(["", "seed: true\n", "join: {token: %s}\n" % TOKEN])) + top


FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(documents())
def test_every_reader_answers_generated_documents(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("doc") / "doc.yaml"
    path.write_text(text)
    for reader, call in readers(path):
        line = check_reader(reader, call)
        if reader == "bootstrap.load" and line:
            assert SECRET not in line, line


@FUZZ
@given(st.binary(max_size=2000)
       | st.text(max_size=2000).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_every_reader_answers_arbitrary_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("doc") / "doc.yaml"
    path.write_bytes(data)
    for reader, call in readers(path):
        check_reader(reader, call)


# -- hypothesis: the parsed data, whatever shape it has ---------------------------------
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    | st.sampled_from(["dhcp", "10.0.0.5/24", "10.0.0.1", "eno1", "bond0", "mac:zz", TOKEN,
                       "https://a:1", "active-backup", "sha256:" + "a" * 64]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(KEYS + ["name", "mode", "members", "id", "link", "ports", "peer",
                                "port", "timeout", "miimon"]) | st.integers(), inner,
        max_size=5),
    max_leaves=30)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(VALUES)
def test_netspec_answers_any_shape_with_its_own_error(data):
    try:
        netspec.parse(data)
    except netspec.NetworkSpecError as e:
        assert "\n" not in str(e)
        assert SECRET not in str(netspec.without_values(e))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.dictionaries(st.sampled_from(sorted(bootstrap.TOP_KEYS)) | st.text(max_size=30),
                       VALUES, max_size=6))
def test_bootstrap_parse_answers_any_shape_without_echoing(data):
    try:
        bootstrap.parse(data, "b.yaml")
    except bootstrap.BootstrapError as e:
        assert "\n" not in str(e) and SECRET not in str(e)
