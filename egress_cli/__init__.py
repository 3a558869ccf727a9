"""``egress``: the command line for the classification team and the system manager."""
