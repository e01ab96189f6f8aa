"""python -m mridpm.nets.priors export RUN_DIR NAME [OUT_DIR]: a run's EMA weights as a prior (float16
safetensors and its JSON card), bundled next to this module or written to OUT_DIR."""

import sys

from mridpm.nets.priors import export

if __name__ == "__main__":
    if len(sys.argv) not in (4, 5) or sys.argv[1] != "export":
        sys.exit("usage: python -m mridpm.nets.priors export RUN_DIR NAME [OUT_DIR]")
    print(f"wrote {export(*sys.argv[2:])}")
