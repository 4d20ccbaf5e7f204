"""The root command group and option helpers shared by the subcommands."""

from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="latentatlas")
def main() -> None:
    """latentatlas: maps of the geometry of a generative model's parameter or latent space.

    \b
    Typical use:
      latentatlas atlas ising --out runs/ising      # sample -> posterior -> metric -> report
      latentatlas flows train --data two-moons --model nsf --out runs/nsf
      latentatlas sample ising --L 16 --grid 64 --samples 16 --seed 0 --out runs/store
      latentatlas report runs/ising                 # rebuild the report of a run
    """
