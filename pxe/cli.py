"""``rackforge pxe serve`` and ``rackforge pxe status``."""


def add_commands(sub):
    """Register the PXE commands on the top-level sub-parser."""
