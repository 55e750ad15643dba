"""CLI command groups, each a typer sub-app that cli.py registers with one add_typer line."""
