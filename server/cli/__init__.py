"""The ``zoo`` command line, in three parts by what a command touches:

- ``local``: the catalog, the weights cache and export, on this machine (needs the domain,
  and TensorFlow for export);
- ``service``: ``serve``, ``worker`` and ``health``;
- ``remote``: a running server's models, ``classify``, ``upload``, ``finetune`` and ``jobs``,
  through the SDK alone.

Every domain error ends the command with one line on stderr and exit status 1; usage errors
exit with 2 (click's convention). Nothing prints a traceback for bad input.
"""

from __future__ import annotations

import sys

from server.cli import local, remote, service  # noqa: F401  (each registers its commands)
from server.cli.common import CommandError, app, err
from zoo.errors import ZooError

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    from client.errors import ZooError as ServerError

    try:
        app(args=argv, prog_name="zoo")
    except (ZooError, CommandError) as e:
        err.print(f"zoo: error: {e}", markup=False)
        sys.exit(1)
    except ServerError as e:  # an error the server answered with, or an unreachable server
        err.print(f"zoo: error: {type(e).__name__}: {e.message}", markup=False)
        sys.exit(1)
    except OSError as e:  # a directory or file this process cannot use: one line, no traceback
        where = f": {e.filename}" if e.filename else ""
        err.print(f"zoo: error: {e.strerror or e}{where}", markup=False)
        sys.exit(1)
