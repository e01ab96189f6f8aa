"""python -m mridpm.nets.priors export RUN_DIR NAME [OUT_DIR] [--sampler-options JSON]: a run's EMA
weights as a prior (float16 safetensors and its JSON card), bundled next to this module or written to
OUT_DIR; JSON ({"dds": {"cg_iters": 2}}) records the reconstruction options tuned for it."""

import argparse
import json
import sys
from typing import Any

from mridpm.nets.priors import check_sampler_options, export


def _options(text: str) -> dict[str, Any]:
    """--sampler-options: a JSON object {method: {option: value}}."""
    try:
        options = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from None
    try:
        check_sampler_options(options, "the value")
    except ValueError:
        raise argparse.ArgumentTypeError('must map method names to objects of options, e.g. {"dds": {"cg_iters": 2}}'
                                         ) from None
    return options


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m mridpm.nets.priors")
    parser.add_argument("command", choices=["export"])
    parser.add_argument("run_dir")
    parser.add_argument("name")
    parser.add_argument("out_dir", nargs="?")
    parser.add_argument("--sampler-options", type=_options, help='e.g. \'{"dds": {"cg_iters": 2}}\'')
    args = parser.parse_args()
    try:
        print(f"wrote {export(args.run_dir, args.name, args.out_dir, sampler_options=args.sampler_options)}")
    except (ValueError, OSError) as err:
        print(f"python -m mridpm.nets.priors: error: {err}", file=sys.stderr)
        sys.exit(2)
