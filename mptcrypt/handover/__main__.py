"""`python -m mptcrypt.handover ...`: the same as `mptcrypt handover ...`."""

from __future__ import annotations

import argparse
import sys

from mptcrypt.errors import MptcryptError
from mptcrypt.handover.cli import DESCRIPTION, EPILOG, add_arguments, cmd_handover


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mptcrypt.handover", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return cmd_handover(args)
    except MptcryptError as exc:
        print(f"mptcrypt handover: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
