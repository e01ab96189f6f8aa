"""python -m mridpm.nets.priors export RUN_DIR NAME [OUT_DIR] [--sampler-options JSON]: a run's EMA
weights as a prior (float16 safetensors and its JSON card), bundled next to this module or written to
OUT_DIR; JSON ({"dds": {"cg_iters": 2}}) records the reconstruction options tuned for it."""

import json
import sys

from mridpm.nets.priors import export

if __name__ == "__main__":
    args, options = sys.argv[1:], None
    if "--sampler-options" in args:
        at = args.index("--sampler-options")
        if at + 1 >= len(args):
            sys.exit("--sampler-options needs a JSON object")
        options, args = json.loads(args[at + 1]), args[:at] + args[at + 2:]
    if len(args) not in (3, 4) or args[0] != "export":
        sys.exit("usage: python -m mridpm.nets.priors export RUN_DIR NAME [OUT_DIR] [--sampler-options JSON]")
    print(f"wrote {export(*args[1:], sampler_options=options)}")
