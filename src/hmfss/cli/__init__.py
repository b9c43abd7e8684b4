"""Command-line interface: ``hmfss <command>``; one module per command."""
