"""Cluster membership: the CA, join tokens, role election, the join service and its
client, the controllers' etcd membership, and the ``cluster`` / ``node`` commands."""
