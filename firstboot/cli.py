"""``rackforge firstboot ...``, ``rackforge cluster ...`` and ``rackforge node ...``."""


def add_commands(sub):
    """Register the first-boot and cluster commands on the top-level sub-parser."""
