"""`python -m fermi_dspy` is the `fermi-dspy` command."""

import sys

from fermi_dspy.cli import main

sys.exit(main())
