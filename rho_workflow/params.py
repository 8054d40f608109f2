"""Parameter spaces: the named physical parameters a model is conditioned on.

A :class:`ParamSpace` is plain data (no torch, no pint): each :class:`Parameter` has a
name, the canonical units its values are expressed in, a kind (``continuous`` or
``categorical``) and a declared range (``low``/``high``) or set of ``values``. It converts
lists of parameter dicts to a float64 array of shape ``(B, P)`` -- continuous values as
given, categorical values as the index into ``values`` -- and validates them on the way,
so every layer above (encoders, samplers, sweeps) works on one checked representation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from rho_workflow.errors import RhoWorkflowError

__all__ = ["Parameter", "ParamSpace", "ParameterError"]

KINDS = ("continuous", "categorical")


class ParameterError(RhoWorkflowError, ValueError):
    """A parameter value or parameter set breaks the rules of its :class:`ParamSpace`."""


@dataclass(frozen=True)
class Parameter:
    """One physical parameter.

    Parameters
    ----------
    name : str
        Identifier used in parameter dicts, files and output coordinates.
    units : str
        Canonical units of the values (UDUNITS spelling, ``"1"`` for dimensionless).
    kind : {"continuous", "categorical"}
    low, high : float, optional
        Declared range of a continuous parameter (inclusive). Required for continuous ones.
    values : sequence, optional
        Allowed values of a categorical parameter (numbers or strings), in a fixed order.
    calendar : str, optional
        CF calendar of a time parameter, whose ``units`` are then ``"<unit> since <date>"``
        (:mod:`rho_workflow.data.calendars`).
    """

    name: str
    units: str = "1"
    kind: str = "continuous"
    low: float | None = None
    high: float | None = None
    values: tuple = field(default=())
    calendar: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ParameterError(
                f"parameter {self.name!r}: kind {self.kind!r} is not one of {KINDS}"
            )
        if self.kind == "continuous":
            if self.low is None or self.high is None:
                raise ParameterError(
                    f"continuous parameter {self.name!r} needs a declared range: low and high"
                )
            if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
                raise ParameterError(
                    f"continuous parameter {self.name!r}: range [{self.low}, {self.high}] must be "
                    "finite with low <= high"
                )
        else:
            if len(self.values) == 0:
                raise ParameterError(f"categorical parameter {self.name!r} needs its list of values")
            object.__setattr__(self, "values", tuple(self.values))
            if len(set(self.values)) != len(self.values):
                raise ParameterError(f"categorical parameter {self.name!r} has duplicate values")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "units": self.units, "kind": self.kind}
        if self.kind == "continuous":
            out.update(low=float(self.low), high=float(self.high))
        else:
            out["values"] = list(self.values)
        if self.calendar is not None:
            out["calendar"] = self.calendar
        return out


class ParamSpace:
    """An ordered set of :class:`Parameter` with validation and array conversion."""

    def __init__(self, params: Iterable[Parameter]):
        self.params: tuple[Parameter, ...] = tuple(params)
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ParameterError(f"duplicate parameter names in {names}")
        self._index = {p.name: i for i, p in enumerate(self.params)}

    # -- construction and serialization ---------------------------------------------------
    @classmethod
    def from_dict(cls, spec: Sequence[Mapping[str, Any]]) -> "ParamSpace":
        return cls(Parameter(**{**p, "values": tuple(p.get("values", ()))}) for p in spec)

    def to_dict(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.params]

    @classmethod
    def infer(cls, points: Sequence[Mapping[str, Any]], units: Mapping[str, str] | None = None,
              categorical: Iterable[str] = ()) -> "ParamSpace":
        """Build a space from observed training points: continuous ranges span the data;
        non-numeric values (and names listed in ``categorical``) become categorical."""
        if not points:
            raise ParameterError("cannot infer a parameter space from an empty list of points")
        units = dict(units or {})
        categorical = set(categorical)
        params = []
        for name in points[0]:
            vals = [pt[name] for pt in points]
            numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                          for v in vals)
            if numeric and name not in categorical:
                arr = np.asarray(vals, dtype=np.float64)
                params.append(Parameter(name, units.get(name, "1"), "continuous",
                                        float(arr.min()), float(arr.max())))
            else:
                uniq = list(dict.fromkeys(_plain(v) for v in vals))
                params.append(Parameter(name, units.get(name, "1"), "categorical", values=tuple(uniq)))
        return cls(params)

    # -- accessors --------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, name: str) -> Parameter:
        return self.params[self._index[name]]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParamSpace) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"ParamSpace({', '.join(p.name + '[' + p.units + ']' for p in self.params)})"

    # -- conversion ---------------------------------------------------------------------------
    def to_array(self, points: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                 allow_extrapolation: bool = False) -> np.ndarray:
        """Validate parameter dicts and return a float64 array of shape ``(B, P)``.

        Continuous values are kept as given (canonical units); categorical values become the
        index of the value in ``Parameter.values``. Every problem found is reported together.
        """
        if isinstance(points, Mapping):
            points = [points]
        out = np.empty((len(points), len(self.params)), dtype=np.float64)
        errors: list[str] = []
        expected = set(self.names)
        for b, point in enumerate(points):
            given = set(point)
            if given != expected:
                missing, extra = sorted(expected - given), sorted(given - expected)
                errors.append(
                    f"point {b}: parameter names must be exactly {sorted(expected)}"
                    + (f"; missing {missing}" if missing else "")
                    + (f"; unexpected {extra}" if extra else "")
                )
                continue
            for j, p in enumerate(self.params):
                value = point[p.name]
                try:
                    out[b, j] = self._encode_value(p, value, allow_extrapolation)
                except ParameterError as exc:
                    errors.append(f"point {b}: {exc}")
        if errors:
            raise ParameterError("invalid parameter values:\n  " + "\n  ".join(errors))
        return out

    def to_dicts(self, array: np.ndarray) -> list[dict[str, Any]]:
        """Inverse of :meth:`to_array` (categorical indices back to their values)."""
        array = np.asarray(array, dtype=np.float64).reshape(-1, len(self.params))
        points = []
        for row in array:
            point = {}
            for p, v in zip(self.params, row):
                point[p.name] = p.values[int(round(v))] if p.kind == "categorical" else float(v)
            points.append(point)
        return points

    def normalize(self, array: np.ndarray) -> np.ndarray:
        """Continuous columns mapped affinely from [low, high] to [0, 1] (a zero-width range
        maps to 0.5); categorical columns (indices) are returned unchanged."""
        array = np.asarray(array, dtype=np.float64)
        out = array.copy()
        for j, p in enumerate(self.params):
            if p.kind == "continuous":
                width = p.high - p.low
                out[..., j] = 0.5 if width == 0 else (array[..., j] - p.low) / width
        return out

    @staticmethod
    def _encode_value(p: Parameter, value: Any, allow_extrapolation: bool) -> float:
        if p.kind == "categorical":
            value = _plain(value)
            if value not in p.values:
                raise ParameterError(
                    f"categorical parameter {p.name!r}: value {value!r} was never seen; "
                    f"allowed values are {list(p.values)}"
                )
            return float(p.values.index(value))
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise ParameterError(
                f"continuous parameter {p.name!r}: value {value!r} is not a number"
            ) from None
        if not math.isfinite(x):
            raise ParameterError(f"continuous parameter {p.name!r}: value {x} is not finite")
        if not allow_extrapolation and not (p.low <= x <= p.high):
            raise ParameterError(
                f"continuous parameter {p.name!r}: value {x} {p.units} is outside the declared "
                f"range [{p.low}, {p.high}] {p.units}; pass allow_extrapolation=True to sample "
                "outside the training range deliberately"
            )
        return x


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so that values compare and serialize as JSON."""
    if isinstance(value, np.generic):
        return value.item()
    return value
