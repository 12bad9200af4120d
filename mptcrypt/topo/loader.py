"""Load a topology file the way `mn --custom FILE --topo NAME[,ARG...]` does."""

from __future__ import annotations

import ast
import importlib.util
import os
from types import ModuleType
from typing import Any

from mptcrypt.errors import ConfigError


def split_topo_spec(spec: str) -> tuple[str, list[Any], dict[str, Any]]:
    """'handover,30,lte_bw=10' -> ('handover', [30], {'lte_bw': 10}) (Mininet's splitArgs)."""
    name, *rest = [part.strip() for part in spec.split(",")]
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for part in rest:
        if "=" in part:
            key, value = part.split("=", 1)
            kwargs[key.strip()] = _literal(value.strip())
        else:
            args.append(_literal(part))
    return name, args, kwargs


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def load_module(path: str) -> ModuleType:
    if not os.path.isfile(path):
        raise ConfigError(f"topology file {path} not found")
    stem = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"mptcrypt_topology_{stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ConfigError(f"loading {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def topo_names(path: str) -> list[str]:
    return sorted(_topos(load_module(path), path))


def _topos(module: ModuleType, path: str) -> dict[str, Any]:
    topos = getattr(module, "topos", None)
    if not isinstance(topos, dict) or not topos:
        raise ConfigError(f"{path} defines no `topos = {{'name': TopoClass}}` dict")
    return topos


def load_topo(path: str, spec: str | None = None) -> tuple[Any, str, list[Any], dict[str, Any]]:
    """Build the topology `spec` ('name' or 'name,arg,...,key=value') of `path`.

    Without `spec`: the file's only topology, or the one named like the file. Returns (topo instance,
    name, args, kwargs).
    """
    module = load_module(path)
    topos = _topos(module, path)
    if spec:
        name, args, kwargs = split_topo_spec(spec)
    else:
        stem = os.path.splitext(os.path.basename(path))[0]
        if len(topos) == 1:
            name = next(iter(topos))
        elif stem in topos:
            name = stem
        else:
            raise ConfigError(f"{path} defines several topologies ({', '.join(sorted(topos))}): pick one with --topo NAME")
        args, kwargs = [], {}
    if name not in topos:
        raise ConfigError(f"unknown topology {name!r} in {path}; available: {', '.join(sorted(topos))}")
    try:
        topo = topos[name](*args, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"topology {name!r} does not take those arguments ({args}, {kwargs}): {exc}") from exc
    return topo, name, args, kwargs
