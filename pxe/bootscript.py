"""What a machine boots when it asks the seed, decided by its MAC in the node registry.

Each node state boots exactly one way (:data:`rackforge.states.BOOT`):

- an unknown MAC, and ``discovered``, ``enrolled``, ``live`` and ``failed``
  nodes get the **discovery** boot: the live appliance, which inventories the
  machine and never installs or joins on its own;
- an ``installing`` node, and only that one, gets the **install** boot: the
  live appliance told to write itself to disk;
- ``installed``, ``joining``, ``active`` and ``maintenance`` nodes boot their
  **local** disk, so an installed node never loops back into the installer
  (PITFALLS.md), not even when it reboots in the middle of its join.

The kernel command line carries what the node needs to find the seed and
nothing secret: the seed's address, the boot server URL, the cluster id, the
mode and the node id; an install or a discovery boot also the join service's
URL and the cluster CA's pin (:func:`install_args`), with which the installer
asks the install API for its answers and join token, and the live appliance
reports the machine to the discovery API (``bringup/discoverapi.py``), both
over pinned TLS.  Never the token.
"""

import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from rackforge import bundle, kernelargs, keys, states

TEMPLATES = Path(__file__).parent / "templates"
CONSOLE_ARGS = "console=tty0 console=ttyS0,115200n8"


@dataclass(frozen=True)
class Decision:
    kind: str           # "discover", "install" or "local"
    node: str = None    # node name, if the MAC is known
    state: str = None


def decide(node):
    """The :class:`Decision` for a registry node (or None: an unknown MAC): what the
    node's state says it boots (:data:`rackforge.states.BOOT`), and nothing else."""
    if node is None:
        return Decision(states.DISCOVER)
    return Decision(states.boot(node.state), node.name, node.state)


#: the boots whose command line carries the join service's URL and the CA pin
ASKS_THE_SEED = (states.INSTALL, states.DISCOVER)


def kernel_args(decision, seed, base_url, cluster, node_id=None, join=None, ca=None):
    """The ``rackforge.*`` words; ``join`` and ``ca`` only on an install or a discovery
    boot (:data:`ASKS_THE_SEED`), never on a local one."""
    asks = decision.kind in ASKS_THE_SEED
    return kernelargs.format(mode=decision.kind, seed=seed, server=base_url, cluster=cluster,
                             node=node_id or None, join=join if asks else None,
                             ca=ca if asks else None)


def install_args(kv, seed):
    """``(join URL, CA pin)`` for an install or a discovery boot, from the cluster
    record: the join endpoint on the seed's address if there is one, else the first;
    None for what the record does not hold (``rackforge rack up`` checks both before it
    installs; a discovery boot without them records nothing)."""
    entry = kv.get(keys.CLUSTER)
    try:
        record = json.loads(entry.value) if entry is not None else {}
        urls = [u for u in record.get("join_endpoints") or [] if isinstance(u, str)]
        pin = record.get("ca_sha256")
    except (ValueError, AttributeError):
        return None, None
    here = [u for u in urls if urllib.parse.urlsplit(u).hostname == seed]
    url = (here or urls or [None])[0]
    return url, pin if isinstance(pin, str) else None


class ScriptRenderer:
    """Renders the chain script, the local-boot script and the bundle's live script."""

    def __init__(self, bundle_template):
        import jinja2

        self._env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                                       undefined=jinja2.StrictUndefined,
                                       keep_trailing_newline=True)
        # the bundle's own template (images/<profile>/pxe/boot.ipxe.j2) boots the live system
        self._live = self._env.from_string(Path(bundle_template).read_text())

    def chain(self, base_url, server):
        return self._env.get_template("chain.ipxe.j2").render(base_url=base_url, server=server)

    def retry(self, base_url, reason):
        """A script that waits and starts over: the seed cannot decide right now."""
        return self._env.get_template("retry.ipxe.j2").render(base_url=base_url, reason=reason)

    def for_node(self, decision, base_url, bundle_url, seed, cluster, node_id=None,
                 join=None, ca=None):
        if decision.kind == "local":
            return self._env.get_template("local.ipxe.j2").render(node=decision.node,
                                                                  state=decision.state)
        return self._live.render(**bundle.template_context(
            bundle_url, CONSOLE_ARGS, kernel_args(decision, seed, base_url, cluster, node_id,
                                                  join, ca)))
