"""The etcd key layout: every key rackforge reads or writes, in one table.

Every writer and every reader takes its keys from here, so the layout is
written once.  A name ending in ``/`` is a prefix (one key per item below
it); the others are single keys.  Values are JSON unless said otherwise.

====================  ===========================================  ==========================
name                  key                                          written by
====================  ===========================================  ==========================
CLUSTER               /rackforge/cluster                           the seed (name, join
                                                                   endpoints, CA pin)
NODES                 /rackforge/nodes/<node id>                   registry (every writer
                                                                   through compare-and-set)
MAC_INDEX             /rackforge/index/mac/<mac> -> node id        registry
NAME_INDEX            /rackforge/index/name/<name> -> node id      registry
BOOTS                 /rackforge/boots/<mac>                       the PXE service
TOKENS                /rackforge/tokens/<token id>                 ``cluster token``, joins
CONTROLLERS           /rackforge/roles/controllers                 role election
NODE_ROLES            /rackforge/roles/nodes/<node id>             role election
NODE_CERTS            /rackforge/pki/nodes/<node id>               the join service (PEM)
SECRETS               /rackforge/secrets/<name>                    secret store (sealed)
HEARTBEATS            /rackforge/heartbeats/<node id>              the node agent (leased)
HEALTH                /rackforge/health/<node id>/<service>        the node agent (leased)
TASKS                 /rackforge/tasks/<task>                      the node agent: done records
TASK_CLAIMS           /rackforge/claims/<task>                     the claimant's agent (leased)
GALERA                /rackforge/galera/                           recovery: positions, epoch
CEPH_MONS             /rackforge/ceph/mons/<name>                  each monitor once made
CEPH_OSDS             /rackforge/ceph/osds/<id>                    the OSD's node, on creation
CEPH_REQUESTS         /rackforge/ceph/requests/<osd id>            ``node disk replace|remove``
FERNET_APPLIED        /rackforge/keystone/fernet/<node id>         digest of the token keys on disk
BRINGUP_NODES         /rackforge/bringup/nodes/<node id>           ``rack up``: the node's bring-up
                                                                   steps, phase, last error
BRINGUP_INSTALL       /rackforge/bringup/install/<node id>         the install API: the node's
                                                                   token id, report secret's hash
DISCOVERY             /rackforge/bringup/discovery                 the discovery API: one key
                                                                   every new discovered record
                                                                   rewrites (the cap's guard)
====================  ===========================================  ==========================
"""

ROOT = "/rackforge/"

CLUSTER = ROOT + "cluster"
NODES = ROOT + "nodes/"
MAC_INDEX = ROOT + "index/mac/"
NAME_INDEX = ROOT + "index/name/"
BOOTS = ROOT + "boots/"
TOKENS = ROOT + "tokens/"
CONTROLLERS = ROOT + "roles/controllers"
NODE_ROLES = ROOT + "roles/nodes/"
NODE_CERTS = ROOT + "pki/nodes/"
SECRETS = ROOT + "secrets/"
HEARTBEATS = ROOT + "heartbeats/"
HEALTH = ROOT + "health/"
TASKS = ROOT + "tasks/"
TASK_CLAIMS = ROOT + "claims/"
GALERA = ROOT + "galera/"
CEPH_MONS = ROOT + "ceph/mons/"
CEPH_OSDS = ROOT + "ceph/osds/"
CEPH_REQUESTS = ROOT + "ceph/requests/"
FERNET_APPLIED = ROOT + "keystone/fernet/"
BRINGUP_NODES = ROOT + "bringup/nodes/"
BRINGUP_INSTALL = ROOT + "bringup/install/"
DISCOVERY = ROOT + "bringup/discovery"

#: every name above, for the layout test (no two overlap, all under ROOT)
LAYOUT = {name: value for name, value in dict(globals()).items()
          if name.isupper() and name not in ("ROOT", "LAYOUT") and isinstance(value, str)}
