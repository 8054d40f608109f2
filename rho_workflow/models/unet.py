"""One U-Net for 1D, 2D and 3D fields (Ronneberger et al. 2015; the diffusion variant of Ho et al. 2020 and Dhariwal & Nichol 2021).

Residual blocks with GroupNorm receive the embedding (noise level + condition) by scale and
shift (FiLM, Perez et al. 2018; "AdaGN" in Dhariwal & Nichol 2021). Down-sampling is a strided
3-conv, up-sampling nearest interpolation and a 3-conv; every block's output is kept as a skip
connection. The layers are chosen by ``dims`` (Conv1d/2d/3d), so one implementation serves
every rank. Nothing mixes samples of a batch (no BatchNorm), so the output of sample ``i``
does not depend on the rest of the batch.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rho_workflow.models.conditioning import ConditionEncoder, NoiseEmbedding, network_embedding

__all__ = ["UNet", "PAD_MODES", "BOUNDARIES", "space_to_depth", "depth_to_space"]

PAD_MODES = ("replicate", "reflect", "circular", "zeros")
#: ``UNet(boundary=...)``: what every convolution sees beyond the grid's faces -> torch's padding_mode
BOUNDARIES = {"zeros": "zeros", "periodic": "circular", "replicate": "replicate", "reflect": "reflect"}
_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _groups(channels: int) -> int:
    """GroupNorm groups: at least 4 channels a group where possible, at most 32 groups (Wu & He 2018)."""
    for g in range(min(32, max(1, channels // 4)), 0, -1):
        if channels % g == 0:
            return g
    return 1


def space_to_depth(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Fold each ``patch ** d`` block of cells into channels: ``(B, C, *n) -> (B, C * patch**d, *n / patch)``.

    The n-D ``pixel_unshuffle`` (Shi et al. 2016); channel ``c * patch**d + k`` holds cell ``k``
    (row-major over the block's offsets) of channel ``c``. Every size must be a multiple of ``patch``.
    """
    batch, channels, *spatial = x.shape
    d = len(spatial)
    x = x.reshape(batch, channels, *[s for n in spatial for s in (n // patch, patch)])
    offsets, coarse = [3 + 2 * i for i in range(d)], [2 + 2 * i for i in range(d)]
    return x.permute(0, 1, *offsets, *coarse).reshape(batch, channels * patch ** d, *[n // patch for n in spatial])


def depth_to_space(x: torch.Tensor, patch: int) -> torch.Tensor:
    """The inverse of :func:`space_to_depth`: ``(B, C * patch**d, *n) -> (B, C, *n * patch)``."""
    batch, folded, *spatial = x.shape
    d = len(spatial)
    x = x.reshape(batch, folded // patch ** d, *[patch] * d, *spatial)
    order = [j for i in range(d) for j in (2 + d + i, 2 + i)]  # (coarse_i, offset_i) per axis
    return x.permute(0, 1, *order).reshape(batch, folded // patch ** d, *[n * patch for n in spatial])


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block, ``x + conv(act(FiLM(norm(conv(act(norm(x)))), emb)))`` (Dhariwal & Nichol 2021, Sec. 3)."""

    def __init__(self, dims: int, in_ch: int, out_ch: int, emb_dim: int, dropout: float,
                 padding_mode: str = "zeros"):
        super().__init__()
        conv = _CONV[dims]
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = conv(in_ch, out_ch, 3, padding=1, padding_mode=padding_mode)
        self.film = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(conv(out_ch, out_ch, 3, padding=1, padding_mode=padding_mode))
        self.skip = nn.Identity() if in_ch == out_ch else conv(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb)).chunk(2, dim=1)
        bcast = (slice(None), slice(None)) + (None,) * (x.dim() - 2)
        h = self.norm2(h) * (1 + scale[bcast]) + shift[bcast]
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over all positions of a level (Vaswani et al. 2017), residual."""

    def __init__(self, channels: int, head_channels: int = 32):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        h = self.norm(x).reshape(b, c, -1)
        q, k, v = self.qkv(h).reshape(b, 3, self.heads, c // self.heads, -1).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # (b, heads, n, c/heads)
        h = h.transpose(-1, -2).reshape(b, c, -1)
        return x + self.out(h).reshape(x.shape)


class Downsample(nn.Module):
    """Strided 3-convolution halving every spatial size."""

    def __init__(self, dims: int, channels: int, padding_mode: str = "zeros"):
        super().__init__()
        self.conv = _CONV[dims](channels, channels, 3, stride=2, padding=1, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour doubling followed by a 3-convolution (Odena et al. 2016: no checkerboard).

    The convolution maps to the width of the finer level, which halves its cost where the
    channel count grows with depth.
    """

    def __init__(self, dims: int, in_channels: int, out_channels: int, padding_mode: str = "zeros"):
        super().__init__()
        self.conv = _CONV[dims](in_channels, out_channels, 3, padding=1, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Conditional U-Net denoising network for ``dims``-D fields (Ronneberger et al. 2015; Dhariwal & Nichol 2021).

    ``net(x_in, c_noise, cond) -> tensor shaped like x_in`` with ``x_in`` ``(B, in_channels,
    *spatial)``, ``c_noise`` ``(B,)`` (``log(sigma) / 4``), ``cond`` float64 ``(B, P)`` from
    ``ParamSpace.to_array`` or None for the null condition.

    Spatial sizes need not be powers of two: each spatial axis is padded at its end up to a
    multiple of ``patch_size * 2 ** (len(channel_mults) - 1)`` with ``pad_mode`` (default ``"replicate"``:
    the edge value repeated, defined for any size) and the output is cropped back.

    Parameters
    ----------
    dims : {1, 2, 3}
        Spatial rank.
    in_channels, out_channels : int
        Channels of the field in and out (``out_channels`` defaults to ``in_channels``).
    base_channels : int
        Width of the first level; level ``i`` has ``base_channels * channel_mults[i]``.
    channel_mults : sequence of int
        One multiplier per resolution level.
    num_res_blocks : int
        Residual blocks per level on the way down (one more on the way up).
    attention_levels : sequence of int
        Levels (0 = full resolution) that get self-attention after each residual block; the
        middle gets it when the lowest level does. Costly in 3D (a warning says so).
    dropout : float
        Dropout inside the residual blocks.
    cond_encoder : ConditionEncoder, optional
        Encoder of the physical parameters; None gives an unconditional network.
    emb_dim : int, optional
        Width of the embedding; defaults to ``cond_encoder.emb_dim`` or ``4 * base_channels``.
    pad_mode : {"replicate", "reflect", "circular", "zeros"}
        How sizes that are not multiples of ``2 ** (levels - 1)`` are padded.
    coordinates : bool
        Give the first convolution ``dims`` more input channels, each cell's position along
        each axis (cell centres in (-1, 1)). Convolutions are translation-equivariant: from a
        noise input they can place structure only by the padding's edge effects, which a field
        tied to its grid (a density centred in its box, a climate field on latitudes) needs
        at every noise level; keep it off for statistically homogeneous fields (a periodic box).
    patch_size : int
        Side of the cubes of cells that the network works on (1: single cells). With ``p > 1``
        each ``p ** dims`` block of cells is folded into channels before the first convolution
        and unfolded after the last (:func:`space_to_depth`; the patching of Hoogeboom et al.
        2023, "simple diffusion"): every level runs on ``p ** dims`` fewer positions,
        so a step costs several times less at equal width. For smooth fields on fine grids
        (3D); structure within a patch is then carried by channels, not positions.
    boundary : {"zeros", "periodic", "replicate", "reflect"}
        What every convolution sees beyond the grid's faces. ``"zeros"`` (the default) makes
        the faces walls of the mean value. ``"periodic"``: the field lives on a periodic box
        (a cosmological volume, a doubly periodic domain) and the network sees the torus
        (circular padding; exactly equivariant to shifts by multiples of the coarsest
        stride); a zero-padded network under-generates the modes of the box scale. Every
        spatial size must then be a multiple of ``patch_size * 2 ** (len(channel_mults) - 1)``
        (padding a periodic field to a larger size would break its period). ``"replicate"``
        and ``"reflect"`` continue the field beyond a face (a field that is large there).
    """

    def __init__(self, dims: int, in_channels: int = 1, out_channels: int | None = None,
                 base_channels: int = 32, channel_mults: Sequence[int] = (1, 2, 2),
                 num_res_blocks: int = 1, attention_levels: Sequence[int] = (), dropout: float = 0.0,
                 cond_encoder: ConditionEncoder | None = None, emb_dim: int | None = None,
                 pad_mode: str = "replicate", coordinates: bool = False, patch_size: int = 1,
                 boundary: str = "zeros"):
        super().__init__()
        if dims not in _CONV:
            raise ValueError(f"UNet dims {dims!r}: must be 1, 2 or 3 (the spatial rank of the field)")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"UNet pad_mode {pad_mode!r}: valid modes are {list(PAD_MODES)}")
        channel_mults = tuple(int(m) for m in channel_mults)
        if not channel_mults or min(channel_mults) < 1:
            raise ValueError(f"UNet channel_mults {channel_mults}: need at least one level, each multiplier >= 1")
        bad_levels = sorted(set(attention_levels) - set(range(len(channel_mults))))
        if bad_levels:
            raise ValueError(
                f"UNet attention_levels {list(attention_levels)}: levels {bad_levels} do not exist; "
                f"valid levels are 0..{len(channel_mults) - 1}"
            )
        finer = sorted(set(attention_levels) - {len(channel_mults) - 1})
        if finer and dims == 3:
            warnings.warn(
                f"UNet: self-attention at 3D levels {finer} costs memory and time quadratic in the "
                f"number of voxels of the level; prefer attention only at the coarsest level "
                f"({len(channel_mults) - 1}), or none", stacklevel=2
            )
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"UNet patch_size {patch_size!r}: must be an integer >= 1 (cells per side "
                             "of a patch; 1 works on single cells)")
        if boundary not in BOUNDARIES:
            raise ValueError(f"UNet boundary {boundary!r}: valid boundaries are {list(BOUNDARIES)}")
        emb_dim = _resolve_emb_dim(emb_dim, cond_encoder, 4 * base_channels, "UNet")
        self.dims, self.in_channels = dims, in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        self.levels, self.pad_mode, self.emb_dim = len(channel_mults), pad_mode, emb_dim
        self.noise_embedding = NoiseEmbedding(emb_dim)
        self.cond_encoder = cond_encoder

        self.coordinates, self.patch_size, self.boundary = bool(coordinates), patch_size, boundary
        fold = patch_size ** dims
        mode = BOUNDARIES[boundary]

        def conv(c_in: int, c_out: int) -> nn.Module:
            return _CONV[dims](c_in, c_out, 3, padding=1, padding_mode=mode)

        def block(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(dims, c_in, c_out, emb_dim, dropout, padding_mode=mode)

        self.conv_in = conv((in_channels + (dims if self.coordinates else 0)) * fold, base_channels)
        self.down = nn.ModuleList()
        skips, ch = [base_channels], base_channels
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(block(ch, base_channels * mult))
                ch = base_channels * mult
                if level in attention_levels:
                    self.down.append(Attention(ch))
                skips.append(ch)
            if level < self.levels - 1:
                self.down.append(Downsample(dims, ch, padding_mode=mode))
                skips.append(ch)
        mid_attention = [Attention(ch)] if self.levels - 1 in attention_levels else []
        self.middle = nn.ModuleList([block(ch, ch), *mid_attention, block(ch, ch)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(block(ch + skips.pop(), base_channels * mult))
                ch = base_channels * mult
                if level in attention_levels:
                    self.up.append(Attention(ch))
            if level > 0:
                self.up.append(Upsample(dims, ch, base_channels * channel_mults[level - 1], padding_mode=mode))
                ch = base_channels * channel_mults[level - 1]
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = _zero(conv(ch, self.out_channels * fold))

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input(x_in)
        batch, spatial = x_in.shape[0], x_in.shape[2:]
        emb = network_embedding(self.noise_embedding, self.cond_encoder, c_noise, cond, batch, x_in.device)
        h = self._pad(self._with_coordinates(x_in) if self.coordinates else x_in)
        h = self.conv_in(space_to_depth(h, self.patch_size) if self.patch_size > 1 else h)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            if not isinstance(layer, Attention):
                skips.append(h)
            else:
                skips[-1] = h
        for layer in self.middle:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        out = depth_to_space(out, self.patch_size) if self.patch_size > 1 else out
        return out[(slice(None), slice(None)) + tuple(slice(0, n) for n in spatial)]

    def _check_input(self, x: torch.Tensor) -> None:
        expected = f"(B, {self.in_channels}, " + ", ".join(["n"] * self.dims) + ")"
        if not isinstance(x, torch.Tensor) or x.dim() != self.dims + 2:
            raise ValueError(
                f"UNet(dims={self.dims}) expects x_in of shape {expected}, got shape "
                f"{tuple(getattr(x, 'shape', ()))}; a {self.dims}D field needs a batch axis, a channel "
                "axis and one axis per spatial dimension"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet expects x_in of shape {expected} with {self.in_channels} channels, got shape "
                f"{tuple(x.shape)} ({x.shape[1]} channels); build the network with "
                f"in_channels={x.shape[1]} or fix the channel axis"
            )

    def _with_coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with one more channel per axis: the cell centres ``(2 i + 1) / n - 1``."""
        spatial = x.shape[2:]
        axes = [(2 * torch.arange(n, device=x.device, dtype=x.dtype) + 1) / n - 1 for n in spatial]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
        return torch.cat([x, grid.expand(x.shape[0], *grid.shape)], dim=1)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        multiple = self.patch_size * 2 ** (self.levels - 1)
        extra = [(-n) % multiple for n in x.shape[2:]]
        if self.boundary == "reflect" and any((n + e) // multiple < 2 for n, e in zip(x.shape[2:], extra)):
            raise ValueError(
                f"UNet boundary 'reflect': spatial shape {tuple(x.shape[2:])} leaves a single position "
                f"at the coarsest level (patch_size {self.patch_size} x 2 ** {self.levels - 1}), which "
                "cannot be reflected; fix: use boundary 'replicate' or fewer channel_mults levels"
            )
        if not any(extra):
            return x
        if self.boundary == "periodic":
            raise ValueError(
                f"UNet boundary 'periodic': spatial shape {tuple(x.shape[2:])} is not a multiple of {multiple} "
                f"(patch_size {self.patch_size} x 2 ** {self.levels - 1} levels) on every axis, and a "
                "periodic field cannot be padded without breaking its period; fix: use fewer "
                "channel_mults levels or a smaller patch_size, or another boundary"
            )
        pad = [p for e in reversed(extra) for p in (0, e)]  # F.pad lists the last axis first
        if self.pad_mode == "zeros":
            return F.pad(x, pad)
        if self.pad_mode == "reflect" and any(e >= n for e, n in zip(extra, x.shape[2:])):
            raise ValueError(
                f"UNet pad_mode 'reflect' cannot pad spatial shape {tuple(x.shape[2:])} to a multiple "
                f"of {multiple}: reflection needs each size to exceed its padding; use 'replicate'"
            )
        return F.pad(x, pad, mode=self.pad_mode)


def _resolve_emb_dim(emb_dim: int | None, cond_encoder: ConditionEncoder | None, default: int, owner: str) -> int:
    encoder_dim = None if cond_encoder is None else cond_encoder.emb_dim
    if emb_dim is not None and encoder_dim is not None and emb_dim != encoder_dim:
        raise ValueError(
            f"{owner} emb_dim {emb_dim} differs from cond_encoder.emb_dim {encoder_dim}; "
            "omit emb_dim or build the encoder with the same width"
        )
    resolved = emb_dim if emb_dim is not None else (encoder_dim if encoder_dim is not None else default)
    if resolved < 1 or not math.isfinite(resolved):
        raise ValueError(f"{owner} emb_dim {resolved}: must be a positive integer")
    return int(resolved)
