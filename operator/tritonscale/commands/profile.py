"""``tritonscale profile``: measure a live Triton model and print a ``profiles`` block.

The measuring lives in :mod:`tritonscale.adapters.profiler` (it talks to Triton);
this module only wires it into the CLI.
"""

from __future__ import annotations

import argparse

from tritonscale.adapters import profiler

HELP = "measure a live Triton model and print a profiles block for the spec"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    profiler.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return profiler.run(args)
