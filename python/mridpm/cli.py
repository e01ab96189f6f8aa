"""The mridpm command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `mridpm`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="mridpm", description="Diffusion probabilistic models for MRI.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="versions, built backends and visible devices")
    p_info.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)

    if args.command == "info":
        from mridpm.info import format_info, info

        data = info()
        print(json.dumps(data, indent=2) if args.json else format_info(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
