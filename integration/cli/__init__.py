"""The command line: click groups only, one module per group."""
