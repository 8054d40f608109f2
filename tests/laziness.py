"""``raise_if_dask_computes``: count computes, after cf-xarray's test helper of that name."""

from __future__ import annotations

import contextlib
from typing import Iterator

import dask


class CountingScheduler:
    """A dask scheduler that counts its calls and refuses more than ``max_computes``."""

    def __init__(self, max_computes: int = 0):
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk, keys, **kwargs):
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(f"too many dask computations were scheduled: "
                               f"{self.total_computes} > {self.max_computes}")
        return dask.get(dsk, keys, **kwargs)


@contextlib.contextmanager
def raise_if_dask_computes(max_computes: int = 0) -> Iterator[CountingScheduler]:
    """Any dask compute inside the block beyond ``max_computes`` raises RuntimeError."""
    scheduler = CountingScheduler(max_computes)
    with dask.config.set(scheduler=scheduler):
        yield scheduler
