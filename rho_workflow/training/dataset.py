"""A torch dataset streaming normalized samples from a training store with bounded memory.

:class:`StoreDataset` reads the store one block of consecutive samples at a time (by default
the store's own chunk along ``sample``), keeps at most ``buffer_blocks`` blocks in memory,
and shuffles in two stages -- the order of blocks, then the samples within the buffer -- as
large-scale data loaders do (e.g. WebDataset's shard + buffer shuffle). The shuffle of epoch
``e`` is a pure function of ``(seed, e)``: call :meth:`StoreDataset.set_epoch` each epoch.
Blocks are dealt round-robin to DDP ranks (``rank``/``world_size``) and then to DataLoader
workers, so every sample of the split is seen once per epoch across all of them (up to the
last uneven blocks).

Each item is ``(field, cond)``: ``field`` a float32 tensor ``(C, *spatial)`` after the
store's transform (0 at masked points), ``cond`` the float64 ``(P,)`` row of
``ParamSpace.to_array`` for the sample's parameters.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from rho_workflow.data.store import TrainingStore, open_store

__all__ = ["StoreDataset"]


class StoreDataset(IterableDataset):
    """Stream ``(field, cond)`` pairs of one split of a training store.

    Parameters
    ----------
    store : TrainingStore or path-like
        The store written by :func:`rho_workflow.data.store.preprocess`.
    split : {"train", "validation", "held_out", "all"}
    shuffle : bool
        Shuffle blocks and samples within the buffer.
    seed : int
        Seed of the shuffles (combined with the epoch).
    block_samples : int, optional
        Consecutive samples read at once; default the store's chunk along ``sample``.
    buffer_blocks : int
        Blocks held in the shuffle buffer; memory is about
        ``buffer_blocks * block_samples * C * prod(spatial) * 4`` bytes.
    rank, world_size : int
        DDP shard of this process (default: from ``RANK``/``WORLD_SIZE``).
    """

    def __init__(self, store: TrainingStore | str | os.PathLike, split: str = "train", *,
                 shuffle: bool = True, seed: int = 0, block_samples: int | None = None,
                 buffer_blocks: int = 2, rank: int | None = None,
                 world_size: int | None = None):
        super().__init__()
        self.store = store if isinstance(store, TrainingStore) else open_store(store)
        self.split = split
        self.indices = self.store.split_indices(split)
        self.shuffle, self.seed, self.epoch = shuffle, int(seed), 0
        if buffer_blocks < 1:
            raise ValueError(f"buffer_blocks={buffer_blocks} must be >= 1")
        self.buffer_blocks = int(buffer_blocks)
        if block_samples is None:
            chunks = self.store.dataset[self.store.variables[0]].chunks
            block_samples = int(chunks[0][0]) if chunks else 64
        if block_samples < 1:
            raise ValueError(f"block_samples={block_samples} must be >= 1")
        self.block_samples = int(block_samples)
        self.rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
        self.world_size = (int(os.environ.get("WORLD_SIZE", 1)) if world_size is None
                           else int(world_size))
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank={self.rank} must be in [0, world_size={self.world_size})")
        self.cond = torch.from_numpy(self.store.param_space.to_array(
            self.store.points(indices=self.indices), allow_extrapolation=True)) \
            if len(self.store.param_space) else torch.zeros((len(self.indices), 0),
                                                            dtype=torch.float64)
        # blocks: runs of split members inside one block of the store's sample axis
        block_of = self.indices // self.block_samples
        self.blocks = [np.flatnonzero(block_of == b) for b in np.unique(block_of)]

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of ``epoch`` (call before iterating, as with DistributedSampler)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return sum(len(self.blocks[b]) for b in self._my_blocks(None))

    def _my_blocks(self, worker: Any) -> list[int]:
        order = np.arange(len(self.blocks))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        mine = order[self.rank::self.world_size]
        if worker is not None:
            mine = mine[worker.id::worker.num_workers]
        return [int(b) for b in mine]

    def _read(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Normalized fields of one block's split members and their positions in the split."""
        positions = self.blocks[block]
        rows = self.indices[positions]
        lo, hi = int(rows.min()), int(rows.max()) + 1
        # synchronous: a DataLoader worker is a fork, where the parent's thread pool is gone
        physical = np.stack([self.store.dataset[v].data[lo:hi].compute(scheduler="synchronous")
                             for v in self.store.variables], axis=1)
        return self.store.normalize(physical[rows - lo]), positions

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker = get_worker_info()
        blocks = self._my_blocks(worker)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank,
                                     worker.id if worker is not None else 0])
        buffer_x: list[np.ndarray] = []
        buffer_pos: list[np.ndarray] = []
        for i, block in enumerate(blocks):
            x, pos = self._read(block)
            buffer_x.append(x)
            buffer_pos.append(pos)
            if len(buffer_x) >= self.buffer_blocks or i == len(blocks) - 1:
                xs, ps = np.concatenate(buffer_x), np.concatenate(buffer_pos)
                order = rng.permutation(len(ps)) if self.shuffle else np.arange(len(ps))
                for j in order:
                    yield torch.from_numpy(xs[j]), self.cond[ps[j]]
                buffer_x, buffer_pos = [], []
