"""Cell-centred grids shared by the synthetic generators."""

from __future__ import annotations

import numpy as np

__all__ = ["cell_centres"]


def cell_centres(n: int, low: float, high: float) -> np.ndarray:
    """Cell centres x_i = low + (i + 1/2) (high - low) / n, i = 0 .. n-1."""
    if n < 1:
        raise ValueError(f"grid size n={n} must be a positive number of cells")
    return low + (np.arange(n) + 0.5) * (high - low) / n

