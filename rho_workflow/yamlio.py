"""YAML files of the package (pipelines, cluster sections): safe loading, duplicate keys refused.

PyYAML's ``safe_load`` keeps the last of two equal keys in a mapping without a word, so a
second ``sampling:`` section or ``members`` given twice silently replaces the first.
:class:`StrictSafeLoader` is the safe loader (no Python objects) with one more rule: a key may
appear once per mapping; a repeat is a :class:`~rho_workflow.errors.ConfigError` naming both
lines.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

from rho_workflow.errors import ConfigError

__all__ = ["StrictSafeLoader", "load_yaml"]


class StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:  # the keys written here; merged ones (<<) may be overridden
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key; the base class reports it
                break
            line = key_node.start_mark.line + 1
            if first is not None:
                raise _DuplicateKey(key, first, line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(ConstructorError):
    def __init__(self, key: Any, first: int, second: int):
        super().__init__(problem=f"duplicate key {key!r}")
        self.key, self.first, self.second = key, first, second


def load_yaml(text: str, source: str) -> Any:
    """Parse ``text`` (the content of ``source``, a file name or ``--cluster``) safely.

    Raises
    ------
    ConfigError
        Not valid YAML (with the line and column), or a key repeated in one mapping (both
        line numbers).
    """
    try:
        return yaml.load(text, Loader=StrictSafeLoader)  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKey as exc:
        raise ConfigError([f"line {exc.second}: key {exc.key!r} is given twice in one mapping "
                           f"(first on line {exc.first}); the later one would silently replace "
                           "the earlier; fix: keep one of them (merge the two)"],
                          source) from None
    except yaml.YAMLError as exc:
        text = " ".join(str(exc).replace('"<unicode string>"', source).split())
        raise ConfigError([f"not valid YAML: {text}"], source) from None
