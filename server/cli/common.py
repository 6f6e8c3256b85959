"""What every ``zoo`` command shares: the Typer apps, consoles, options and printing.

Imports nothing of the domain, so the remote commands stay client-only.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

app = typer.Typer(
    help="keras-zoo: Keras application models as ONNX, served over gRPC.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
weights_app = typer.Typer(
    help="The pretrained-weights cache (offline first).", no_args_is_help=True
)
app.add_typer(weights_app, name="weights")
jobs_app = typer.Typer(help="Fine-tuning and export jobs on a server.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


class ListByDefault(TyperGroup):
    """A group whose first word, when it is not one of its commands, is the start of ``list``'s
    arguments: ``zoo models 'ResNet*' --json`` lists as it always did, while
    ``zoo models promote NAME VERSION`` promotes."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's vendored Context
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["list", *args]
        return super().parse_args(ctx, args)


models_app = typer.Typer(
    cls=ListByDefault,
    help="The catalog and served models (the default: list), and version labels on a server.",
)
app.add_typer(models_app, name="models")
SERVER_OPTION = typer.Option("localhost:8001", "--server", help="Server address host:port.")
TOKEN_OPTION = typer.Option(None, "--token", envvar="ZOO_TOKEN", help="Bearer token.")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JSON_OPTION = typer.Option(False, "--json", help="Print stable JSON instead of a table.")


class CommandError(Exception):
    """A mistake in a command's own arguments (a missing file, a malformed KEY=VALUE): one
    line on stderr and exit 1, like a domain error, from commands that do not import it."""


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def fmt(value: object, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"
