"""Recorded disk probes: wipefs and blkid output kept in tests/unit/samples/storage/
(``NAME.wipefs`` / ``NAME.blkid``: the tool's output, then a last line ``rc=N``), replayed
per device for the code that asks whether a disk holds data (firstboot's storage choice,
the installer's disk choice)."""

import subprocess
from pathlib import Path

import pytest

STORAGE = Path(__file__).resolve().parents[1] / "unit" / "samples" / "storage"


def recorded(name, tool):
    """``(exit status, output)`` of ``tool`` (wipefs or blkid) on recorded shape ``name``."""
    text = (STORAGE / ("%s.%s" % (name, tool))).read_text()
    body, _, rc = text.rstrip("\n").rpartition("\n")
    return int(rc.split("=")[1]), body


class Runner:
    """Replays a recorded probe per device (``{"/dev/sdb": "gpt"}``; others: ``empty``)
    and keeps every argv it was given."""

    def __init__(self, shapes=None):
        self.shapes, self.calls = shapes or {}, []

    def __call__(self, argv, **kwargs):
        self.calls.append(argv)
        tool = "wipefs" if argv[0] == "wipefs" else "blkid"
        return recorded(self.shapes.get(argv[-1], "empty"), tool)


@pytest.fixture(autouse=True)
def no_real_commands(monkeypatch):
    """Import it into a test module: any real command there fails the test (only recorded
    probes answer)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a unit test tried to run a real command: %r" % (args,))
    monkeypatch.setattr(subprocess, "Popen", refuse)
