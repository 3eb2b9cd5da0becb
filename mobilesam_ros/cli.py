"""``mobilesam-ros``: one command, several subcommands.

Each subcommand lives in ``mobilesam_ros/commands/<name>.py`` and exposes
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Modules are
imported only when their subcommand runs (torch, onnx etc. load lazily), except
for building the parser, which needs no heavy imports.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

# subcommand name -> module under mobilesam_ros.commands
COMMANDS = {
    "segment": "segment",
    "everything": "everything",
    "export": "export",
    "build-engine": "build_engine",
    "bench": "bench",
    "demo": "demo",
    "download": "download",
    "synthetic-checkpoint": "synthetic",
    "bag": "bag",
}


from mobilesam_ros.errors import CommandError  # noqa: E402 - one class also under ``python -m``


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``command`` only that subcommand's arguments (the
    others are listed by name, their modules not imported): running one command then
    does not import every other command's dependencies (~0.1 s per run here)."""
    parser = argparse.ArgumentParser(
        prog="mobilesam-ros",
        description="Segment Anything for robots: MobileSAM / TinySAM with PyTorch, ONNX Runtime or TensorRT.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        if command is not None and name != command:
            sub.add_parser(name)
            continue
        try:
            module = importlib.import_module(f"mobilesam_ros.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mobilesam_ros.commands.{module_name}":
                raise
            continue  # a subcommand not shipped in this build
        subparser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(subparser)
        subparser.set_defaults(_run=module.run)
    return parser


#: a comma-separated list of numbers that starts with a minus sign ("-50,-50,100,100")
_NEGATIVE_LIST = re.compile(r"^-(\d|\.\d)[^,]*(,[^,]*)+$")


def join_negative_values(argv: list[str]) -> list[str]:
    """``--box -50,-50,100,100`` -> ``--box=-50,-50,100,100``: argparse takes a value
    that starts with '-' (and is not a plain negative number) for an option and
    fails; users type it with a space like any other value."""
    out: list[str] = []
    for token in argv:
        if (out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE_LIST.match(token)):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = join_negative_values(sys.argv[1:] if argv is None else list(argv))
    # the command is the first argument (the top level has no other options than --help)
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CommandError as exc:
        print(f"mobilesam-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
