"""Command line: ``python -m diffmodel <command>``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m diffmodel",
        description="Exact derivatives of CVXPY quadratic programs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="solve and differentiate a small model, with a finite-difference check",
        description="Solve a small equality-constrained QP, print its solution, "
        "the gradients of a loss by parameter name, and a finite-difference check.",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the random data (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        return run_demo(seed=args.seed)
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
