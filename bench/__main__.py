"""`python -m bench`: every bench in one run (see bench/run.py)."""

from bench.run import main

main()
