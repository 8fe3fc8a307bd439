"""The ``rovr`` command. Only this module prints; library code logs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from rovr import __version__
from rovr.errors import RovrError

Handler = Callable[[argparse.Namespace], int]


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set ppg.iterations=10 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rovr", description="ROVR: Reinforcement Optimized Video Reconstruction (video in-painting with a learned choice of conditioning frames)."
    )
    parser.add_argument("--version", action="version", version=f"rovr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in _REGISTRY:
        register(sub)
    return parser


_REGISTRY: list[Callable[[argparse._SubParsersAction], None]] = []  # type: ignore[type-arg]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.handler(args) or 0)
    except RovrError as e:
        print(f"rovr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rovr: interrupted; finished checkpoints are kept, nothing half-written was left", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
