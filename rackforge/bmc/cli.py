"""``rackforge bmc``, ``rackforge power`` and ``rackforge console``."""


def add_commands(sub):
    """Register the BMC commands on the top-level sub-parser (filled in by the BMC work)."""
