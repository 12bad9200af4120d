import sys

from mptcrypt.attacks.cli import main

sys.exit(main())
