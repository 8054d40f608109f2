"""Symmetry augmentation: training fields moved by a symmetry of their distribution.

A simulation in a periodic box of a statistically homogeneous field (cosmological density,
turbulence) has a distribution unchanged by periodic translations; an isotropic one also by
reflections and by permutations of equal-length axes (together with reflections: every
rotation by 90 degrees). Moving each training field by a random element of such a group is
then not a distortion but a fresh draw from the same distribution: the network sees
``prod(shape) * 2**d * d!`` versions of each field, and on a small sweep it stops memorizing
its few hundred fields (``bench/time_to_quality.py``, arm ``augment``).

Declare only the symmetries the data has: a field with a land mask, walls, a preferred
direction (gravity, a magnetic field) or a centred object (a spectral line, a spherical
harmonic on a grid) is not invariant, and augmenting it would teach the model fields the
simulation cannot make. :func:`check_augment` states that rule where it can be checked (a
mask, unequal axes).

Moves are drawn from an explicit generator after the step's other draws, per field of the
*global* batch, so training with augmentation stays exactly resumable and data-parallel runs
see the same batch as one process.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["SYMMETRIES", "augment_batch", "check_augment"]

#: the symmetries :func:`augment_batch` knows, with what each move does
SYMMETRIES = {
    "roll": "periodic translation by a whole number of cells along every spatial axis",
    "flip": "reflection of each spatial axis with probability 1/2",
    "transpose": "a random permutation of the spatial axes (all of equal length)",
}


def check_augment(augment: Sequence[str], spatial: Sequence[int], has_mask: bool) -> list[str]:
    """Problems of ``training.augment`` for fields of spatial shape ``spatial`` (empty: none)."""
    problems = []
    unknown = [a for a in augment if a not in SYMMETRIES]
    if unknown:
        problems.append(f"training.augment: {unknown} not among {sorted(SYMMETRIES)}; fix: list only those")
    if augment and len(spatial) == 0:
        problems.append("training.augment: point data (no spatial axes) has no spatial symmetry; "
                        "fix: remove training.augment")
    if augment and has_mask:
        problems.append(f"training.augment: {list(augment)} with a mask of fixed missing points: the mask "
                        "is not moved by a translation or reflection, so augmented fields would put "
                        "data under it; fix: remove training.augment for masked (land/sea) data")
    if "transpose" in augment and len(set(spatial)) > 1:
        problems.append(f"training.augment: 'transpose' permutes the spatial axes, which needs axes of "
                        f"equal length (got {tuple(spatial)}); fix: remove 'transpose'")
    return problems


def augment_batch(x: torch.Tensor, augment: Sequence[str], g: torch.Generator) -> torch.Tensor:
    """``x`` (B, C, *spatial) with each field moved by a random element of the group of
    ``augment`` (a subset of :data:`SYMMETRIES`), drawn from ``g`` (on the CPU)."""
    if not augment:
        return x
    b, spatial = x.shape[0], tuple(x.shape[2:])
    d = len(spatial)
    # One gather per field: the source index of every cell along each axis.
    index = [torch.arange(n).expand(b, n) for n in spatial]          # (B, n_a) per axis
    if "roll" in augment:
        index = [(i + torch.randint(n, (b, 1), generator=g)) % n for i, n in zip(index, spatial)]
    if "flip" in augment:
        flips = torch.rand((b, d), generator=g) < 0.5
        index = [torch.where(flips[:, a:a + 1], n - 1 - i, i) for a, (i, n) in enumerate(zip(index, spatial))]
    out = x[_batch_index(b, x.shape[1], index)]
    if "transpose" in augment and d > 1:
        perms = torch.argsort(torch.rand((b, d), generator=g), dim=1)
        out = torch.stack([out[k].permute(0, *(1 + p for p in perms[k].tolist())) for k in range(b)])
    return out


def _batch_index(b: int, c: int, index: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Advanced-indexing tuple selecting ``x[k, :, index[0][k], index[1][k], ...]`` for each k."""
    d = len(index)
    shape = lambda axis: [b, 1] + [index[axis].shape[1] if a == axis else 1 for a in range(d)]
    ks = torch.arange(b).view(b, *([1] * (d + 1)))
    cs = torch.arange(c).view(1, c, *([1] * d))
    return (ks, cs, *(index[a].view(shape(a)) for a in range(d)))
