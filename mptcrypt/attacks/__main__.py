"""`python -m mptcrypt.attacks ...`: the same as `mptcrypt attack ...`."""

import sys

from mptcrypt.cli import main

sys.exit(main(["attack", *sys.argv[1:]]))
