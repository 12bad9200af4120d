"""The key log (`mptcrypt daemon --keylog FILE`, or MPTCRYPT_KEYLOGFILE as SSLKEYLOGFILE works for TLS): one
line per subflow with its traffic keys, appended as the engine makes them, so that a capture can be decrypted
afterwards (`mptcrypt decrypt`). docs/keylog.md is the format. Off by default; anyone who can read the file
can read every logged connection, so it is created 0600 and the daemon warns while it is on.

    MPTCRYPT_KEYS 1 10.0.1.2 45744 10.0.1.1 5040 index=0 suite=AES128 isn_a=2564126339 isn_b=91 a.enc=.. a.mac=..
        a.salt=.. b.enc=.. b.mac=.. b.salt=..

Fields after the fourth address/port are NAME=VALUE, in any order; a reader ignores names it does not know. The
a./b. secrets are the fields of `crypto.keyschedule.DirectionSecrets` (what `SegmentCipher` takes), so the line
follows the key schedule of whatever protocol version wrote it (the number after MPTCRYPT_KEYS).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
from dataclasses import dataclass

from mptcrypt.constants import SymCipher
from mptcrypt.crypto.keyschedule import DirectionSecrets
from mptcrypt.errors import ConfigError, DecodeError

log = logging.getLogger("mptcrypt.keylog")

KEYLOG_ENV = "MPTCRYPT_KEYLOGFILE"
LINE_TAG = "MPTCRYPT_KEYS"
HEADER = "# mptcrypt key log (docs/keylog.md): traffic keys of every subflow; keep it secret, delete it after use\n"


@dataclass(frozen=True, slots=True)
class KeyLogEntry:
    """One subflow's keys as the log holds them (direction a: from the subflow's initiator)."""

    version: int
    initiator: tuple[str, int]
    responder: tuple[str, int]
    index: int
    suite: SymCipher
    isn_a: int
    isn_b: int
    a: DirectionSecrets
    b: DirectionSecrets


def format_line(keys, version: int) -> str:
    """The log line for `keys` (a core.events.SubflowKeys)."""
    (ia, ip), (ra, rp) = keys.initiator, keys.responder
    parts = [LINE_TAG, str(version), str(ipaddress.ip_address(ia)), str(ip), str(ipaddress.ip_address(ra)), str(rp),
             f"index={keys.index}", f"suite={SymCipher(keys.suite).name}", f"isn_a={keys.isn_a}",
             f"isn_b={keys.isn_b}"]
    for side, secrets in (("a", keys.a), ("b", keys.b)):
        parts += [f"{side}.{f.name}={getattr(secrets, f.name).hex()}" for f in dataclasses.fields(secrets)]
    return " ".join(parts) + "\n"


def parse_line(line: str) -> KeyLogEntry | None:
    """A log line -> its entry; None for comments and blank lines; DecodeError for a damaged line."""
    words = line.split()
    if not words or words[0].startswith("#"):
        return None
    if words[0] != LINE_TAG or len(words) < 6:
        raise DecodeError(f"not a key log line: {line.strip()[:60]!r}")
    try:
        version = int(words[1])
        initiator = (str(ipaddress.ip_address(words[2])), int(words[3]))
        responder = (str(ipaddress.ip_address(words[4])), int(words[5]))
        named = dict(w.split("=", 1) for w in words[6:])
        secrets = {"a": {}, "b": {}}
        for name, value in named.items():
            side, _, field = name.partition(".")
            if side in secrets and field:
                secrets[side][field] = bytes.fromhex(value)
        known = {f.name for f in dataclasses.fields(DirectionSecrets)}
        a = DirectionSecrets(**{k: v for k, v in secrets["a"].items() if k in known})
        b = DirectionSecrets(**{k: v for k, v in secrets["b"].items() if k in known})
        return KeyLogEntry(version, initiator, responder, int(named["index"]), SymCipher[named["suite"]],
                           int(named["isn_a"]), int(named["isn_b"]), a, b)
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError(f"damaged key log line ({exc}): {line.strip()[:60]!r}") from None


def read_keylog(path: str) -> list[KeyLogEntry]:
    with open(path) as fh:
        return [e for e in map(parse_line, fh) if e is not None]


class KeyLog:
    """Appends lines to the key log file; created 0600 (O_CREAT mode, so no moment with wider rights)."""

    def __init__(self, path: str, version: int):
        self.path = path
        self.version = version
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open the key log {path}: {exc.strerror}") from None
        if os.fstat(fd).st_mode & 0o077:
            log.warning("key log %s is readable by others than its owner (chmod 600 it)", path)
        if os.fstat(fd).st_size == 0:
            os.write(fd, HEADER.encode())
        self.fd = fd
        self.lines = 0

    def __call__(self, keys) -> None:
        """The engine's key_log hook: one line, written at once (a crash loses nothing already keyed)."""
        try:
            os.write(self.fd, format_line(keys, self.version).encode())
            self.lines += 1
        except OSError as exc:
            log.error("could not write to the key log %s: %s", self.path, exc)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def keylog_path(option: str | None, environ=os.environ) -> str | None:
    """--keylog, else $MPTCRYPT_KEYLOGFILE, else None (off)."""
    return option or environ.get(KEYLOG_ENV) or None
