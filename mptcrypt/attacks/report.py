"""The matrix: attack x target -> outcome + evidence, as a rich table (or plain text) and as JSON."""

from __future__ import annotations

import json
import sys
from typing import Iterable

from mptcrypt.attacks import ATTACKS, get_attack
from mptcrypt.attacks.runner import BLOCKED, DETECTED, EFFECTIVE, ERROR, Cell

STYLE = {EFFECTIVE: "bold red", BLOCKED: "bold green", DETECTED: "bold yellow", ERROR: "bold magenta"}
# The outcome each cell must have. On plain MPTCP a published attack MUST work (else it proves nothing); an
# attack on mptcrypt's own machinery says so with PLAIN_EXPECTED. Against mptcrypt every attack must be BLOCKED,
# except the downgrade, which mptcrypt can only make visible (opportunistic) or refuse (required).
EXPECTED_VARIANT = {("downgrade", "opportunistic"): {DETECTED}, ("downgrade", "required"): {BLOCKED}}


def expected(cell: Cell) -> set[str]:
    if (cell.attack, cell.variant) in EXPECTED_VARIANT and cell.target == "mptcrypt":
        return EXPECTED_VARIANT[(cell.attack, cell.variant)]
    if cell.target == "plain":
        return {getattr(get_attack(cell.attack), "PLAIN_EXPECTED", EFFECTIVE)}
    return {BLOCKED}


def as_expected(cell: Cell) -> bool:
    return cell.outcome in expected(cell)


def to_json(cells: Iterable[Cell], seconds: float | None = None, raw: bool = False) -> dict:
    cells = list(cells)
    return {
        "matrix": [{**c.as_dict(raw=raw), "as_expected": as_expected(c)} for c in cells],
        "all_as_expected": all(as_expected(c) for c in cells),
        "seconds": seconds,
    }


def _key(cell: Cell) -> str:
    return cell.attack + (f" ({cell.variant})" if cell.variant and cell.target == "mptcrypt" else "")


def rows(cells: list[Cell]) -> tuple[list[str], list[tuple[str, dict[str, Cell]]]]:
    targets = [t for t in ("plain", "mptcrypt") if any(c.target == t for c in cells)]
    out: list[tuple[str, dict[str, Cell]]] = []
    for name in ATTACKS:
        mine = [c for c in cells if c.attack == name]
        if not mine:
            continue
        variants = sorted({c.variant for c in mine if c.target == "mptcrypt" and c.variant}) or [None]
        for variant in variants:
            row: dict[str, Cell] = {}
            for c in mine:
                if c.target == "plain" or c.variant == variant:
                    row[c.target] = c
            module = get_attack(name)
            number = getattr(module, "VARIANT_NUMBERS", {}).get(variant, module.NUMBER)
            label = f"{number}. {name}" + (f" [{variant}]" if variant else "")
            out.append((label, row))
    return targets, out


def _evidence_text(cell: Cell, width: int = 0) -> str:
    ev = cell.evidence
    keep = []
    for k, v in ev.items():
        if k in ("upload", "download", "frames_sent", "keys_learned", "connection_died") or v in (None, {}, [], ""):
            continue
        keep.append(f"{k}={json.dumps(v, separators=(',', ':'), default=str)}")
    up = ev.get("upload", "")
    return "; ".join([f"upload {up}"] + keep)


def print_table(cells: list[Cell], seconds: float | None = None, file=None, verbose: bool = False) -> None:
    file = file or sys.stdout
    targets, table = rows(cells)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        Console = None
    if Console is not None:
        console = Console(file=file, width=200 if not file.isatty() else None)
        t = Table(title="mptcrypt attack matrix (topologies/hijack.py, attacker on path 1)", show_lines=True)
        t.add_column("attack", no_wrap=True)
        for target in targets:
            t.add_column(target, ratio=1)
        for label, row in table:
            cells_txt = []
            for target in targets:
                c = row.get(target)
                if c is None:
                    cells_txt.append("")
                    continue
                mark = "" if as_expected(c) else " [bold magenta](UNEXPECTED)[/]"
                text = f"[{STYLE.get(c.outcome, '')}]{c.outcome}[/]{mark}\n{_esc(c.summary)}"
                if verbose:
                    text += f"\n[dim]{_esc(_evidence_text(c))}[/]"
                cells_txt.append(text)
            t.add_row(label, *cells_txt)
        console.print(t)
        ok = all(as_expected(c) for c in cells)
        console.print(("[bold green]all cells as expected[/]" if ok else "[bold red]some cells NOT as expected[/]")
                      + (f" ({seconds:.0f} s)" if seconds is not None else ""))
        return
    for label, row in table:
        for target in targets:
            c = row.get(target)
            if c is not None:
                print(f"{label:28} {target:9} {c.outcome:9} {c.summary}", file=file)


def _esc(text: str) -> str:
    return text.replace("[", "\\[")
