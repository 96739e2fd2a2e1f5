"""BMC credentials against careless and hostile input (issue "Hardening", Low).

``--password-file`` on a FIFO used to hang and on /dev/zero to read until the
memory ran out; a password typed as ``--bmc`` was printed in the result table
and looked up in DNS.  The file cases run the real command in a child under a
time and address-space limit, so a regression fails instead of hanging the
run or taking the machine's memory.
"""

import os
import resource
import socket
import subprocess
import sys

import pytest

from rackforge import cli
from rackforge.bmc import cli as bmc_cli, credentials, drivers
from rackforge.bmc.fake import FakeDriver

MEMORY_LIMIT = 1 << 30
TIME_LIMIT = 30


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def power_status(tmp_path, password_file):
    env = dict(os.environ, RACKFORGE_STATE=str(tmp_path / "state"))
    env.pop(credentials.DEFAULT_PASSWORD_ENV, None)
    return subprocess.run(
        [sys.executable, "-m", "rackforge", "power", "status", "--bmc", "192.0.2.1",
         "--user", "admin", "--password-file", str(password_file)],
        env=env, preexec_fn=limit_memory, capture_output=True, text=True,
        timeout=TIME_LIMIT, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "big file", "directory"])
def test_a_password_file_that_is_no_small_regular_file_is_one_line_at_once(tmp_path, kind):
    path = tmp_path / "pw"
    if kind == "fifo":
        os.mkfifo(path)                 # nobody writes: a plain open() waits for ever
    elif kind == "/dev/zero":
        path = "/dev/zero"
    elif kind == "big file":
        with open(path, "wb") as f:
            f.truncate(64 << 20)        # sparse: 64 MiB of NUL, no password line in sight
    else:
        path.mkdir()
    res = power_status(tmp_path, path)
    assert res.returncode == 2 and res.stdout == ""
    why = {"big file": "larger than the %d-byte limit" % credentials.MAX_PASSWORD_FILE}
    assert res.stderr == "rackforge: error: cannot read the BMC password file %s: %s\n" % (
        path, why.get(kind, "not a regular file"))


@pytest.fixture
def lookups(monkeypatch):
    """Every name lookup made while the test runs (none is sent anywhere)."""
    made = []

    def refuse(host, *args, **kwargs):
        made.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "not looked up in tests")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "gethostbyname", refuse)
    return made


@pytest.mark.parametrize("typed", ["S3cr3t!pw", "Zebra Pw 7781", "pw:with:colons!",
                                   "https://admin:S3cr3t@10.0.0.1", "10.0.0.1:S3cr3t"])
@pytest.mark.parametrize("command", [["power", "status"], ["bmc", "inventory"],
                                     ["bmc", "enroll"]])
def test_a_password_typed_as_an_address_is_neither_printed_nor_looked_up(
        tmp_path, monkeypatch, capsys, lookups, typed, command):
    monkeypatch.setattr(drivers, "get_driver", lambda name: FakeDriver())
    monkeypatch.setattr(bmc_cli, "_connect_registry", lambda args: pytest.fail("registry"))
    monkeypatch.setenv(credentials.KEY_ENV, str(tmp_path / "cluster.key"))
    monkeypatch.setenv("PW", "the-real-password")
    if command[-1] == "enroll":
        argv = command + ["10.0.0.9", typed, "--user", "admin", "--password-env", "PW"]
    else:
        argv = command + ["--bmc", "10.0.0.9", "--bmc", typed, "--user", "admin",
                          "--password-env", "PW"]
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and len(err.splitlines()) == 1
    assert "argument 2 " in err
    assert "S3cr3t" not in err and "Zebra" not in err and "colons" not in err
    assert lookups == []
    assert not (tmp_path / "cluster.key").exists()      # nothing done before the refusal
