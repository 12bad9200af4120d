"""Wireshark support: the Lua dissector shipped with the package (mptcrypt.lua), where to install it, and
`mptcrypt decrypt` (a capture and a key log in, a decrypted pcapng with a MAC verdict per packet out)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

LUA_NAME = "mptcrypt.lua"


def dissector_path() -> Path:
    """The dissector file inside the installed package (what `tshark -X lua_script:PATH` takes)."""
    return Path(str(resources.files("mptcrypt") / "wireshark" / LUA_NAME))


def personal_plugin_dir(environ=os.environ) -> Path:
    """Wireshark's personal Lua plugin folder (`tshark -G folders`: "Personal Lua Plugins"): on Linux and macOS
    $XDG_CONFIG_HOME-independent ~/.local/lib/wireshark/plugins, which every Wireshark 2.5+ scans."""
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "lib" / "wireshark" / "plugins"
