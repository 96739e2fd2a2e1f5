"""``pxe serve``'s own parts: the status writer never stops serving; the open-file budget."""

import logging
import resource
import subprocess
import sys
import types

from rackforge import registry
from rackforge.pxe import service
from rackforge.pxe.dnsmasq import DnsmasqSupervisor


def services(tmp_path):
    iface = types.SimpleNamespace(name="br0", ip="10.0.0.1")
    return service.BootServices(iface, tmp_path / "bundle", registry.MemoryRegistry(),
                                workdir=tmp_path / "work")


def test_a_status_file_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, caplog):
    """'Too many open files' in the status writer aborted all of ``pxe serve``."""
    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path / "state"))
    (tmp_path / "state" / "pxe").mkdir(parents=True)
    srv = services(tmp_path)
    calls = []

    def no_files(path, data, mode=0o644):
        calls.append(path)
        if len(calls) <= 3:
            raise OSError(24, "Too many open files", str(path))
        return real(path, data, mode)
    real = service.atomic_write
    monkeypatch.setattr(service, "atomic_write", no_files)
    with caplog.at_level(logging.INFO, logger="rackforge.pxe"):
        for _ in range(4):
            srv.write_status()
    failures = [r for r in caplog.records if "not written" in r.getMessage()]
    assert len(failures) == 1 and "Too many open files" in failures[0].getMessage()
    assert failures[0].exc_info is None
    assert any("written again" in r.getMessage() for r in caplog.records)
    assert service.read_status()["interface"] == "br0"


def test_the_run_loop_survives_a_status_failure(tmp_path, monkeypatch):
    srv = services(tmp_path)
    monkeypatch.setattr(service, "STATUS_INTERVAL", 0.01)
    writes = []

    def failing(serving=True):
        writes.append(serving)
        if len(writes) >= 3:
            srv.request_stop()
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(srv, "status", lambda serving=True: failing(serving))
    monkeypatch.setenv("RACKFORGE_STATE", str(tmp_path / "state"))
    srv.run()            # returns once stopped; no exception escaped the loop
    assert len(writes) >= 3


def test_http_connections_fit_in_the_open_file_limit():
    assert service.http_connection_cap(1024) == (1024 - 512 - 128) // 2
    assert service.http_connection_cap(8192) == 1024
    assert service.http_connection_cap(100) == 16


def test_the_soft_open_file_limit_is_raised_to_the_hard_one():
    code = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096));"
            "from rackforge.pxe import service; print(service.raise_file_limit(),"
            " resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["4096", "4096"]
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 0


def test_dnsmasq_restart_that_cannot_fork_is_tried_again(tmp_path, monkeypatch, caplog):
    """The supervisor thread died on an OSError from the fork, and DHCP stayed down."""
    sup = DnsmasqSupervisor("port=0\n", tmp_path, "br0", binary="/bin/true")
    spawned = []

    def spawn():
        spawned.append(1)
        if len(spawned) == 1:
            raise OSError(24, "Too many open files")
        sup.proc = subprocess.Popen(["/bin/true"])
        sup._stopping.set()
    sup.proc = subprocess.Popen(["/bin/true"])
    monkeypatch.setattr(sup, "_spawn", spawn)
    monkeypatch.setattr("rackforge.pxe.dnsmasq.RESTART_DELAYS", (0,))
    with caplog.at_level(logging.WARNING, logger="rackforge.pxe.dhcp"):
        sup._watch()
    assert len(spawned) == 2 and sup.restarts == 2
    assert "not started: Too many open files" in caplog.text
