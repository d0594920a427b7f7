"""Flows that span the layers (the quickstart, offline evaluation with what it needs trained): the
floor between the CLI, which only parses, and the packages they compose."""
