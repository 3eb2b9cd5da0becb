"""mobilesam-ros synthetic-checkpoint: seeded random weights in the official layout."""

from __future__ import annotations

import argparse

HELP = "write a seeded random-weight checkpoint in the mobile_sam.pt layout (for tests and demos)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT.pt", help="file to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def run(args: argparse.Namespace) -> int:
    from ..modeling.checkpoint import write_synthetic_checkpoint

    path = write_synthetic_checkpoint(args.out, seed=args.seed)
    print(f"wrote {path} (synthetic weights, seed {args.seed}: masks are meaningless, the maths is real)")
    return 0
