"""Explicit, per-sample randomness.

Every sample owns a seed and a ``torch.Generator``; a batch draws noise sample by sample, so
sample ``i`` gets the same noise whatever batch, chunk or worker it is computed in (the
approach of NVlabs/edm's ``StackedRandomGenerator``). Seeds of a sweep are derived from
(run seed, parameter point, member) by hashing, never from a position in a batch.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Sequence

import torch

__all__ = ["BatchGenerator", "derive_seed"]


def derive_seed(run_seed: int, point: Mapping[str, Any] | Sequence[Any] | None = None,
                member: int = 0) -> int:
    """A 63-bit seed from SHA-256 of ``(run_seed, point, member)``.

    ``point`` is a parameter dict (serialized as JSON with sorted keys) or any
    JSON-serializable sequence; floats are written with ``repr`` precision, so the same
    physical point always gives the same seed.
    """
    payload = json.dumps([int(run_seed), point, int(member)], sort_keys=True, default=_jsonable)
    digest = hashlib.sha256(payload.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot derive a seed from an object of type {type(obj).__name__}")


class BatchGenerator:
    """One ``torch.Generator`` per sample of a batch.

    Parameters
    ----------
    seeds : sequence of int
        One seed per sample.
    device : torch.device or str
        Where the noise is created (the generators live on this device).
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal noise of shape ``(len(self), *shape)``, one generator per row."""
        return torch.stack([
            torch.randn(tuple(shape), generator=g, device=self.device, dtype=dtype)
            for g in self.generators
        ])

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != len(self):
            raise ValueError(
                f"batch of {x.shape[0]} samples but the generator holds {len(self)} seeds"
            )
        return self.randn(x.shape[1:], dtype=x.dtype).to(x.device)
