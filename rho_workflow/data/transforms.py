"""Invertible, serializable field transforms (numpy only).

A transform maps physical values to the normalized values the network sees and back:
``inverse(forward(x)) == x`` up to float rounding (for :class:`Log`, for ``x`` above its floor).
Each transform is recorded as a JSON dict in the training store and the checkpoint, so that
samples come back in physical units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

__all__ = ["Transform", "Identity", "Log", "Bounded", "Affine", "MinMax", "Chain", "PerChannel",
           "transform_from_dict"]


class Transform:
    """Base class: subclasses implement ``forward``, ``inverse`` and ``to_dict``."""

    kind = "base"

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def inverse(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def log_abs_derivative(self, x: np.ndarray) -> np.ndarray:
        """``log |d forward(x) / dx|`` element by element (every transform here acts elementwise)."""
        raise NotImplementedError

    def log_abs_det_jacobian(self, x: np.ndarray) -> np.ndarray:
        """``log |det d forward / dx|`` of each sample ``x[i]`` (summed over all but the first axis).

        The density of physical values is ``p_x(x) = p_y(forward(x)) |det J|``, so
        ``log p_x = log p_y + log_abs_det_jacobian(x)`` (change of variables).
        """
        d = self.log_abs_derivative(x)
        return d.reshape(d.shape[0], -1).sum(axis=1)


@dataclass
class Identity(Transform):
    kind = "identity"

    def forward(self, x):
        return np.asarray(x, dtype=np.float64)

    def inverse(self, y):
        return np.asarray(y, dtype=np.float64)

    def log_abs_derivative(self, x):
        return np.zeros_like(np.asarray(x, dtype=np.float64))

    def to_dict(self):
        return {"kind": self.kind}


@dataclass
class Log(Transform):
    """``y = log(max(x, floor))``; positive densities (lognormal fields) become Gaussian-like."""

    floor: float = 1e-12
    kind = "log"

    def __post_init__(self):
        if not self.floor > 0:
            raise ValueError(f"log transform: floor must be > 0, got {self.floor}")

    def forward(self, x):
        return np.log(np.maximum(np.asarray(x, dtype=np.float64), self.floor))

    def inverse(self, y):
        return np.exp(np.asarray(y, dtype=np.float64))

    def log_abs_derivative(self, x):
        """``-log x``; below the floor the transform is flat (not invertible), which raises."""
        x = np.asarray(x, dtype=np.float64)
        if not (x > self.floor).all():
            bad = x[~(x > self.floor)].ravel()[0]
            raise ValueError(f"log transform: the log-Jacobian needs values above the floor {self.floor:g}, "
                             f"found {bad:g}; a density of values clipped at the floor is not defined")
        return -np.log(x)

    def to_dict(self):
        return {"kind": self.kind, "floor": self.floor}


@dataclass
class Bounded(Transform):
    """Physical bounds by construction: every real ``y`` maps back inside ``[low, high]``.

    Both bounds: ``y = logit(u)``, ``u = (x - low) / (high - low)``, inverse
    ``x = low + (high - low) sigmoid(y)``; a lower bound only: ``y = log(x - low)``; an upper
    bound only: ``y = -log(high - x)``. Values within ``margin`` (in field units) of a bound,
    or beyond it, are moved to ``margin`` inside before the transform.
    """

    low: float | None = None
    high: float | None = None
    margin: float = 1e-6
    kind = "bounded"

    def __post_init__(self):
        if self.low is None and self.high is None:
            raise ValueError("bounded transform: give low, high or both")
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"bounded transform: low={self.low} must be < high={self.high}")
        if not self.margin > 0:
            raise ValueError(f"bounded transform: margin must be > 0, got {self.margin}")

    def _inside(self, x):
        x = np.asarray(x, dtype=np.float64)
        lo = -np.inf if self.low is None else self.low + self.margin
        hi = np.inf if self.high is None else self.high - self.margin
        return np.clip(x, lo, hi)

    def forward(self, x):
        x = self._inside(x)
        if self.high is None:
            return np.log(x - self.low)
        if self.low is None:
            return -np.log(self.high - x)
        u = (x - self.low) / (self.high - self.low)
        return np.log(u) - np.log1p(-u)

    def inverse(self, y):
        y = np.asarray(y, dtype=np.float64)
        if self.high is None:
            return self.low + np.exp(y)
        if self.low is None:
            return self.high - np.exp(-y)
        return self.low + (self.high - self.low) * (0.5 * (1.0 + np.tanh(0.5 * y)))

    def log_abs_derivative(self, x):
        x = self._inside(x)
        if self.high is None:
            return -np.log(x - self.low)
        if self.low is None:
            return -np.log(self.high - x)
        width = self.high - self.low
        u = (x - self.low) / width
        return -np.log(width) - np.log(u) - np.log1p(-u)

    def to_dict(self):
        return {"kind": self.kind, "low": self.low, "high": self.high, "margin": self.margin}


@dataclass
class Affine(Transform):
    """Per-channel standardization ``y = (x - shift) / scale`` (channel axis ``axis``)."""

    shift: list = field(default_factory=lambda: [0.0])
    scale: list = field(default_factory=lambda: [1.0])
    axis: int = 1
    kind = "affine"

    def __post_init__(self):
        self.shift = [float(v) for v in np.atleast_1d(self.shift)]
        self.scale = [float(v) for v in np.atleast_1d(self.scale)]
        if any(not (s > 0 and np.isfinite(s)) for s in self.scale):
            raise ValueError(f"affine transform: scale must be finite and > 0, got {self.scale}")

    @classmethod
    def fit(cls, x: np.ndarray, axis: int = 1) -> "Affine":
        """Mean and standard deviation per channel of ``x`` (channels along ``axis``)."""
        x = np.asarray(x, dtype=np.float64)
        other = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
        std = x.std(axis=other)
        return cls(shift=list(x.mean(axis=other)), scale=list(np.where(std > 0, std, 1.0)), axis=axis)

    def _bcast(self, values, ndim):
        shape = [1] * ndim
        shape[self.axis % ndim] = -1
        return np.asarray(values, dtype=np.float64).reshape(shape)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        return (x - self._bcast(self.shift, x.ndim)) / self._bcast(self.scale, x.ndim)

    def inverse(self, y):
        y = np.asarray(y, dtype=np.float64)
        return y * self._bcast(self.scale, y.ndim) + self._bcast(self.shift, y.ndim)

    def log_abs_derivative(self, x):
        x = np.asarray(x, dtype=np.float64)
        return np.broadcast_to(-np.log(self._bcast(self.scale, x.ndim)), x.shape).copy()

    def to_dict(self):
        return {"kind": self.kind, "shift": self.shift, "scale": self.scale, "axis": self.axis}


@dataclass
class MinMax(Transform):
    """``y = 2 (x - lo) / (hi - lo) - 1``, mapping [lo, hi] to [-1, 1]."""

    lo: float = 0.0
    hi: float = 1.0
    kind = "minmax"

    def __post_init__(self):
        if not self.hi > self.lo:
            raise ValueError(f"min-max transform: need hi > lo, got lo={self.lo}, hi={self.hi}")

    def forward(self, x):
        return 2.0 * (np.asarray(x, dtype=np.float64) - self.lo) / (self.hi - self.lo) - 1.0

    def inverse(self, y):
        return (np.asarray(y, dtype=np.float64) + 1.0) * 0.5 * (self.hi - self.lo) + self.lo

    def log_abs_derivative(self, x):
        return np.full(np.shape(x), np.log(2.0 / (self.hi - self.lo)))

    def to_dict(self):
        return {"kind": self.kind, "lo": self.lo, "hi": self.hi}


@dataclass
class Chain(Transform):
    """Transforms applied left to right by ``forward`` and right to left by ``inverse``."""

    steps: list = field(default_factory=list)
    kind = "chain"

    def forward(self, x):
        for t in self.steps:
            x = t.forward(x)
        return np.asarray(x, dtype=np.float64)

    def inverse(self, y):
        for t in reversed(self.steps):
            y = t.inverse(y)
        return np.asarray(y, dtype=np.float64)

    def log_abs_derivative(self, x):
        """Chain rule: the sum of each step's log-derivative at its own input."""
        x = np.asarray(x, dtype=np.float64)
        total = np.zeros_like(x)
        for t in self.steps:
            total = total + t.log_abs_derivative(x)
            x = t.forward(x)
        return total

    def to_dict(self):
        return {"kind": self.kind, "steps": [t.to_dict() for t in self.steps]}


@dataclass
class PerChannel(Transform):
    """One transform per channel: channel ``c`` (index ``c`` along ``axis``) goes through
    ``steps[c]``; e.g. a log for a density channel and none for a temperature channel."""

    steps: list = field(default_factory=list)
    axis: int = 1
    kind = "per_channel"

    def _apply(self, x, method: str):
        x = np.asarray(x, dtype=np.float64)
        axis = self.axis % x.ndim
        if x.shape[axis] != len(self.steps):
            raise ValueError(f"per-channel transform: array has {x.shape[axis]} channels along "
                             f"axis {self.axis}, the transform has {len(self.steps)}")
        parts = [getattr(t, method)(np.take(x, [c], axis=axis)) for c, t in enumerate(self.steps)]
        return np.concatenate(parts, axis=axis)

    def forward(self, x):
        return self._apply(x, "forward")

    def inverse(self, y):
        return self._apply(y, "inverse")

    def log_abs_derivative(self, x):
        return self._apply(x, "log_abs_derivative")

    def to_dict(self):
        return {"kind": self.kind, "axis": self.axis, "steps": [t.to_dict() for t in self.steps]}


_KINDS = {cls.kind: cls for cls in (Identity, Log, Bounded, Affine, MinMax, Chain, PerChannel)}


def transform_from_dict(spec: Mapping[str, Any]) -> Transform:
    """Rebuild a transform from its :meth:`Transform.to_dict` form."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in _KINDS:
        raise ValueError(f"unknown transform kind {kind!r}; valid kinds are {sorted(_KINDS)}")
    if kind == "chain":
        return Chain([transform_from_dict(s) for s in spec.get("steps", [])])
    if kind == "per_channel":
        return PerChannel([transform_from_dict(s) for s in spec.get("steps", [])],
                          axis=int(spec.get("axis", 1)))
    return _KINDS[kind](**spec)
