"""Typed access to one mapping of the ``data:`` section, collecting problems with key paths."""

from __future__ import annotations

from typing import Any, Mapping

from rho_workflow.data.units import UnitsError, parse_units

__all__ = ["Reader"]


class Reader:
    """Typed access to one mapping of the config, collecting problems with key paths."""

    def __init__(self, d: Any, path: str, problems: list[str], allowed: tuple[str, ...]):
        self.path, self.problems = path, problems
        if not isinstance(d, Mapping):
            problems.append(f"{path}: value {d!r} must be a mapping of keys to values")
            d = {}
        self.d = dict(d)
        for key in self.d:
            if key not in allowed:
                problems.append(f"{path}.{key}: unknown key (rule: allowed keys are "
                                f"{sorted(allowed)}); fix: remove or rename it")

    def get(self, key: str, types: type | tuple, default: Any = None, *,
            required: bool = False, choices: tuple | None = None) -> Any:
        where = f"{self.path}.{key}"
        if key not in self.d:
            if required:
                self.problems.append(f"{where}: required key is missing")
            return default
        value = self.d[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            self.problems.append(f"{where}: value {value!r} must be {_names(types)}, not a boolean")
            return default
        if not isinstance(value, types):
            self.problems.append(f"{where}: value {value!r} must be {_names(types)}")
            return default
        if choices is not None and value not in choices:
            self.problems.append(f"{where}: value {value!r} is not one of {list(choices)}")
            return default
        return value

    def str_list(self, key: str, *, required: bool = False) -> list[str]:
        value = self.get(key, (str, list), None, required=required)
        if value is None:
            return []
        items = [value] if isinstance(value, str) else value
        if required and not items:
            self.problems.append(f"{self.path}.{key}: value [] must list at least one entry")
            return []
        bad = [v for v in items if not isinstance(v, str) or not v]
        if bad:
            self.problems.append(f"{self.path}.{key}: entries {bad!r} must be non-empty strings")
            return []
        return list(items)

    def units(self, key: str, default: str | None = None) -> str | None:
        value = self.get(key, str, default)
        if value is not None:
            try:
                parse_units(value, where=f"{self.path}.{key}")
            except UnitsError as exc:
                self.problems.append(str(exc))
        return value


def _names(types: type | tuple) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {str: "a string", int: "an integer", float: "a number", list: "a list",
             dict: "a mapping", bool: "true or false"}
    return " or ".join(names.get(t, t.__name__) for t in types)
