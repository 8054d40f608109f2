"""Point data of Sohl-Dickstein et al. (2015): the 2D swiss roll and binary heartbeat sequences.

Both are written by ``make-data`` as sweeps of netCDF files (one run per file, many samples
along a ``sample`` dimension) and labelled with :class:`~rho_workflow.data.synthetic.FieldSpec`
like the field kinds, so ingest treats them the same way: the "spatial" axis of a swiss-roll
sample is its ``component`` (x, y); that of a heartbeat sample is ``step`` (time in s).

``swiss-roll``
    ``t = 1.5 pi (1 + 2 turns u)``, ``(x, y) = t (cos t, sin t) / 10 + noise * N(0, I)``,
    ``u ~ U(0, 1)``; parameters ``noise`` (dimensionless) and ``turns``.
``heartbeat``
    Binary sequences of ``length`` time bins of ``dt = 1 s``: a spike (1) every ``period``
    bins from a phase drawn uniformly in ``[0, period)``, zeros elsewhere; parameter
    ``period`` (s, categorical).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from rho_workflow.data.synthetic import FieldSpec

__all__ = ["POINT_KINDS", "swiss_roll", "heartbeat", "point_spec", "generate_points",
           "default_point_params"]

POINT_KINDS = ("swiss-roll", "heartbeat")

SWISS_ROLL_RANGES = {"noise": (0.01, 0.2), "turns": (0.5, 1.0)}
HEARTBEAT_PERIODS = (3, 4, 5, 6)
HEARTBEAT_LENGTH = 20


def swiss_roll(n: int, noise: float, turns: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` points ``t (cos t, sin t) / 10 + noise * eps``, ``t = 1.5 pi (1 + 2 turns u)``.

    Returns
    -------
    ndarray, shape (n, 2), float64
    """
    if n < 1:
        raise ValueError(f"swiss roll: n={n} must be a positive number of points")
    if noise < 0 or not turns > 0:
        raise ValueError(f"swiss roll: need noise >= 0 and turns > 0, got {noise}, {turns}")
    t = 1.5 * np.pi * (1.0 + 2.0 * turns * rng.uniform(size=n))
    xy = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 10.0
    return xy + noise * rng.standard_normal((n, 2))


def heartbeat(n: int, period: int, rng: np.random.Generator,
              length: int = HEARTBEAT_LENGTH) -> np.ndarray:
    """``n`` binary sequences with a 1 every ``period`` bins from a uniform random phase.

    Returns
    -------
    ndarray, shape (n, length), int8
    """
    if n < 1 or length < 1:
        raise ValueError(f"heartbeat: n={n} and length={length} must be positive")
    if int(period) != period or not 1 <= period <= length:
        raise ValueError(f"heartbeat: period={period} must be an integer in [1, {length}]")
    period = int(period)
    phase = rng.integers(0, period, size=n)
    steps = np.arange(length)
    return ((steps[None, :] - phase[:, None]) % period == 0).astype(np.int8)


def point_spec(kind: str, length: int = HEARTBEAT_LENGTH) -> FieldSpec:
    """Labels of one sample of a point kind (see the module docstring)."""
    if kind == "swiss-roll":
        return FieldSpec(
            name="position", long_name="position of a swiss-roll point", units="1",
            dims=("component",), coords={"component": (np.arange(2), "1")},
            param_units={"noise": "1", "turns": "1"},
            param_kinds={"noise": "continuous", "turns": "continuous"},
            param_ranges=dict(SWISS_ROLL_RANGES),
            attrs={"component_names": "x y"},
        )
    if kind == "heartbeat":
        return FieldSpec(
            name="spike", long_name="binary heartbeat sequence", units="1",
            dims=("step",), coords={"step": (np.arange(float(length)), "s")},
            param_units={"period": "s"}, param_kinds={"period": "categorical"},
            param_values={"period": HEARTBEAT_PERIODS},
        )
    raise ValueError(f"point data kind {kind!r} is not one of {POINT_KINDS}")


def generate_points(kind: str, params: Mapping[str, Any], n: int, *,
                    rng: np.random.Generator, length: int = HEARTBEAT_LENGTH
                    ) -> tuple[np.ndarray, FieldSpec]:
    """``n`` samples of a point kind at one parameter point: ``(array (n, ...), spec)``."""
    spec = point_spec(kind, length)
    expected = set(spec.param_units)
    if set(params) != expected:
        raise ValueError(f"parameters of {kind!r} must be exactly {sorted(expected)}, "
                         f"got {sorted(params)}")
    if kind == "swiss-roll":
        return swiss_roll(n, float(params["noise"]), float(params["turns"]), rng), spec
    return heartbeat(n, int(params["period"]), rng, length), spec


def default_point_params(kind: str, n_runs: int, rng: np.random.Generator
                         ) -> list[dict[str, Any]]:
    """Sweep design: swiss-roll noise and turns uniform in their ranges; heartbeat periods
    cycled through :data:`HEARTBEAT_PERIODS`."""
    if n_runs < 1:
        raise ValueError(f"n_runs={n_runs} must be a positive number of runs")
    if kind == "swiss-roll":
        lo = np.array([r[0] for r in SWISS_ROLL_RANGES.values()])
        hi = np.array([r[1] for r in SWISS_ROLL_RANGES.values()])
        draws = lo + (hi - lo) * rng.uniform(size=(n_runs, 2))
        return [{"noise": float(a), "turns": float(b)} for a, b in draws]
    if kind == "heartbeat":
        return [{"period": HEARTBEAT_PERIODS[i % len(HEARTBEAT_PERIODS)]} for i in range(n_runs)]
    raise ValueError(f"point data kind {kind!r} is not one of {POINT_KINDS}")
