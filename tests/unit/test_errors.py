from rackforge import errors


def test_messages_are_one_line():
    e = errors.BuildFailed(step="mksquashfs", detail="no space\nleft on device", log="/x.log")
    assert str(e) == "mksquashfs failed: no space left on device; full log: /x.log"


def test_exit_codes():
    assert errors.UnknownProfile(name="x", searched="p").exit_code == 2
    assert errors.Interrupted(what="build").exit_code == 130
    assert errors.HostToolMissing(tool="t", install="i").exit_code == 1


def test_template_bug_does_not_hide_the_error():
    assert "missing host tool" in str(errors.HostToolMissing(tool="t"))


def test_an_os_error_reaches_the_operator_as_one_line(tmp_path, monkeypatch, capsys):
    """RACKFORGE_STATE=/proc/x rackforge cluster ca init used to end in a traceback."""
    from rackforge import cli

    monkeypatch.setenv("RACKFORGE_STATE", "/proc/x")
    rc = cli.main(["cluster", "ca", "init"])
    out, err = capsys.readouterr()
    assert rc == errors.FileProblem.exit_code
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("rackforge: error: /proc/x")


def test_a_bug_is_one_line_saying_where_the_detail_went(tmp_path, monkeypatch, capsys):
    from rackforge import cli
    from rackforge.cluster import cli as cluster_cli

    def broken(args):
        raise ValueError("an unexpected value")
    monkeypatch.setattr(cluster_cli, "cmd_ca_show", broken)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    rc = cli.main(["cluster", "ca", "show"])
    _, err = capsys.readouterr()
    assert rc == errors.Bug.exit_code and err.count("\n") == 1 and "Traceback" not in err
    logged, = tmp_path.glob("rackforge-error-*.log")
    assert str(logged) in err
    assert "ValueError: an unexpected value" in logged.read_text()


def test_ctrl_c_interrupts_even_when_inherited_ignored(tmp_path):
    """A build started from a background job of a shell (SIGINT ignored) still stops on
    Ctrl-C: the interrupted-build test once hung for that."""
    import signal
    import subprocess
    import sys
    import time

    script = ("import sys, time\n"
              "from rackforge import cli\n"
              "def slow(args):\n"
              "    print('ready', flush=True)\n"
              "    time.sleep(60)\n"
              "cli.cmd_profile_list = slow\n"
              "sys.exit(cli.main(['profile', 'list']))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert proc.stdout.readline().strip() == "ready"
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == errors.Interrupted.exit_code
    assert "interrupted" in err and time.monotonic() - start < 10
