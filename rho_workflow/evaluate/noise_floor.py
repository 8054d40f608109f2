"""Noise floors: the value a statistic takes between two independent sets of true fields.

A generated set of ``N`` fields is compared with ``M`` simulated ones by a statistic
``s(generated, reference)`` (a spectrum ratio, a Wasserstein distance, a CRPS). A perfect
generator is one whose fields are further draws of the simulations; its score is then
``s(A, B)`` for two independent true sets ``A`` (size ``N``) and ``B`` (size ``M``). That is the
**noise floor**: a metric within it is as good as the sampling noise of the simulations allows.

Two estimates, each named in the result's ``method``:

``independent``
    a second independent true set is available: ``s(A, B)`` itself, at the sizes given.
``split``
    only one true set of ``M`` fields exists: random disjoint halves ``(a, b)`` of it are
    scored against each other ``n_splits`` times. Deviation statistics (those that tend to 0
    for infinite sets, e.g. ``|P_A / P_B - 1|``, W1) scale as ``sqrt(1/N + 1/M)`` for
    independent fields, so the split values are multiplied by
    ``sqrt((1/N + 1/M) / (1/a + 1/b))`` (``rescale=True``); statistics with a non-zero ideal
    value that are unbiased in the set sizes (the fair CRPS, the corrected spread-skill ratio)
    are taken as they are (``rescale=False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import warnings

import numpy as np

__all__ = ["NoiseFloor", "split_noise_floor", "independent_noise_floor", "resolving_members"]

Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray | float]


@dataclass(frozen=True)
class NoiseFloor:
    """Draws of a statistic between true sets, and what they were made from.

    Attributes
    ----------
    draws : ndarray, shape (n_draws, *statistic_shape)
        The statistic of each pair of true sets (already rescaled to the sizes ``n_generated``
        and ``n_reference`` where the method says so).
    method : str
        ``"independent"`` or ``"split"`` (see the module docstring), with the half sizes.
    n_generated, n_reference : int
        The set sizes the floor stands for.
    """

    draws: np.ndarray
    method: str
    n_generated: int
    n_reference: int

    @property
    def median(self) -> np.ndarray:
        """Median of the draws: the typical score of a perfect generator."""
        with warnings.catch_warnings():  # all-NaN draws (a statistic undefined at these sizes)
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(self.draws, axis=0)

    @property
    def rms(self) -> np.ndarray:
        """Root mean square of the draws: the 1-sigma width of a deviation statistic."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.sqrt(np.nanmean(np.square(self.draws), axis=0))


def _check_sets(name: str, x: np.ndarray, minimum: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] < minimum:
        raise ValueError(
            f"{name} has shape {x.shape}: a noise floor needs at least {minimum} fields along "
            "the first axis; simulate more realizations per parameter point "
            "(simulate.realizations) or pass a second independent set"
        )
    return x


def independent_noise_floor(statistic: Statistic, true_a: np.ndarray, true_b: np.ndarray
                            ) -> NoiseFloor:
    """``statistic(true_a, true_b)`` of two independent true sets: the floor at their sizes."""
    a = _check_sets("true_a", true_a, 1)
    b = _check_sets("true_b", true_b, 1)
    value = np.asarray(statistic(a, b), dtype=np.float64)
    return NoiseFloor(value[None], "independent", int(a.shape[0]), int(b.shape[0]))


def split_noise_floor(statistic: Statistic, reference: np.ndarray, n_generated: int, *,
                      rng: np.random.Generator, n_splits: int = 16, rescale: bool = True
                      ) -> NoiseFloor:
    """The floor at sizes ``(n_generated, len(reference))`` from random halves of ``reference``.

    Parameters
    ----------
    statistic : callable
        ``statistic(generated_like, reference_like)`` -> float or array.
    reference : ndarray, shape (M, *spatial)
        The one true set of the point, ``M >= 2``.
    n_generated : int
        Size of the generated set the floor is for.
    rng : numpy.random.Generator
        Draws the splits.
    n_splits : int
        Random splits into halves of sizes ``(M // 2, M - M // 2)``.
    rescale : bool
        Multiply deviation statistics by ``sqrt((1/N + 1/M) / (1/a + 1/b))``.
    """
    ref = _check_sets("reference", reference, 2)
    m = ref.shape[0]
    a, b = m // 2, m - m // 2
    factor = np.sqrt((1.0 / n_generated + 1.0 / m) / (1.0 / a + 1.0 / b)) if rescale else 1.0
    draws = []
    for _ in range(int(n_splits)):
        order = rng.permutation(m)
        draws.append(np.asarray(statistic(ref[order[:a]], ref[order[a:]]), dtype=np.float64))
    method = f"split: {n_splits} random halves of {a} and {b} of the {m} true fields" + (
        f", rescaled by sqrt((1/{n_generated} + 1/{m}) / (1/{a} + 1/{b})) = {factor:.3f}"
        if rescale else "")
    return NoiseFloor(np.stack(draws) * factor, method, int(n_generated), m)


def resolving_members(n_reference: int, tolerance: float = 0.1) -> int:
    """Generated members per point for the floor to be within ``tolerance`` of its limit.

    A deviation floor scales as ``sqrt(1/N + 1/M)``; with infinitely many generated fields it
    is ``sqrt(1/M)``. ``N >= M / ((1 + tolerance)**2 - 1)`` keeps it within ``1 + tolerance``
    of that limit (``N >= 4.8 M`` for 10%): more members would not make the comparison sharper,
    since the reference set's own noise dominates.
    """
    if n_reference < 1:
        raise ValueError(f"n_reference={n_reference} must be at least one field")
    return int(np.ceil(n_reference / ((1.0 + tolerance) ** 2 - 1.0)))
