"""Sweep plans: which samples a sweep holds, how they are seeded, chunked and batched.

A plan is plain data computed before anything runs (``--dry-run`` prints it). The samples of
a sweep are numbered ``0 .. n_samples - 1`` point-major (sample ``i`` is member
``i % members`` of point ``i // members``); a grid's points are the Cartesian product of its
axes in the order of the model's parameter space (C order, the last parameter fastest).

* **Seeds** -- sample ``m`` of point ``p`` is seeded by ``derive_seed(seed, p, m)`` with ``p``
  the point's dict in canonical units, so a sample does not depend on where it is computed.
* **Micro-batches** -- the network sees fixed blocks ``[k * batch_size, (k + 1) * batch_size)``
  of the sample numbers (cut at the end of the sweep), whatever the chunking: batched CPU
  kernels need not give bit-identical rows for different batch compositions, and this layout
  keeps the compositions fixed.
* **Chunks** -- ``[j * chunk_size, (j + 1) * chunk_size)``, one Dask task each; ``chunk_size``
  is a multiple of ``batch_size``, so a chunk holds whole micro-batches.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rho_workflow.atomic import file_sha256
from rho_workflow.data.calendars import is_time_units
from rho_workflow.diffusion.random import derive_seed
from rho_workflow.diffusion.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS
from rho_workflow.params import ParameterError, ParamSpace
from rho_workflow.errors import ConfigError

__all__ = ["check_grid_spec", "SweepRequest", "Chunk", "SweepPlan", "plan_sweep", "grid_axis_values", "read_table"]


@dataclass(frozen=True)
class SweepRequest:
    """What a user asks of a sweep, before it is resolved against a model (the typed input of
    :func:`plan_sweep`): exactly one of ``grid`` (parameter -> values or range) and ``table``
    (rows of parameter dicts, or a CSV path), in ``table_units``; ``members`` per point."""

    grid: Mapping[str, Any] | None = None
    table: list | str | None = None
    table_units: Mapping[str, str] = field(default_factory=dict)
    members: int = 4
    seed: int = 0
    sampler: str = DEFAULT_SAMPLER
    steps: int = DEFAULT_STEPS
    spacing: str | None = None
    guidance: float = 0.0
    allow_extrapolation: bool = False
    batch_size: int = 16
    chunk_size: int = 64
    conditioning: Mapping[str, Any] | None = None

    @classmethod
    def from_section(cls, section: Any) -> "SweepRequest":
        """From a validated ``sampling`` section (or any object with these attributes)."""
        values = {f.name: getattr(section, f.name, None) for f in fields(cls)}
        cond = values.get("conditioning")
        values["conditioning"] = cond.model_dump() if hasattr(cond, "model_dump") else cond
        return cls(**{k: v for k, v in values.items() if v is not None or k in ("grid", "table")})


@dataclass(frozen=True)
class Chunk:
    """Samples ``start .. stop - 1`` of a sweep: the work of one task."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class SweepPlan:
    """Everything a sweep task needs besides the model (JSON-able; see the module docstring)."""

    layout: str
    names: list[str]
    units: dict[str, str]
    points: list[dict[str, Any]]
    members: int
    seed: int
    sampler: str
    steps: int
    guidance: float
    allow_extrapolation: bool
    batch_size: int
    chunk_size: int
    axes: dict[str, list] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)
    #: ``observations`` (absolute path), its ``sha256``, ``variable`` and ``cg_iters``: every
    #: sample is conditioned on them (part of the sweep's fingerprint, so resume notices a change)
    conditioning: dict[str, Any] | None = None
    calendars: dict[str, str] = field(default_factory=dict)
    #: noise-level spacing of the sampler (None: its registry default; left out of the
    #: fingerprint then, so sweeps planned before the option existed still resume)
    spacing: str | None = None

    def __post_init__(self) -> None:
        if not self.chunks:
            n = self.n_samples
            self.chunks = [Chunk(j, s, min(s + self.chunk_size, n))
                           for j, s in enumerate(range(0, n, self.chunk_size))]

    @property
    def n_points(self) -> int:
        return len(self.points)

    @property
    def n_samples(self) -> int:
        return self.n_points * self.members

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the sweep's sample axes: ``(*axis lengths, members)`` for a grid,
        ``(cases, members)`` for a table."""
        if self.layout == "grid":
            return (*(len(self.axes[n]) for n in self.names), self.members)
        return (self.n_points, self.members)

    def point_and_member(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Point index and member of samples ``start .. stop - 1``."""
        i = np.arange(start, stop)
        return i // self.members, i % self.members

    def points_of(self, start: int, stop: int) -> list[dict[str, Any]]:
        p, _ = self.point_and_member(start, stop)
        return [self.points[k] for k in p]

    def seeds_of(self, start: int, stop: int) -> list[int]:
        """``derive_seed(seed, point, member)`` of samples ``start .. stop - 1``."""
        p, m = self.point_and_member(start, stop)
        return [derive_seed(self.seed, self.points[k], int(j)) for k, j in zip(p, m)]

    def micro_batches(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The fixed blocks of ``batch_size`` samples that cover ``start .. stop - 1``."""
        b = self.batch_size
        first, last = (start // b) * b, stop
        return [(max(s, start), min(s + b, last)) for s in range(first, last, b)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["chunks"] = [[c.index, c.start, c.stop] for c in self.chunks]
        if d["spacing"] is None:
            del d["spacing"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SweepPlan":
        d = dict(d)
        d["chunks"] = [Chunk(*c) for c in d.get("chunks", [])]
        return cls(**d)

    def describe(self) -> str:
        """A few lines for ``--dry-run``."""
        if self.layout == "grid":
            axes = ", ".join(f"{n}[{self.units[n]}]: {len(self.axes[n])} values "
                             f"{_short(self.axes[n])}" for n in self.names)
        else:
            axes = f"{self.n_points} cases of ({', '.join(self.names)})"
        sizes = sorted({c.size for c in self.chunks})
        return (f"{self.layout} sweep: {axes}; {self.members} members per point -> "
                f"{self.n_samples} samples\n"
                f"  sampler {self.sampler}, {self.steps} steps"
                f"{f' ({self.spacing} levels)' if self.spacing else ''}, guidance {self.guidance}, "
                f"seed {self.seed}\n"
                f"  {len(self.chunks)} chunk task(s) of {'/'.join(map(str, sizes))} samples, "
                f"network micro-batch {self.batch_size}")


def _short(values: Sequence[Any]) -> str:
    shown = [f"{v:.4g}" if isinstance(v, float) else repr(v) for v in values[:4]]
    return "[" + ", ".join(shown) + (", ...]" if len(values) > 4 else "]")


def check_grid_spec(grid: Mapping[str, Any], path: str) -> list[str]:
    """Every problem of a ``sampling.grid`` mapping (values, or ranges with num | step, units)."""
    problems = []
    if not grid:
        problems.append(f"{path}: needs at least one parameter")
    for name, spec in grid.items():
        key = f"{path}.{name}"
        if isinstance(spec, list):
            spec = {"values": spec}
        if not isinstance(spec, Mapping):
            problems.append(f"{key}: must be a list of values or a mapping with 'values' or "
                            f"'start'/'stop'/'num'|'step' (and optional 'units'), got {spec!r}")
            continue
        allowed = {"values", "start", "stop", "num", "step", "units"}
        unknown = sorted(set(spec) - allowed)
        if unknown:
            problems.append(f"{key}: unknown keys {unknown}; valid keys are {sorted(allowed)}")
        if "units" in spec and not isinstance(spec["units"], str):
            problems.append(f"{key}.units: must be a unit string, got {spec['units']!r}")
        if "values" in spec:
            if set(spec) & {"start", "stop", "num", "step"}:
                problems.append(f"{key}: give either 'values' or a range 'start'/'stop'/'num'|'step'")
            elif not isinstance(spec["values"], list) or not spec["values"]:
                problems.append(f"{key}.values: must be a non-empty list, got {spec['values']!r}")
            continue
        for k in ("start", "stop"):
            v = spec.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                problems.append(f"{key}.{k}: a range needs a number, got {v!r}")
        if ("num" in spec) == ("step" in spec):
            problems.append(f"{key}: a range needs exactly one of 'num' (points, ends included) "
                            "or 'step' (spacing)")
        elif "num" in spec and (not isinstance(spec["num"], int) or isinstance(spec["num"], bool)
                                or spec["num"] < 1):
            problems.append(f"{key}.num: must be an integer >= 1, got {spec['num']!r}")
        elif "step" in spec and (isinstance(spec["step"], bool)
                                 or not isinstance(spec["step"], (int, float)) or spec["step"] <= 0):
            problems.append(f"{key}.step: must be a number > 0, got {spec['step']!r}")
    return problems


def grid_axis_values(spec: Any, name: str, units: str, path: str,
                     calendar: str | None = None) -> list:
    """Values of one grid axis in the canonical ``units``.

    ``spec`` is a list of values, ``{values: [...], units}`` or a range
    ``{start, stop, num | step, units}`` (``num``: ends included; ``step``: ``stop`` included
    when it falls on the grid within rounding). A time parameter (``units`` ``"days since
    ..."`` on ``calendar``) also takes dates (``"2090-06-01"``) and offsets in any unit of
    the calendar (``units: "months since 2090-01-01"``; :mod:`rho_workflow.data.calendars`).
    """
    from rho_workflow.data.calendars import CalendarError, is_time_units, to_time_offsets
    from rho_workflow.data.units import UnitsError, convert

    if isinstance(spec, list):
        spec = {"values": spec}
    if "values" in spec:
        values = list(spec["values"])
    elif "num" in spec:
        values = np.linspace(float(spec["start"]), float(spec["stop"]), int(spec["num"])).tolist()
    else:
        start, stop, step = float(spec["start"]), float(spec["stop"]), float(spec["step"])
        n = int(math.floor((stop - start) / step + 1e-9)) + 1
        values = (start + step * np.arange(max(n, 0))).tolist()
    given = spec.get("units")
    if is_time_units(units):
        try:
            return to_time_offsets(values, given, units, calendar, f"{path}.{name}")
        except CalendarError as exc:
            raise ConfigError([str(exc)]) from None
    if given is None or all(isinstance(v, str) for v in values):
        return values
    try:
        return [float(convert(float(v), given, units, where=f"{path}.{name}")) for v in values]
    except UnitsError as exc:
        raise ConfigError([str(exc)]) from None
    except (TypeError, ValueError):
        raise ConfigError([f"{path}.{name}: values {values!r} must be numbers to be converted "
                           f"from {given!r} to {units!r}"]) from None


def read_table(table: list | str, path: str) -> list[dict[str, Any]]:
    """Rows of a ``table`` (a list of dicts, or a CSV file with a header of parameter names)."""
    if isinstance(table, list):
        return [dict(row) for row in table]
    file = Path(table)
    if not file.is_file():
        raise ConfigError([f"{path}: table file {file} does not exist"])
    with open(file, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k.strip(): _number(v) for k, v in row.items()} for row in rows]


def _number(text: str) -> Any:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text.strip()


def plan_sweep(sampling: SweepRequest, param_space: ParamSpace, path: str = "sampling") -> SweepPlan:
    """Resolve a :class:`SweepRequest` (or a ``sampling`` section) against the model's parameter space.

    Grid and table values are converted to the canonical units of ``param_space`` and
    validated (range, categories) before any task runs; errors name the key path.
    """
    names = param_space.names
    units = {p.name: p.units for p in param_space.params}
    calendars = {p.name: p.calendar for p in param_space.params if p.calendar is not None}
    problems: list[str] = []
    axes: dict[str, list] = {}
    if sampling.grid is not None:
        missing = [n for n in names if n not in sampling.grid]
        extra = [n for n in sampling.grid if n not in names]
        if missing or extra:
            raise ConfigError([f"{path}.grid: must give values for exactly the model's parameters "
                               f"{names}" + (f"; missing {missing}" if missing else "")
                               + (f"; unknown {extra}" if extra else "")])
        for n in names:
            try:
                axes[n] = grid_axis_values(sampling.grid[n], n, units[n], f"{path}.grid",
                                           calendars.get(n))
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        points = [dict(zip(names, combo)) for combo in itertools.product(*(axes[n] for n in names))]
        layout = "grid"
    else:
        rows = read_table(sampling.table, f"{path}.table")
        points = []
        for i, row in enumerate(rows):
            point = {}
            for n, v in row.items():
                given = sampling.table_units.get(n)
                time = n in units and is_time_units(units[n])
                if n in units and (time or (given is not None and not isinstance(v, str))):
                    spec = {"values": [v], **({"units": given} if given is not None else {})}
                    try:
                        v = grid_axis_values(spec, n, units[n], f"{path}.table[{i}]",
                                             calendars.get(n))[0]
                    except ConfigError as exc:
                        problems.extend(exc.problems)
                point[n] = v
            points.append(point)
        if not points:
            problems.append(f"{path}.table: has no rows")
        layout = "table"
    if problems:
        raise ConfigError(problems)
    try:
        param_space.to_array(points, allow_extrapolation=sampling.allow_extrapolation)
    except ParameterError as exc:
        lines = str(exc).splitlines()[1:] or [str(exc)]
        raise ConfigError([f"{path}.{layout}: {line.strip()}" for line in lines[:20]]) from None
    points = [{n: p[n] for n in names} for p in points]
    return SweepPlan(layout=layout, names=names, units=units, points=points,
                     members=sampling.members, seed=sampling.seed, sampler=sampling.sampler,
                     steps=sampling.steps, guidance=sampling.guidance,
                     allow_extrapolation=sampling.allow_extrapolation,
                     batch_size=sampling.batch_size, chunk_size=sampling.chunk_size, axes=axes,
                     conditioning=_conditioning(getattr(sampling, "conditioning", None)),
                     calendars=calendars, spacing=_spacing(sampling, path))


def _spacing(sampling: Any, path: str) -> str | None:
    """The requested spacing, checked: ``fitted`` levels must exist for the sampler and steps."""
    spacing = getattr(sampling, "spacing", None)
    if spacing == "fitted":
        from rho_workflow.diffusion.fitted_levels import fitted_table

        table = fitted_table()
        have = sorted(table.get(sampling.sampler, {}))
        if sampling.steps not in have:
            raise ConfigError([
                f"{path}.spacing: 'fitted' with sampler {sampling.sampler} and steps "
                f"{sampling.steps}: no fitted levels stored for them (rule: fitted levels exist for "
                + ", ".join(f"{k} at steps {min(v)}-{max(v)}" for k, v in sorted(table.items()))
                + f"); fix: set {path}.steps to one of {have or 'those'}, another sampler, or "
                "leave spacing out"])
    return spacing


def _conditioning(cond: Any) -> dict[str, Any] | None:
    """The plan's record of the observations: absolute path and content hash (for the fingerprint)."""
    if cond is None:
        return None
    cond = cond.model_dump() if hasattr(cond, "model_dump") else dict(cond)
    path = Path(cond["observations"]).resolve()
    return {"observations": str(path), "sha256": file_sha256(path), "variable": cond.get("variable"),
            "cg_iters": int(cond.get("cg_iters", 20))}
