"""`sessiongate config check` and `sessiongate config show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from sessiongate.cli_support import load_config
from sessiongate.config import default_config_path, masked

config_app = typer.Typer(no_args_is_help=True, help="Check and show the configuration.")
_out = Console()

FileArgument = Annotated[
    Path | None,
    typer.Argument(help="The config file (default: $SESSIONGATE_CONFIG, else the user's one)."),
]


@config_app.command("check")
def check(file: FileArgument = None) -> None:
    """Validate a config file; exit 1 naming every bad key."""
    load_config(file)
    where = file or (default_config_path() if default_config_path().is_file() else None)
    _out.print(f"ok: {where or 'the embedded defaults'} is valid")


@config_app.command("show")
def show(
    file: FileArgument = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False,
) -> None:
    """The effective settings (file, environment and defaults), secrets masked."""
    settings = load_config(file)
    data = masked(settings)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False))
