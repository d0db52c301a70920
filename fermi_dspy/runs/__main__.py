"""`python -m fermi_dspy.runs ...`: the same as `fermi-dspy personalize ...`."""

import sys

from fermi_dspy.runs.cli import build_parser, main

if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
