"""The daemon's local control socket, and the client that `mptcrypt status/sessions/stats` and the API use.

An abstract Unix stream socket named CONTROL_SOCKET. Abstract names live in the network namespace, so there is one
daemon per namespace and a client always talks to the daemon of the namespace it runs in. Binding the name is also
how a second daemon finds out it would be the second one (EADDRINUSE).

Protocol: newline-delimited JSON, one response line per request line, on one connection as long as the client
likes::

    {"cmd": "status"}    -> {"ok": true, "pid": 123, "uptime": 4.2, "queue": 4242, "ports": "all", "policy": "..."}
    {"cmd": "sessions"}  -> {"ok": true, "sessions": [...]}
    {"cmd": "stats"}     -> {"ok": true, "stats": {...}, "edge": {...}}
    {"cmd": "sid", "local": ["10.0.0.1", 40000], "remote": ["10.0.0.2", 80]}  -> {"ok": true, "sid": "ab12..." | null}
    anything wrong       -> {"ok": false, "error": "what was wrong"}

Every command is read-only. Any local user of the namespace may connect (abstract sockets carry no file mode), as
any local user may read `ss` output; session IDs are meant to be compared in the open.

The server is non-blocking and driven by the daemon's one selector loop: requests are bounded (MAX_REQUEST bytes),
clients are bounded (MAX_CLIENTS) and dropped when idle, and a large answer is written as the client reads it, so
the packet path never waits on a slow client.
"""

from __future__ import annotations

import errno
import json
import logging
import selectors
import socket
import struct
import time
from typing import Callable

from mptcrypt.constants import CONTROL_SOCKET
from mptcrypt.errors import AlreadyRunningError, DaemonNotRunning, MptcryptError

log = logging.getLogger("mptcrypt.control")

MAX_REQUEST = 64 * 1024  # bytes of one request line
MAX_RESPONSE = 256 << 20  # the client refuses to buffer more than this
MAX_CLIENTS = 32
CLIENT_IDLE = 30.0  # seconds a connection may stay open without a request in progress
RECV_CHUNK = 65536
SEND_CHUNK = 1 << 20
CLIENT_TIMEOUT = 5.0

Handler = Callable[[dict], dict]


def peer_pid(name: str = CONTROL_SOCKET, timeout: float = 1.0) -> int | None:
    """The pid of the process listening on `name` (SO_PEERCRED of a connection to it), None if unknown."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(timeout)
            sock.connect(name)
            pid, _uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            return pid or None
    except OSError:
        return None


class _Client:
    __slots__ = ("sock", "inbuf", "outbuf", "last", "closing")

    def __init__(self, sock: socket.socket, now: float):
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.last = now
        self.closing = False


class ControlServer:
    """The listening side. `handler(request) -> response dict`; exceptions become {"ok": false}."""

    def __init__(self, handler: Handler, name: str = CONTROL_SOCKET, clock: Callable[[], float] = time.monotonic):
        self.handler = handler
        self.name = name
        self.clock = clock
        self.sock: socket.socket | None = None
        self.selector: selectors.BaseSelector | None = None
        self.clients: dict[int, _Client] = {}

    # --- lifecycle -------------------------------------------------------------------------------------------
    def bind(self) -> None:
        """Claim the namespace's control socket. AlreadyRunningError if a daemon already holds it."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.bind(self.name)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                pid = peer_pid(self.name)
                raise AlreadyRunningError(
                    "a daemon is already running in this network namespace "
                    f"(pid {pid if pid is not None else 'unknown'}); stop it first or run this one in another "
                    "namespace with `ip netns exec NS mptcrypt daemon`"
                ) from None
            raise
        sock.listen(16)
        self.sock = sock

    def attach(self, selector: selectors.BaseSelector) -> None:
        """Serve from `selector`: each key's data is a callable taking the event mask."""
        assert self.sock is not None, "bind() first"
        self.selector = selector
        selector.register(self.sock, selectors.EVENT_READ, self._on_accept)

    def close(self) -> None:
        for fd in list(self.clients):
            self._drop(fd)
        if self.sock is not None:
            if self.selector is not None:
                try:
                    self.selector.unregister(self.sock)
                except (KeyError, ValueError):
                    pass
            self.sock.close()
            self.sock = None

    def tick(self, now: float | None = None) -> None:
        """Drop connections idle for longer than CLIENT_IDLE. Call now and then from the loop."""
        now = self.clock() if now is None else now
        for fd, client in list(self.clients.items()):
            if now - client.last > CLIENT_IDLE:
                self._drop(fd)

    # --- events ----------------------------------------------------------------------------------------------
    def _on_accept(self, _mask: int) -> None:
        for _ in range(MAX_CLIENTS):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again on the next event
                log.warning("control socket: accept failed: %s", exc)
                return
            if len(self.clients) >= MAX_CLIENTS:
                conn.close()
                continue
            conn.setblocking(False)
            client = _Client(conn, self.clock())
            self.clients[conn.fileno()] = client
            self.selector.register(conn, selectors.EVENT_READ, lambda mask, fd=conn.fileno(): self._on_client(fd, mask))

    def _on_client(self, fd: int, mask: int) -> None:
        client = self.clients.get(fd)
        if client is None:
            return
        client.last = self.clock()
        if mask & selectors.EVENT_READ and not client.closing:
            self._read(fd, client)
        if fd in self.clients and mask & selectors.EVENT_WRITE:
            self._write(fd, client)

    def _read(self, fd: int, client: _Client) -> None:
        try:
            data = client.sock.recv(RECV_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            return
        if not data:
            if client.outbuf:
                client.closing = True  # finish the answer, then close
                self._update_interest(fd, client)
            else:
                self._drop(fd)
            return
        client.inbuf += data
        while True:
            line, sep, rest = client.inbuf.partition(b"\n")
            if not sep:
                break
            client.inbuf = bytearray(rest)
            self._respond(client, bytes(line))
        if len(client.inbuf) > MAX_REQUEST:
            self._respond(client, None)
            client.inbuf.clear()
            client.closing = True
        self._write(fd, client)

    def _respond(self, client: _Client, line: bytes | None) -> None:
        if line is None:
            response = {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
        else:
            response = self.dispatch(line)
        client.outbuf += json.dumps(response, separators=(",", ":"), default=str).encode() + b"\n"

    def dispatch(self, line: bytes) -> dict:
        """One request line -> one response dict (never raises)."""
        if len(line) > MAX_REQUEST:
            return {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return {"ok": False, "error": "request is not valid JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'a request is a JSON object with a "cmd" string'}
        try:
            return self.handler(request)
        except MptcryptError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug in a handler must not take the daemon down
            log.exception("control request %r failed", request.get("cmd"))
            return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}

    def _write(self, fd: int, client: _Client) -> None:
        while client.outbuf:
            try:
                sent = client.sock.send(memoryview(client.outbuf)[:SEND_CHUNK])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(fd)
                return
            del client.outbuf[:sent]
        if client.closing and not client.outbuf:
            self._drop(fd)
            return
        self._update_interest(fd, client)

    def _update_interest(self, fd: int, client: _Client) -> None:
        events = selectors.EVENT_WRITE if client.outbuf else 0
        if not client.closing:
            events |= selectors.EVENT_READ
        key = self.selector.get_key(client.sock)
        if key.events != events:
            self.selector.modify(client.sock, events, key.data)

    def _drop(self, fd: int) -> None:
        client = self.clients.pop(fd, None)
        if client is None:
            return
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()


class ControlClient:
    """Talks to the daemon of the current network namespace. Raises DaemonNotRunning if none answers."""

    def __init__(self, name: str | None = None, timeout: float = CLIENT_TIMEOUT):
        self.name = name or CONTROL_SOCKET
        self.timeout = timeout

    def request(self, cmd: str, **fields) -> dict:
        """Send one request; return the response dict. MptcryptError if the daemon answers ok=false."""
        payload = json.dumps({"cmd": cmd, **fields}, separators=(",", ":")).encode() + b"\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.name)
            except (FileNotFoundError, ConnectionRefusedError):
                raise DaemonNotRunning(
                    "no mptcrypt daemon is running in this network namespace (start one with "
                    "`mptcrypt daemon` as root, or `ip netns exec NS mptcrypt daemon` for namespace NS)"
                ) from None
            except OSError as exc:
                raise DaemonNotRunning(f"cannot reach the mptcrypt daemon of this network namespace: {exc}") from None
            try:
                sock.sendall(payload)
                buf = bytearray()
                while b"\n" not in buf:
                    chunk = sock.recv(RECV_CHUNK)
                    if not chunk:
                        raise DaemonNotRunning("the mptcrypt daemon closed the control connection without answering")
                    buf += chunk
                    if len(buf) > MAX_RESPONSE:
                        raise MptcryptError(f"the daemon's answer is longer than {MAX_RESPONSE} bytes")
            except socket.timeout:
                raise DaemonNotRunning(
                    f"the mptcrypt daemon of this network namespace did not answer within {self.timeout:g} s"
                ) from None
            except ConnectionError as exc:
                raise DaemonNotRunning(f"lost the connection to the mptcrypt daemon: {exc}") from None
        try:
            response = json.loads(bytes(buf).partition(b"\n")[0])
        except ValueError:
            raise MptcryptError("the daemon's answer is not valid JSON") from None
        if not isinstance(response, dict) or not response.get("ok"):
            error = response.get("error") if isinstance(response, dict) else None
            raise MptcryptError(f"the daemon refused {cmd!r}: {error or 'no reason given'}")
        return response

    def status(self) -> dict:
        return self.request("status")

    def sessions(self) -> list[dict]:
        return self.request("sessions")["sessions"]

    def stats(self) -> dict:
        """Engine counters and the edge's own counters (the latter prefixed `nfq_`), as one flat dict."""
        response = self.request("stats")
        return {**response.get("stats", {}), **response.get("edge", {})}

    def sid(self, local: tuple[str, int], remote: tuple[str, int]) -> bytes | None:
        value = self.request("sid", local=[local[0], int(local[1])], remote=[remote[0], int(remote[1])])["sid"]
        return bytes.fromhex(value) if value else None
