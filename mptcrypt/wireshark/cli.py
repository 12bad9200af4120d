"""`mptcrypt wireshark path|install` and `mptcrypt decrypt CAPTURE --keylog FILE [-w OUT.pcapng]`."""

from __future__ import annotations

import shutil
import sys

from mptcrypt.wireshark import LUA_NAME, dissector_path, personal_plugin_dir

WIRESHARK_DESCRIPTION = f"""\
The mptcrypt dissector for Wireshark and tshark ({LUA_NAME}): names every mptcrypt option (HELLO, PKCONF,
INIT1/INIT2 markers, MAC, NEXTK1, NEXTK2, REKEY), parses INIT1/INIT2 field by field, flags malformed ones, and
shows the MAC verdict of a capture decrypted with `mptcrypt decrypt`.

  mptcrypt wireshark path       print where the dissector is (for tshark -X lua_script:PATH)
  mptcrypt wireshark install    copy it to the personal Lua plugin folder (~/.local/lib/wireshark/plugins)"""


def register(sub) -> None:
    import argparse

    p = sub.add_parser("wireshark", help="the Wireshark/tshark dissector: where it is, install it",
                       description=WIRESHARK_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["path", "install"])
    p.set_defaults(func=cmd_wireshark)

    p = sub.add_parser(
        "decrypt",
        help="decrypt a capture with a daemon's key log (--keylog): plaintext pcapng with a MAC verdict per packet",
        description="Decrypt the protected segments of CAPTURE (pcap or pcapng, Ethernet) with the subflow keys "
        "of a key log (`mptcrypt daemon --keylog FILE`, docs/keylog.md). Every segment of a logged subflow is "
        "checked exactly as the receiving daemon checks it: a verified one is written with its MAC option removed "
        "and its payload in plain text, one that does not verify is written as captured; each gets a packet "
        "comment 'mptcrypt: MAC ok' or 'mptcrypt: bad MAC', which the dissector shows as mptcrypt.verdict.",
    )
    p.add_argument("capture", help="capture file (tcpdump -w)")
    p.add_argument("--keylog", required=True, metavar="FILE", help="key log written by the daemon")
    p.add_argument("-w", "--write", metavar="OUT.pcapng", help="decrypted capture (default: CAPTURE.decrypted.pcapng)")
    p.set_defaults(func=cmd_decrypt)


def cmd_wireshark(args) -> int:
    source = dissector_path()
    if args.action == "path":
        print(source)
        return 0
    target_dir = personal_plugin_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target_dir / LUA_NAME)
    print(f"installed {target_dir / LUA_NAME}; Wireshark and tshark load it at their next start")
    return 0


def cmd_decrypt(args) -> int:
    from mptcrypt.wireshark.decrypt import decrypt_file

    out = args.write or f"{args.capture.rsplit('.', 1)[0]}.decrypted.pcapng"
    counts = decrypt_file(args.capture, args.keylog, out)
    print(f"wrote {out}: {counts['mac_ok']} segments decrypted (MAC ok), {counts['bad_mac']} bad MAC, "
          f"{counts['other']} other packets unchanged", file=sys.stderr if out == "-" else sys.stdout)
    return 0
