"""The ``tritonscale`` console script: a thin dispatcher over ``tritonscale.commands``.

Each subcommand lives in ``tritonscale/commands/<name>.py`` exposing
``HELP: str``, ``add_arguments(parser)`` and ``run(args) -> int``. Modules are
imported lazily so ``tritonscale validate`` does not pay for Kopf or scipy.

Bad input ends with one line on stderr and exit code 2 (argparse's usage errors
included, without the usage dump); an unexpected exception in an offline command
ends with one line and exit code 70 (set ``TRITONSCALE_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from tritonscale import __version__

# name -> short help; the module tritonscale.commands.<name> does the work.
COMMANDS: dict[str, str] = {
    "run": "run the operator (Kopf) against the current cluster",
    "validate": "check ScaledModel YAML files offline against the CRD schema and core rules",
    "plan": "make one planning decision for a given load and explain it",
    "simulate": "replay an arrival trace against policies and compare cost and SLO",
    "profile": "measure a live Triton model and print a profiles block for the spec",
}


EXIT_INTERNAL = 70  # EX_SOFTWARE


def _one_line(text: str, limit: int = 300) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: what (see prog --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, _one_line(f"{self.prog}: error: {message} (see {self.prog} --help)")
                  + "\n")


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = _Parser(
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
    if args.command == "run" or os.environ.get("TRITONSCALE_DEBUG") == "1":
        code: int = run(args)
        return code
    try:
        code = run(args)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # last resort: never a traceback for an offline command
        print(_one_line(f"tritonscale {args.command}: internal error: {type(e).__name__}: "
                        f"{e} (please report it; TRITONSCALE_DEBUG=1 shows the traceback)"),
              file=sys.stderr)
        return EXIT_INTERNAL
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
