"""Validation of config sections: dataclasses whose fields carry their rule.

A section is a dataclass whose fields are declared with :func:`opt` (types, choices, bounds,
nullable). :func:`build_section` checks a mapping against it and collects every problem with
its key path (``sampling.chunk_size: must be >= 1, got 0``) instead of stopping at the first;
a section may add cross-field rules in a ``check(path) -> list[str]`` method.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import field, fields
from typing import Any, Mapping

from rho_workflow.errors import ConfigError

__all__ = ["ConfigError", "opt", "build_section", "check_value"]

_REQUIRED = object()


def opt(default: Any = _REQUIRED, *, types: tuple = (), choices: tuple | None = None,
        ge: float | None = None, gt: float | None = None, le: float | None = None,
        lt: float | None = None, nullable: bool = False) -> Any:
    """A section field with its validation rule (types, choices and bounds)."""
    meta = {"types": types, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt,
            "nullable": nullable}
    if default is _REQUIRED:
        return field(metadata=meta)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _type_name(types: tuple) -> str:
    return " or ".join({bool: "a boolean", int: "an integer", float: "a number", str: "a string",
                        dict: "a mapping", list: "a list"}[t] for t in types)


def check_value(value: Any, meta: Mapping[str, Any], key: str) -> tuple[Any, list[str]]:
    """Check one value against its rule; returns the (coerced) value and the problems."""
    if value is None:
        return value, ([] if meta["nullable"] else [f"{key}: must not be null"])
    types = meta["types"]
    ok = False
    for t in types:
        if t is bool:
            ok = isinstance(value, bool)
        elif t is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif t is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                value = float(value)
        else:
            ok = isinstance(value, t)
        if ok:
            break
    if not ok:
        return value, [f"{key}: must be {_type_name(types)}, got {value!r} ({type(value).__name__})"]
    problems = []
    if meta["choices"] is not None and value not in meta["choices"]:
        problems.append(f"{key}: must be one of {list(meta['choices'])}, got {value!r}")
    for bound, op, text in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                            ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
        if meta[bound] is not None and not op(value, meta[bound]):
            problems.append(f"{key}: must be {text} {meta[bound]}, got {value!r}")
    return value, problems


def build_section(cls: type, given: Any, path: str, problems: list[str]) -> Any:
    """Validate mapping ``given`` against the dataclass ``cls``; append problems; return an
    instance (with defaults where a value was wrong, so that later checks can still run)."""
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        problems.append(f"{path}: must be a mapping of keys to values, got {given!r}")
        given = {}
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(given) - set(known))
    if unknown:
        problems.append(f"{path}: unknown keys {unknown}; valid keys are {sorted(known)}")
    values = {}
    for name, f in known.items():
        key = f"{path}.{name}"
        if name in given:
            value, found = check_value(given[name], f.metadata, key)
            problems.extend(found)
            if not found:
                values[name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{key}: is required")
    try:
        section = cls(**values)
    except TypeError:
        return None
    problems.extend(section.check(path) if hasattr(section, "check") else [])
    return section
