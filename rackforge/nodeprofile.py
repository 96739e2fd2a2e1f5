"""The profile an image was built from, as the node reads it at first boot.

The image build writes the merged profile to ``/usr/lib/rackforge/profile.json``
(element ``rackforge-base``); first boot and the join service take the
cluster policy (``cluster.controllers``) and the storage policy
(``storage.min_disk_gib``, ``storage.wipe``) from it.  ``$RACKFORGE_NODE_PROFILE``
points elsewhere (tests).  Without the file the built-in defaults apply.
"""

import json
import os
from pathlib import Path
from types import SimpleNamespace

from rackforge import errors
from rackforge.profile import DEFAULTS

DEFAULT_PATH = "/usr/lib/rackforge/profile.json"


def path():
    return Path(os.environ.get("RACKFORGE_NODE_PROFILE", DEFAULT_PATH))


def load():
    """``SimpleNamespace(name, cluster, storage, ceph, agent, openstack, network)`` of this node's
    image."""
    where = path()
    try:
        data = json.loads(where.read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError) as exc:
        raise errors.ConfigError("%s is unreadable (%s); rebuild the image or remove the "
                                 "file to use the defaults" % (where, exc)) from None
    return SimpleNamespace(
        name=data.get("name", "unknown"),
        cluster=dict(DEFAULTS["cluster"], **(data.get("cluster") or {})),
        storage=dict(DEFAULTS["storage"], **(data.get("storage") or {})),
        ceph=dict(data.get("ceph") or {}),
        agent=dict(data.get("agent") or {}),
        openstack=dict(data.get("openstack") or {}),
        network=data.get("network") or DEFAULTS["network"])
