"""The ``tritonscale`` console script: a thin dispatcher over ``tritonscale.commands``.

Each subcommand lives in ``tritonscale/commands/<name>.py`` exposing
``HELP: str``, ``add_arguments(parser)`` and ``run(args) -> int``. Modules are
imported lazily so ``tritonscale validate`` does not pay for Kopf or scipy.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tritonscale import __version__

# name -> short help; the module tritonscale.commands.<name> does the work.
COMMANDS: dict[str, str] = {
    "run": "run the operator (Kopf) against the current cluster",
    "validate": "check ScaledModel YAML files offline against the CRD schema and core rules",
    "plan": "make one planning decision for a given load and explain it",
    "simulate": "replay an arrival trace against policies and compare cost and SLO",
    "profile": "measure a live Triton model and print a profiles block for the spec",
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritonscale",
        description="Run NVIDIA Triton fleets against latency and cost SLOs.",
    )
    parser.add_argument("--version", action="version", version=f"tritonscale {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only import the module of the chosen command (and all of them for --help).
    wanted = [a for a in argv if a in COMMANDS][:1] or list(COMMANDS)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name in wanted:
            mod = importlib.import_module(f"tritonscale.commands.{name}")
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    run = args._run
    code: int = run(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
