"""rackforge: turn a rack of bare-metal servers into a converged OpenStack cloud."""

__version__ = "0.1.0"
