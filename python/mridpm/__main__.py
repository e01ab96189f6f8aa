"""python -m mridpm runs the command line."""

import sys

from mridpm.cli import main

sys.exit(main())
