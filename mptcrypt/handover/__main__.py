"""`python -m mptcrypt.handover ...`: the same as `mptcrypt handover ...`."""

import sys

from mptcrypt.cli import main

sys.exit(main(["handover", *sys.argv[1:]]))
