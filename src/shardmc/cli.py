"""The ``shardmc`` command line. User mistakes exit with code 2 and one clear message."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

#: Exit codes: success, run failure, bad input.
EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


def _bootstrap_jax() -> None:
    """Process settings for the CLI, before JAX starts: float64 and quiet TF/XLA logs."""
    os.environ.setdefault("JAX_ENABLE_X64", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _cmd_demo(args: argparse.Namespace) -> int:
    from shardmc.xpcs.demo import run_demo

    run_demo(args.out, num_shards=args.shards, seed=args.seed, backend=args.backend,
             progress=not args.no_progress)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardmc", description="Consensus Monte Carlo for large-data Bayesian inference.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log per-shard progress")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulate a laminar-flow XPCS dataset and fit it by CMC")
    demo.add_argument("--out", default=None,
                      help="run folder (default: shardmc-runs/demo-<timestamp>)")
    demo.add_argument("--shards", type=int, default=8, help="number of shards K (default 8)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--backend", default="sequential", help="backend (default sequential)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shardmc`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    _bootstrap_jax()
    from shardmc.errors import ShardFailedError, ShardMCInputError

    try:
        return args.handler(args)
    except (ShardMCInputError, FileNotFoundError, PermissionError) as exc:
        if args.debug:
            raise
        print(f"shardmc: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ShardFailedError as exc:
        if args.debug:
            raise
        print(f"shardmc: run failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("shardmc: interrupted", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
