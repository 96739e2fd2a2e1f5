"""The virtual rack: QEMU guests behind simulated IPMI BMCs, in a network namespace."""
