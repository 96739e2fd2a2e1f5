"""The agent's commands never carry a secret on their command line (any local user reads
``/proc/*/cmdline``): the SQL that sets a password and the broker's passwords go on stdin."""

import subprocess

from rackforge.nodeagent import galera, rabbit

SECRET = "s3cret-value-from-the-keyring"


class Recorder:
    """subprocess.run as MariaDB and rabbitmqctl would answer it, recording each call."""

    def __init__(self):
        self.calls = []

    def __call__(self, argv, input=None, **kw):
        self.calls.append((list(argv), input))
        out = ""
        if argv[0] == "mariadb" and "wsrep" in (input or ""):
            out = "wsrep_cluster_status\tPrimary\nwsrep_local_state\t4\n"
        elif "list_users" in argv:
            out = '[{"user": "guest"}, {"user": "openstack"}]'
        return subprocess.CompletedProcess(argv, 0, out, "")


class View:
    name = "node1"


def test_passwords_go_on_stdin_never_in_argv():
    run = Recorder()
    context = {"secrets": {"mariadb-sst": SECRET, "rabbitmq-openstack": SECRET}}
    galera.Galera("n1", None, run=run).users(View(), None, context)
    rabbit.Rabbit("n1", run=run).users(View(), None, context)
    assert any(SECRET in (stdin or "") for _, stdin in run.calls if _[0] == "mariadb")
    assert any(SECRET in (stdin or "") for argv, stdin in run.calls
               if "change_password" in argv)
    for argv, _ in run.calls:
        assert not any(SECRET in arg for arg in argv), argv
