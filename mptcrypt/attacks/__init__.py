"""Subflow hijack-resistance suite: the published MPTCP attacks, mounted from a real attacker host on path 1 of
`topologies/hijack.py`, against plain MPTCP and against mptcrypt, judged by their effect.

    mptcrypt attack [NAME ...] [--target plain|mptcrypt|both] [--json] [--list]
    python -m mptcrypt.attacks ...            (the same, before the subcommand is registered)

Layout: `common` (the attacker's tap, decoder, path-1 view and forger), `rogue` (a subflow of the victim's
connection terminated in the attacker), `agent` (the attacker process, run in the attacker's namespace),
`transfer` (the victim application), `runner` (topology, daemons, transfer, agent, evidence), `judging` and
`teardown` (shared verdict logic), `report` (rich table, JSON), `cli`; one module per attack (below), each with a
docstring citing its source, `attack(agent)` (runs in the attacker's namespace) and `judge(evidence)` (runs in the
runner). docs/security.md explains every attack and the matrix.
"""

from __future__ import annotations

import importlib

# name -> module, in the order of the matrix (issue 5's numbering)
ATTACKS = {
    "join-hijack": "mptcrypt.attacks.join_hijack",
    "add-addr": "mptcrypt.attacks.add_addr",
    "mp-prio": "mptcrypt.attacks.mp_prio",
    "remove-addr": "mptcrypt.attacks.remove_addr",
    "mp-fastclose": "mptcrypt.attacks.mp_fastclose",
    "mp-tcprst": "mptcrypt.attacks.mp_tcprst",
    "rst": "mptcrypt.attacks.rst",
    "data-inject": "mptcrypt.attacks.data_inject",
    "downgrade": "mptcrypt.attacks.downgrade",
    "passive": "mptcrypt.attacks.passive",
    "syn-desync": "mptcrypt.attacks.syn_desync",
    "syn-replay": "mptcrypt.attacks.syn_replay",
    "token-poison": "mptcrypt.attacks.token_poison",
    "daemon-restart": "mptcrypt.attacks.daemon_restart",
    "ipv6-exthdr": "mptcrypt.attacks.ipv6_exthdr",
    "boundary-shift": "mptcrypt.attacks.boundary_shift",
    "signal-replay": "mptcrypt.attacks.signal_replay",
    "blind-init": "mptcrypt.attacks.blind_init",
    "join-index-dos": "mptcrypt.attacks.join_index_dos",
    "syn-flood": "mptcrypt.attacks.syn_flood",
}


def get_attack(name: str):
    try:
        return importlib.import_module(ATTACKS[name])
    except KeyError:
        from mptcrypt.errors import ConfigError

        raise ConfigError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}") from None


__all__ = ["ATTACKS", "get_attack"]
