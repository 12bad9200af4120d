import sys

from mptcrypt.cli import main

sys.exit(main())
