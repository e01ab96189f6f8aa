"""python -m mridpm.nets.priors export RUN_DIR NAME: bundle a run's EMA weights as a prior."""

import sys

from mridpm.nets.priors import export

if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "export":
        sys.exit("usage: python -m mridpm.nets.priors export RUN_DIR NAME")
    print(f"wrote {export(sys.argv[2], sys.argv[3])}")
