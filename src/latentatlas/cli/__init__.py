"""The ``latentatlas`` command.

Each subcommand lives in its own module of this package and registers itself on :data:`main`:
``flows`` (train a flow on a toy density), ``sample`` (fill a sample store), ``atlas`` (the whole
pipeline for a source), ``report`` (rebuild a run's report).

Errors in the user's input print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from .common import main as _group

__all__ = ["main"]

_COMMANDS = ("flows", "sample", "atlas", "report", "latent", "diffusers", "path")


def _load_commands() -> None:
    for name in _COMMANDS:
        try:
            importlib.import_module(f"{__name__}.{name}_cmd")
        except ModuleNotFoundError as err:  # a command module not written yet
            if err.name != f"{__name__}.{name}_cmd":
                raise


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _load_commands()
    try:
        _group.main(args=argv, prog_name="latentatlas", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted; rerun the same command to resume", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(2 if err.exit_code in (1, 2) else err.exit_code)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as err:
        click.echo(f"latentatlas: error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted; rerun the same command to resume", err=True)
        sys.exit(130)
