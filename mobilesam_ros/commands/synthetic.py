"""mobilesam-ros synthetic-checkpoint: a checkpoint in the mobile_sam.pt layout without
the real weights: seeded random weights, or the toy-world model (--toy)."""

from __future__ import annotations

import argparse

from ..cli import CommandError

HELP = "write a checkpoint in the mobile_sam.pt layout: seeded random weights, or the toy-world model (--toy)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT.pt", help="file to write")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--seed", type=int, default=0, help="random seed of the random-weight checkpoint (default: 0)")
    kind.add_argument("--toy", action="store_true",
                      help="the toy-world model instead: trained on synthetic shapes only, so its masks follow "
                           "solid shapes in toy scenes (the demo's); meaningless on real images")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    out = Path(args.out)
    if out.is_dir():
        raise CommandError(f"{out} is a directory: give a file name such as {out / 'toy_world.pt'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.toy:
            from ..toy.model import TOY_NOTICE, write_toy_checkpoint

            path = write_toy_checkpoint(out)
            print(f"wrote {path} ({TOY_NOTICE})")
        else:
            from ..modeling.checkpoint import write_synthetic_checkpoint

            path = write_synthetic_checkpoint(out, seed=args.seed)
            print(f"wrote {path} (synthetic weights, seed {args.seed}: masks are meaningless, the maths is real)")
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot write {out}: {exc}") from None
    return 0
