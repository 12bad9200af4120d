"""`mptcrypt service install|uninstall`: the systemd unit, pointed at this installation of mptcrypt.

install writes UNIT_DIR/mptcrypt.service from the shipped template with ExecStart set to this interpreter
(`python -m mptcrypt daemon --config CONFIG`), creates CONFIG with a commented default when it does not exist
(never overwrites one), and runs `systemctl daemon-reload` when systemd is the init system. uninstall stops and
disables the unit when systemd runs, and removes the unit file; the configuration stays.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

from mptcrypt.errors import MptcryptError, NotRootError

UNIT_NAME = "mptcrypt.service"
UNIT_DIR = "/etc/systemd/system"
DEFAULT_CONFIG = "/etc/mptcrypt/mptcrypt.toml"
TEMPLATE_EXEC = "/usr/bin/mptcrypt daemon --config /etc/mptcrypt/mptcrypt.toml"

DEFAULT_CONFIG_TEXT = """\
# mptcrypt daemon configuration (see `mptcrypt daemon --help` and the README).
# ports = "all"              # or "22,443,5000-5100"
# policy = "opportunistic"   # opportunistic | required | off
# [[rule]]
# port = "22"
# policy = "required"
"""


def template() -> str:
    return (resources.files("mptcrypt") / "packaging" / UNIT_NAME).read_text()


def render(python: str = sys.executable, config: str = DEFAULT_CONFIG) -> str:
    """The unit with ExecStart running `python -m mptcrypt daemon --config CONFIG`."""
    text = template()
    if TEMPLATE_EXEC not in text:
        raise MptcryptError(f"the shipped {UNIT_NAME} has no 'ExecStart={TEMPLATE_EXEC}' line to rewrite")
    command = " ".join(shlex.quote(a) for a in (python, "-m", "mptcrypt", "daemon", "--config", config))
    return text.replace(TEMPLATE_EXEC, command)


def systemd_running() -> bool:
    """sd_booted(3): systemd is PID 1 when /run/systemd/system exists."""
    return os.path.isdir("/run/systemd/system") and shutil.which("systemctl") is not None


def _systemctl(*args: str) -> None:
    if systemd_running():
        subprocess.run(["systemctl", *args], check=False)


def install(unit_dir: str = UNIT_DIR, config: str = DEFAULT_CONFIG, python: str = sys.executable) -> list[str]:
    """Write the unit (and a default config if none). Returns what was written, for the user."""
    written = []
    unit = Path(unit_dir) / UNIT_NAME
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(render(python, config))
    unit.chmod(0o644)
    written.append(str(unit))
    cfg = Path(config)
    if not cfg.exists():
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(DEFAULT_CONFIG_TEXT)
        written.append(str(cfg))
    _systemctl("daemon-reload")
    return written


def uninstall(unit_dir: str = UNIT_DIR) -> bool:
    """Stop, disable and remove the unit. False if it was not installed."""
    unit = Path(unit_dir) / UNIT_NAME
    if not unit.exists():
        return False
    _systemctl("disable", "--now", UNIT_NAME)
    unit.unlink()
    _systemctl("daemon-reload")
    return True


def register(sub) -> None:
    p = sub.add_parser(
        "service",
        help="install or remove the systemd unit (root)",
        description="Install the systemd unit mptcrypt.service (Type=notify, only CAP_NET_ADMIN and CAP_NET_RAW, "
        f"ProtectSystem=strict) running this mptcrypt with --config {DEFAULT_CONFIG}, or remove it. Then: "
        "systemctl enable --now mptcrypt; systemctl reload mptcrypt after editing the configuration.",
    )
    p.add_argument("action", choices=["install", "uninstall", "show"], help="show prints the unit install would write")
    p.add_argument("--unit-dir", default=UNIT_DIR, help=f"where the unit goes (default {UNIT_DIR})")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"the daemon's configuration (default {DEFAULT_CONFIG})")
    p.set_defaults(func=cmd_service)


def cmd_service(args) -> int:
    if args.action == "show":
        sys.stdout.write(render(config=args.config))
        return 0
    try:
        if args.action == "install":
            for path in install(args.unit_dir, args.config):
                print(f"wrote {path}")
            print("start it with: systemctl enable --now mptcrypt")
            return 0
        if uninstall(args.unit_dir):
            print(f"removed {Path(args.unit_dir) / UNIT_NAME} (the configuration stays)")
        else:
            print(f"{UNIT_NAME} is not installed in {args.unit_dir}")
        return 0
    except PermissionError as exc:
        raise NotRootError(f"{exc.filename}: permission denied (run as root)") from None
