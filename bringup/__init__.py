"""Zero-touch rack bring-up from the seed: ``rackforge rack up`` and ``rack status``, and
the install API that nodes installing over PXE call (served by the join service)."""
