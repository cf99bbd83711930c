"""``tritonscale profile``: measure a live Triton model and print a ``profiles`` block.

The measuring lives in :mod:`tritonscale.adapters.profiler` (it talks to Triton);
this module only wires it into the CLI.
"""

from __future__ import annotations

import argparse
import sys

from tritonscale.adapters import cascade_profiler, profiler
from tritonscale.commands import inputs

HELP = "measure a live Triton model and print a profiles block for the spec"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    profiler.add_arguments(parser)
    cascade_profiler.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.cascade:
        return cascade_profiler.run(args)
    if not args.accelerator:
        print("tritonscale profile: --accelerator is required", file=sys.stderr)
        return 2
    try:
        inputs.check_profile_args(args)
    except inputs.InputError as e:
        print(inputs.clip(f"tritonscale profile: {e}"), file=sys.stderr)
        return inputs.EXIT_BAD_INPUT
    return profiler.run(args)
