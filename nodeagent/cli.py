"""``rackforge nodeagent run``: the node agent its systemd unit starts.

Until the agent lands (see README.md) it logs one journal line and exits
cleanly, which leaves the unit inactive without an error.
"""

from rackforge import __version__


def add_commands(sub):
    p = sub.add_parser("nodeagent", help="the node agent (run by its systemd unit)")
    asub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    asub.add_parser("run", help="run the agent").set_defaults(func=cmd_run)


def cmd_run(args):
    print("rackforge-nodeagent: rackforge %s node agent: nothing to do yet, exiting"
          % __version__, flush=True)
    return 0
