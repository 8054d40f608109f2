"""Config sections as pydantic models, and the one formatter of their errors.

Every section of the pipeline file derives from :class:`Section` (unknown keys are errors,
types are strict, bounds and choices are declared on the fields). :func:`validate_section`
validates a mapping and turns a :class:`pydantic.ValidationError` into a
:class:`~rho_workflow.errors.ConfigError` whose problems read ``"key.path: <rule>, got
<value>"``, every problem at once. A validator states a cross-field rule by raising
``ValueError("...")``; ``{path}`` in its text stands for the key path of the model it checks
(the message is prefixed with that path unless it starts with ``{path}``).
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from rho_workflow.errors import ConfigError

__all__ = ["Section", "validate_section", "format_errors"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, types are strict."""

    model_config = ConfigDict(extra="forbid", strict=True)


def validate_section(cls: type[BaseModel], given: Any, path: str,
                     context: Mapping[str, Any] | None = None) -> Any:
    """Validate ``given`` against ``cls``; raise :class:`ConfigError` with every problem."""
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise ConfigError([f"{path}: must be a mapping of keys to values, got {given!r}"])
    try:
        return cls.model_validate(dict(given), context=dict(context or {}))
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, cls, path)) from None


_TYPES = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
          "float_type": "a number", "float_parsing": "a number", "bool_type": "a boolean",
          "bool_parsing": "a boolean", "string_type": "a string", "dict_type": "a mapping",
          "model_type": "a mapping", "model_attributes_type": "a mapping",
          "list_type": "a list", "tuple_type": "a list"}
_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
           "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}


def _join(path: str, loc: tuple) -> str:
    out = path
    for part in loc:
        out = f"{out}[{part}]" if isinstance(part, int) else (f"{out}.{part}" if out else str(part))
    return out


def _unwrap(annotation: Any) -> list[Any]:
    """The model classes and Literal choices an annotation can hold (through Optional, dict)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _unwrap(arg)]
    if origin is dict:
        return [("dict", a) for a in _unwrap(typing.get_args(annotation)[1])]
    return [annotation]


def _node(cls: Any, loc: tuple) -> tuple[Any, Any]:
    """Walk ``loc`` from model ``cls``; return (model at the parent, annotation of the leaf)."""
    current, annotation = cls, None
    i = 0
    while i < len(loc):
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None, None
        field = current.model_fields.get(str(loc[i]))
        if field is None:
            return current, None
        annotation = field.annotation
        i += 1
        if i == len(loc):
            return current, annotation
        nxt = None
        for cand in _unwrap(annotation):
            if isinstance(cand, tuple):
                if isinstance(cand[1], type) and issubclass(cand[1], BaseModel):
                    nxt, i = cand[1], i + 1
                    break
            elif isinstance(cand, type) and issubclass(cand, BaseModel):
                nxt = cand
                break
        if nxt is None:
            return None, annotation
        current = nxt
    return current, annotation


def _choices(annotation: Any) -> list[Any] | None:
    for cand in _unwrap(annotation):
        if typing.get_origin(cand) is Literal:
            return list(typing.get_args(cand))
    return None


def _rule(err: Mapping[str, Any], annotation: Any) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        return f"must be one of {_choices(annotation) or ctx.get('expected')}, got {value!r}"
    if kind in _BOUNDS:
        text, key = _BOUNDS[kind]
        return f"must be {text} {ctx.get(key)}, got {value!r}"
    if kind in _TYPES:
        if value is None:
            return "must not be null"
        return f"must be {_TYPES[kind]}, got {value!r} ({type(value).__name__})"
    return f"{err['msg']}, got {value!r}"


def format_errors(exc: ValidationError, cls: type[BaseModel], path: str) -> list[str]:
    """One problem per rule broken: ``"key.path: <rule>, got <value>"``; unknown keys are
    grouped per mapping with the valid keys."""
    problems: list[str] = []
    unknown: dict[tuple, list[str]] = {}
    seen: set[tuple] = set()
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
            continue
        # a union reports one error per member; keep the first per location
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in _MEMBERS)))
        if err["type"] in _TYPES or err["type"] == "literal_error":
            if loc in seen:
                continue
            seen.add(loc)
        where = _join(path, loc)
        if err["type"] in ("value_error", "assertion_error"):
            message = str(err["ctx"]["error"]) if "error" in err.get("ctx", {}) else err["msg"]
            for line in message.splitlines():
                line = line if line.startswith("{path}") else "{path}: " + line
                problems.append(line.replace("{path}", where))
            continue
        problems.append(f"{where}: {_rule(err, _node(cls, loc)[1])}")
    for parent, keys in unknown.items():
        model, _ = _node(cls, parent + ("",)) if parent else (cls, None)
        valid = sorted(model.model_fields) if model is not None else []
        problems.append(f"{_join(path, parent)}: unknown keys {sorted(keys)}; "
                        f"valid keys are {valid}")
    return problems


_MEMBERS = {"str", "int", "float", "bool", "list", "dict", "tuple", "none", "literal"}
