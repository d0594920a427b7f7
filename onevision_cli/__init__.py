"""The `onevision` command line (typer): one module per command group."""
