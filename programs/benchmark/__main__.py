"""`python -m programs.benchmark ...`: the benchmark's command line (also mounted as `fermi-dspy bench`)."""

import logging
import sys

from programs.benchmark.cli import build_parser, main

if __name__ == "__main__":
    arguments = build_parser().parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main(arguments))
