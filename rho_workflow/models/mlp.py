"""Residual MLP denoising network for low-dimensional point data ``(B, D)``.

The embedding of noise level and condition enters every residual block by scale and shift
(FiLM, Perez et al. 2018), as in the U-Net. LayerNorm acts on each sample alone, so samples of
a batch do not interact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rho_workflow.models.conditioning import ConditionEncoder, NoiseEmbedding, network_embedding
from rho_workflow.models.unet import _resolve_emb_dim

__all__ = ["MLPNet"]


class _Block(nn.Module):
    """``x + Linear(SiLU(FiLM(LayerNorm(Linear(x)), emb)))`` with a zero-initialized last layer."""

    def __init__(self, hidden: int, emb_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.film = nn.Linear(emb_dim, 2 * hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(F.silu(emb)).chunk(2, dim=1)
        h = self.norm(self.fc1(F.silu(x))) * (1 + scale) + shift
        return x + self.fc2(F.silu(h))


class MLPNet(nn.Module):
    """Conditional residual MLP for points in R^D (the toy-data network of diffusion papers, e.g. Sohl-Dickstein et al. 2015).

    ``net(x_in, c_noise, cond) -> tensor shaped like x_in`` with ``x_in`` ``(B, dim)``,
    ``c_noise`` ``(B,)`` and ``cond`` float64 ``(B, P)`` or None (the null condition).

    Parameters
    ----------
    dim : int
        Dimension D of the points.
    hidden : int
        Width of the residual stream.
    depth : int
        Number of residual blocks.
    cond_encoder : ConditionEncoder, optional
        Encoder of the physical parameters; None gives an unconditional network.
    emb_dim : int, optional
        Width of the embedding; defaults to ``cond_encoder.emb_dim`` or ``hidden``.
    """

    def __init__(self, dim: int, hidden: int = 256, depth: int = 4,
                 cond_encoder: ConditionEncoder | None = None, emb_dim: int | None = None):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 0:
            raise ValueError(f"MLPNet dim={dim}, hidden={hidden}, depth={depth}: need dim >= 1, hidden >= 1, depth >= 0")
        self.dim, self.emb_dim = int(dim), _resolve_emb_dim(emb_dim, cond_encoder, hidden, "MLPNet")
        self.noise_embedding = NoiseEmbedding(self.emb_dim)
        self.cond_encoder = cond_encoder
        self.fc_in = nn.Linear(self.dim, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, self.emb_dim) for _ in range(depth))
        self.norm_out = nn.LayerNorm(hidden)
        self.fc_out = nn.Linear(hidden, self.dim)
        nn.init.zeros_(self.fc_out.weight)
        nn.init.zeros_(self.fc_out.bias)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(x_in, torch.Tensor) or x_in.dim() != 2 or x_in.shape[1] != self.dim:
            raise ValueError(
                f"MLPNet expects x_in of shape (B, {self.dim}), got shape {tuple(getattr(x_in, 'shape', ()))}; "
                f"pass a batch of {self.dim}-dimensional points, or build MLPNet(dim=...) to match"
            )
        emb = network_embedding(self.noise_embedding, self.cond_encoder, c_noise, cond, x_in.shape[0], x_in.device)
        h = self.fc_in(x_in)
        for block in self.blocks:
            h = block(h, emb)
        return self.fc_out(F.silu(self.norm_out(h)))
