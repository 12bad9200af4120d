"""What the sans-IO core hands back to the edges: a verdict per packet, packets to inject, events."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Verdict(Enum):
    ACCEPT = "accept"  # let the packet through; if Result.packet is set, with those bytes instead
    DROP = "drop"  # never reaches its destination (MAC failure, forged join, refused connection)
    HOLD = "hold"  # the core kept a copy and will hand it back protected via Result.inject; the edge drops it


@dataclass(slots=True)
class Result:
    verdict: Verdict
    packet: bytes | None = None  # replacement bytes for ACCEPT (None: unchanged)
    inject: list[bytes] = field(default_factory=list)  # complete IP packets for the raw socket, in order


ACCEPT = Result(Verdict.ACCEPT)  # shared, never mutated: the fast path allocates nothing
DROP = Result(Verdict.DROP)


@dataclass(frozen=True, slots=True)
class Event:
    """Something worth a log line: a session established, a join refused, a MAC failure (first of a flow)."""

    kind: str
    flow: str  # "src:sport > dst:dport"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SubflowKeys:
    """A subflow's traffic keys, handed to the engine's `key_log` hook (`--keylog`, docs/keylog.md) when it is set.
    Direction a is from the subflow's initiator (the host that sent its SYN) to the responder."""

    initiator: tuple[bytes, int]  # address (packed), port
    responder: tuple[bytes, int]
    isn_a: int  # the initiator's ISN
    isn_b: int
    index: int  # ss[index] keyed the subflow
    suite: int  # SymCipher
    a: object  # crypto.keyschedule.DirectionSecrets of direction a
    b: object
