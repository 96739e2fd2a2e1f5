"""BMC drivers: power, boot device, inventory and console of a node's BMC."""
