"""What the networks inject: noise-level embedding plus condition embedding, and cond validation.

* :func:`check_cond` -- validation of the float64 ``(B, P)`` parameter array of
  :meth:`ParamSpace.to_array` that every encoder takes.
* :class:`ConditionEncoder` wraps an encoder of real conditions (or nothing, for an
  unconditional model) and adds a learned null embedding and condition dropout for
  classifier-free guidance (Ho & Salimans 2022).
* :class:`NoiseEmbedding` and :func:`network_embedding` -- the noise-level features and the
  sum the networks add to their hidden state.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rho_workflow.params import ParamSpace

__all__ = ["ConditionEncoder", "NoiseEmbedding", "check_cond", "network_embedding"]


def check_cond(cond: torch.Tensor, param_space: ParamSpace, batch_size: int | None = None) -> None:
    """Raise a ValueError unless ``cond`` is a ``(B, P)`` array of ``param_space`` values."""
    names = param_space.names
    if not isinstance(cond, torch.Tensor):
        raise TypeError(
            f"cond is a {type(cond).__name__}; pass a float64 torch tensor of shape (B, {len(names)}) "
            f"made by ParamSpace.to_array for parameters {names}, or None for the null condition"
        )
    if cond.dim() != 2 or cond.shape[1] != len(names):
        raise ValueError(
            f"cond has shape {tuple(cond.shape)}, but this model is conditioned on {len(names)} "
            f"parameters {names}: pass shape (B, {len(names)}) from ParamSpace.to_array, "
            "or None for the null condition"
        )
    if not bool(torch.isfinite(cond).all()):
        raise ValueError(
            "cond holds NaN or infinite values; every row must be a valid parameter point "
            "(ParamSpace.to_array), or pass cond=None for the null condition"
        )
    if batch_size is not None and cond.shape[0] != batch_size:
        raise ValueError(
            f"cond holds {cond.shape[0]} rows but the batch holds {batch_size} samples; "
            "give one parameter row per sample"
        )
    for j, p in enumerate(param_space.params):
        if p.kind == "categorical":
            col = cond[:, j]
            bad = (col != col.round()) | (col < 0) | (col > len(p.values) - 1)
            if bool(bad.any()):
                raise ValueError(
                    f"cond column {j} (categorical parameter {p.name!r}) holds "
                    f"{col[bad][0].item()!r}, but categorical columns hold the index into "
                    f"{list(p.values)} (0..{len(p.values) - 1}); build cond with ParamSpace.to_array"
                )


class ConditionEncoder(nn.Module):
    """Condition embedding with a learned null condition for classifier-free guidance (Ho & Salimans 2022).

    ``forward(cond)`` returns ``inner(cond)``, ``(B, emb_dim)``; ``cond=None`` returns the null
    embedding for the whole batch (``batch_size`` rows). In training mode each row is replaced by
    the null embedding with probability ``p_uncond`` (condition dropout), drawn from torch's
    global RNG on the device of the embedding; in eval mode, or with ``p_uncond == 0``, nothing
    is drawn.

    Parameters
    ----------
    inner : HashEncoder, FeatureEncoder or None
        The encoder of real conditions; None gives an unconditional model (only the null
        embedding; a ``cond`` of the right width is accepted and its values ignored).
    emb_dim : int
        Width of the embedding (must equal ``inner.emb_dim``).
    p_uncond : float
        Probability in [0, 1] of dropping a row's condition in training.
    param_space : ParamSpace, optional
        Used to validate ``cond`` when ``inner`` is None (defaults to ``inner.param_space``).
    """

    def __init__(self, inner: nn.Module | None, emb_dim: int, p_uncond: float = 0.1,
                 param_space: ParamSpace | None = None):
        super().__init__()
        if not 0.0 <= float(p_uncond) <= 1.0:
            raise ValueError(f"p_uncond {p_uncond}: the condition-dropout probability must be in [0, 1]")
        if inner is not None and getattr(inner, "emb_dim", emb_dim) != emb_dim:
            raise ValueError(
                f"ConditionEncoder emb_dim {emb_dim} differs from its inner encoder's emb_dim "
                f"{inner.emb_dim}; build both with the same emb_dim"
            )
        self.inner = inner
        self.emb_dim = int(emb_dim)
        self.p_uncond = float(p_uncond)
        self.param_space = param_space if param_space is not None else getattr(inner, "param_space", ParamSpace([]))
        self.null = nn.Parameter(torch.randn(self.emb_dim) * 0.5)

    @property
    def conditional(self) -> bool:
        """Whether real conditions change the embedding."""
        return self.inner is not None

    def forward(self, cond: torch.Tensor | None, batch_size: int | None = None) -> torch.Tensor:
        if cond is None:
            if batch_size is None:
                raise ValueError("ConditionEncoder: cond is None, so pass batch_size to size the null embedding")
            return self.null.expand(int(batch_size), -1)
        check_cond(cond, self.param_space, batch_size)
        if self.inner is None:
            return self.null.expand(cond.shape[0], -1)
        emb = self.inner(cond)
        if self.training and self.p_uncond > 0:
            drop = torch.rand(emb.shape[0], device=emb.device) < self.p_uncond
            emb = torch.where(drop[:, None], self.null.to(emb.dtype), emb)
        return emb


# -- noise-level embedding and the sum the networks inject ----------------------------------------
class NoiseEmbedding(nn.Module):
    """Sinusoidal features of the continuous noise level ``c_noise = log(sigma) / 4`` (Karras et al. 2022, Table 1) -> MLP.

    ``c_noise`` is multiplied by ``n_features // 2`` angular frequencies spaced geometrically
    from ``min_freq`` to ``max_freq`` (the transformer position encoding of Vaswani et al. 2017
    used on a real number instead of a timestep index); sin and cos of these go through
    ``Linear -> SiLU -> Linear`` to ``emb_dim``.
    """

    def __init__(self, emb_dim: int, n_features: int = 64, min_freq: float = 1.0, max_freq: float = 1000.0):
        super().__init__()
        if n_features < 2 or n_features % 2:
            raise ValueError(f"NoiseEmbedding n_features {n_features}: must be an even number >= 2 (sin and cos pairs)")
        freqs = torch.exp(torch.linspace(math.log(min_freq), math.log(max_freq), n_features // 2))
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(n_features, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        dtype = self.mlp[0].weight.dtype
        args = c_noise.to(dtype)[:, None] * self.freqs.to(dtype)
        return self.mlp(torch.cat([args.sin(), args.cos()], dim=1))


def network_embedding(noise_embedding: NoiseEmbedding, cond_encoder: ConditionEncoder | None,
                      c_noise: torch.Tensor, cond: torch.Tensor | None, batch_size: int,
                      device: torch.device) -> torch.Tensor:
    """The embedding a network injects: ``MLP(noise features) + condition embedding``, ``(B, emb_dim)``.

    Validates ``c_noise`` (shape ``(B,)``, or a scalar broadcast over the batch) and ``cond``.
    Without a condition encoder, ``cond`` must be None or have zero columns.
    """
    if not isinstance(c_noise, torch.Tensor):
        c_noise = torch.as_tensor(c_noise, dtype=torch.float32)
    c_noise = c_noise.to(device)
    if c_noise.dim() == 0:
        c_noise = c_noise.expand(batch_size)
    if c_noise.shape != (batch_size,):
        raise ValueError(
            f"c_noise has shape {tuple(c_noise.shape)} but the batch holds {batch_size} samples; "
            f"pass one noise level per sample, shape ({batch_size},)"
        )
    emb = noise_embedding(c_noise)
    if cond_encoder is not None:
        return emb + cond_encoder(None if cond is None else cond.to(device), batch_size).to(emb.dtype)
    if cond is not None and (not isinstance(cond, torch.Tensor) or cond.dim() != 2 or cond.shape[1] != 0):
        raise ValueError(
            f"cond of shape {tuple(getattr(cond, 'shape', ()))} was given to a network built without a "
            "condition encoder; pass cond=None, or build the network with "
            "cond_encoder=make_condition_encoder(...)"
        )
    return emb
