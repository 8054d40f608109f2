"""Conditioning encoders: physical parameters -> one embedding vector per sample.

Three encoders turn the float64 ``(B, P)`` array of :meth:`ParamSpace.to_array` into a
``(B, emb_dim)`` embedding that the networks add to their noise-level embedding:

* :class:`HashEncoder` -- the rho-Diffusion code (Cai & Lee 2023, arXiv:2312.08153, Sec. 3):
  the SHA-512 digest of the parameter dict, read as character codes, then a learned
  projection. Works for arbitrary parameter dicts but cannot interpolate: nearby values get
  unrelated codes.
* :class:`FeatureEncoder` -- Fourier features of the unit-normalized continuous values
  (Tancik et al. 2020) and a learned embedding per categorical parameter; continuous in the
  values, so it can interpolate to unseen values inside the declared range.
* :class:`ConditionEncoder` wraps either (or nothing, for an unconditional model) and adds a
  learned null embedding and condition dropout for classifier-free guidance (Ho & Salimans
  2022).

:func:`make_condition_encoder` resolves the kind by name.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from rho_workflow.params import ParamSpace

__all__ = [
    "ConditionEncoder",
    "NoiseEmbedding",
    "FeatureEncoder",
    "HashEncoder",
    "ENCODER_KINDS",
    "canonical_point",
    "fourier_aliasing",
    "make_condition_encoder",
    "network_embedding",
    "sha512_code",
]

ENCODER_KINDS = ("features", "hash", "none")
SHA512_HEX_LENGTH = 128


# -- the rho-Diffusion hash ---------------------------------------------------------------------
def canonical_point(point: Mapping[str, Any]) -> dict[str, Any]:
    """The parameter dict as hashed by :func:`sha512_code` (one spelling per value).

    numpy scalars become Python scalars, and a finite float with an integral value becomes an
    ``int`` -- so ``1``, ``1.0``, ``np.int64(1)`` and ``np.float64(1.0)`` all hash as ``1``,
    which is what the reference implementation does (its ``number_cast_dict`` casts such
    values to ``int`` and its data sets build the dicts with ``int(...)``). Other floats are
    written by ``json`` with Python's shortest round-trip ``repr`` (``-2.01``); strings, bools
    and ``None`` are kept.
    """
    out: dict[str, Any] = {}
    for key, value in point.items():
        if not isinstance(key, str):
            raise TypeError(
                f"parameter name {key!r} is a {type(key).__name__}; parameter dicts hashed by "
                "sha512_code need string names"
            )
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(
                    f"parameter {key!r}: value {value} is not finite; the SHA-512 code is defined "
                    "for finite numbers, strings and booleans only"
                )
            if value.is_integer():
                value = int(value)
        elif not isinstance(value, (int, str, bool)) and value is not None:
            raise TypeError(
                f"parameter {key!r}: value {value!r} of type {type(value).__name__} cannot be "
                "hashed; use a number, a string or a boolean"
            )
        out[key] = value
    return out


def sha512_code(point: Mapping[str, Any], length: int = SHA512_HEX_LENGTH) -> np.ndarray:
    """The rho-Diffusion parameter code (Cai & Lee 2023, Sec. 3): SHA-512 of the parameter JSON.

    Matches ``calculate_sha512_embedding`` of the authors' reference code
    (github.com/intel/rho-diffusion, ``rho_diffusion/utils.py``): the dict is serialized by
    ``json.dumps(point, sort_keys=True)`` (default separators ``", "`` and ``": "``), its
    SHA-512 hex digest (128 characters ``0-9a-f``) is read as ASCII codes, divided by 128
    (so values lie in [0.375, 0.797]) and stretched to ``length`` by repeating each character
    ``length // 128`` times in place (``np.repeat``, ``aabbcc...``, not tiling ``abcabc``).

    One difference: values are first put in :func:`canonical_point` form, so that ``1`` and
    ``1.0`` give one code (the reference code hashes them differently unless its callers cast
    to ``int``). The reference silently truncates when ``length`` is not a multiple of 128;
    here that is an error.

    Parameters
    ----------
    point : mapping of str to number, str or bool
        One parameter point. Key order does not matter.
    length : int
        Length of the code, a positive multiple of 128.

    Returns
    -------
    np.ndarray
        float32 array of shape ``(length,)``.
    """
    if not isinstance(length, (int, np.integer)) or length < SHA512_HEX_LENGTH or length % SHA512_HEX_LENGTH:
        raise ValueError(
            f"sha512_code length {length!r}: the code stretches the {SHA512_HEX_LENGTH}-character "
            f"SHA-512 hex digest by repeating each character, so length must be a positive "
            f"multiple of {SHA512_HEX_LENGTH} (e.g. 128, 256, 512)"
        )
    payload = json.dumps(canonical_point(point), sort_keys=True)
    digest = hashlib.sha512(payload.encode("utf-8")).hexdigest()
    codes = np.frombuffer(digest.encode("ascii"), dtype=np.uint8)
    return (codes.repeat(int(length) // SHA512_HEX_LENGTH) / 128.0).astype(np.float32)


# -- input validation ---------------------------------------------------------------------------
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


# -- encoders -----------------------------------------------------------------------------------
class HashEncoder(nn.Module):
    """rho-Diffusion conditioning (Cai & Lee 2023, Sec. 3): SHA-512 code -> learned projection.

    Each row of ``cond`` is turned back into its parameter dict by :meth:`ParamSpace.to_dicts`
    (categorical indices become the real values), hashed by :func:`sha512_code` (cached per
    row) and projected by ``Linear -> SiLU -> Linear`` to ``emb_dim``, so the code length is
    not tied to the network width.

    The code of a point is a pseudo-random function of its exact spelling: two values as close
    as ``n = -2.0`` and ``n = -2.01`` get codes no more alike than two random points. The model
    learns each training point as a separate class and cannot interpolate to unseen values;
    use :class:`FeatureEncoder` for that.

    Parameters
    ----------
    param_space : ParamSpace
    emb_dim : int
        Width of the output embedding.
    code_length : int
        Length of the SHA-512 code, a positive multiple of 128.
    cache_size : int
        Number of distinct rows whose codes are remembered.
    """

    def __init__(self, param_space: ParamSpace, emb_dim: int, code_length: int = SHA512_HEX_LENGTH,
                 cache_size: int = 100_000):
        super().__init__()
        sha512_code({}, code_length)  # validates code_length
        self.param_space = param_space
        self.emb_dim = int(emb_dim)
        self.code_length = int(code_length)
        self.cache_size = int(cache_size)
        self._cache: dict[bytes, np.ndarray] = {}
        self.proj = nn.Sequential(
            nn.Linear(self.code_length, self.emb_dim), nn.SiLU(), nn.Linear(self.emb_dim, self.emb_dim)
        )

    def codes(self, cond: torch.Tensor) -> torch.Tensor:
        """SHA-512 codes of the rows of ``cond``, float32 ``(B, code_length)`` on cond's device."""
        rows = cond.detach().to("cpu", torch.float64).numpy()
        out = np.empty((rows.shape[0], self.code_length), dtype=np.float32)
        for i, row in enumerate(rows):
            key = row.tobytes()
            code = self._cache.get(key)
            if code is None:
                code = sha512_code(self.param_space.to_dicts(row[None])[0], self.code_length)
                if len(self._cache) < self.cache_size:
                    self._cache[key] = code
            out[i] = code
        return torch.from_numpy(out).to(cond.device)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        check_cond(cond, self.param_space)
        if cond.dtype != torch.float64:
            raise TypeError(
                f"HashEncoder: cond has dtype {cond.dtype}, but the hash depends on the exact value "
                "(float32 turns -2.01 into -2.0099999904632568, an unrelated code); pass the float64 "
                "array of ParamSpace.to_array unchanged"
            )
        codes = self.codes(cond).to(self.proj[0].weight.dtype)
        return self.proj(codes)


class FeatureEncoder(nn.Module):
    """Fourier features of normalized parameters (Tancik et al. 2020) plus categorical embeddings.

    A continuous value is mapped to ``x = (v - low) / (high - low)`` (as
    :meth:`ParamSpace.normalize`; 0.5 for a zero-width range), then to
    ``[x, sin(2^k pi x), cos(2^k pi x) for k < n_frequencies]``. Each categorical parameter
    has its own ``nn.Embedding``. All features are concatenated and mapped to ``emb_dim`` by
    ``Linear -> SiLU -> Linear``. The embedding is a smooth function of the continuous values,
    so the model can interpolate to unseen values inside the declared range (and extrapolate,
    with the usual caution, outside it).

    Interpolation needs features that the training values sample above their Nyquist rate:
    the finest feature has period ``2 ** (2 - n_frequencies)`` of the range, and where the
    training values are a grid of spacing ``g`` (in [0, 1] units), octaves with period
    ``<= 2 g`` alias. With a 5-point grid and ``n_frequencies = 4``, ``sin(4 pi x)`` and
    ``sin(8 pi x)`` are 0 and ``cos(8 pi x)`` is 1 at every grid value, but ``cos(8 pi x) = -1``
    halfway between two of them, a feature value never seen in training. Sweeps are often
    coarse grids, hence the default of one octave (period 2: ``sin(pi x)``, ``cos(pi x)``), which
    is alias-free for any design whose gaps are below the whole range;
    :func:`fourier_aliasing` checks a design for more. Alias-free is necessary, not sufficient:
    between the points of a coarse grid the model is still unconstrained, while a dense design
    such as a Latin hypercube interpolates (bench/sampler_nfe.py, ``--design lhs|grid``).

    Parameters
    ----------
    param_space : ParamSpace
    emb_dim : int
        Width of the output embedding.
    n_frequencies : int
        Number of octaves ``k = 0 .. n_frequencies - 1`` (0 keeps only ``x``).
    categorical_dim : int
        Width of each categorical embedding.
    """

    def __init__(self, param_space: ParamSpace, emb_dim: int, n_frequencies: int = 1,
                 categorical_dim: int = 16):
        super().__init__()
        if n_frequencies < 0:
            raise ValueError(f"n_frequencies {n_frequencies}: must be >= 0 (0 keeps only x itself)")
        self.param_space = param_space
        self.emb_dim = int(emb_dim)
        self.n_frequencies = int(n_frequencies)
        self.continuous = [j for j, p in enumerate(param_space.params) if p.kind == "continuous"]
        self.categorical = [j for j, p in enumerate(param_space.params) if p.kind == "categorical"]
        lows = [param_space.params[j].low for j in self.continuous]
        widths = [param_space.params[j].high - param_space.params[j].low for j in self.continuous]
        self._low = torch.tensor(lows, dtype=torch.float64)
        self._width = torch.tensor(widths, dtype=torch.float64)
        self.register_buffer(
            "freqs", math.pi * 2.0 ** torch.arange(self.n_frequencies, dtype=torch.float32), persistent=False
        )
        self.embeddings = nn.ModuleList(
            nn.Embedding(len(param_space.params[j].values), categorical_dim) for j in self.categorical
        )
        in_dim = len(self.continuous) * (2 * self.n_frequencies + 1) + len(self.categorical) * categorical_dim
        self.mlp = nn.Sequential(
            nn.Linear(max(in_dim, 1), self.emb_dim), nn.SiLU(), nn.Linear(self.emb_dim, self.emb_dim)
        )

    def normalized(self, cond: torch.Tensor) -> torch.Tensor:
        """Continuous columns of ``cond`` mapped to [0, 1] over the declared range (float64)."""
        values = cond[:, self.continuous].to(torch.float64)
        low, width = self._low.to(cond.device), self._width.to(cond.device)
        safe = torch.where(width == 0, torch.ones_like(width), width)
        return torch.where(width == 0, torch.full_like(values, 0.5), (values - low) / safe)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        check_cond(cond, self.param_space)
        dtype = self.mlp[0].weight.dtype
        parts = []
        if self.continuous:
            x = self.normalized(cond).to(dtype)
            args = x[:, :, None] * self.freqs.to(dtype)
            parts.append(torch.cat([x[:, :, None], args.sin(), args.cos()], dim=2).flatten(1))
        for j, embedding in zip(self.categorical, self.embeddings):
            parts.append(embedding(cond[:, j].round().long()))
        if not parts:
            parts.append(torch.zeros(cond.shape[0], 1, dtype=dtype, device=cond.device))
        return self.mlp(torch.cat(parts, dim=1))


def fourier_aliasing(param_space: ParamSpace, cond: np.ndarray, n_frequencies: int) -> list[str]:
    """Continuous parameters whose training values alias the finest Fourier feature (Nyquist).

    A feature ``sin(w x)`` of period ``T = 2 pi / w`` is pinned down between training values
    only if no gap between consecutive distinct values of ``x`` (counting the ends of the
    declared range, where sampling is allowed too) reaches ``T / 2``. The finest feature of
    :class:`FeatureEncoder` has ``w = 2^(n_frequencies - 1) pi``, so the rule is
    ``max gap < 2^(1 - n_frequencies)``.

    Parameters
    ----------
    param_space : ParamSpace
    cond : ndarray, shape (B, P)
        Training values as made by :meth:`ParamSpace.to_array`.
    n_frequencies : int
        Octaves of the encoder.

    Returns
    -------
    list of str
        One message per aliased parameter (naming it, its largest gap, the rule and the
        largest alias-free ``n_frequencies``); empty when the design is alias-free.
    """
    if n_frequencies <= 0:
        return []
    x = param_space.normalize(np.asarray(cond, dtype=np.float64))
    limit = 2.0 ** (1 - n_frequencies)
    problems = []
    for j, p in enumerate(param_space.params):
        if p.kind != "continuous" or p.high == p.low:
            continue
        values = np.unique(np.concatenate([[0.0, 1.0], np.clip(x[:, j], 0.0, 1.0)]))
        gap = float(np.diff(values).max())
        if gap >= limit:
            alias_free = max(0, math.ceil(1.0 - math.log2(gap)) - 1)
            problems.append(
                f"parameter {p.name!r}: the largest gap between training values is {gap:.3g} of its "
                f"range [{p.low}, {p.high}] {p.units}, but the finest of {n_frequencies} Fourier octaves "
                f"has period {2 * limit:.3g} and needs gaps below half of it ({limit:.3g}); between "
                f"training values the encoder sees feature values never trained on. Use "
                f"n_frequencies <= {alias_free}, or a denser design"
            )
    return problems


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


def make_condition_encoder(kind: str, param_space: ParamSpace, emb_dim: int, p_uncond: float = 0.1,
                           **options: Any) -> ConditionEncoder:
    """Resolve a conditioning kind -- ``"hash"`` (Cai & Lee 2023), ``"features"`` or ``"none"``.

    A parameter space with zero parameters gives an unconditional encoder whatever the kind.
    ``options`` go to the inner encoder (``code_length`` for hash; ``n_frequencies`` and
    ``categorical_dim`` for features).
    """
    if kind not in ENCODER_KINDS:
        raise ValueError(f"condition encoder kind {kind!r} is unknown; valid kinds are {list(ENCODER_KINDS)}")
    if kind == "none" or len(param_space) == 0:
        if options:
            raise ValueError(
                f"condition encoder options {sorted(options)} were given, but the model is "
                "unconditional (kind 'none' or no parameters), which takes none"
            )
        return ConditionEncoder(None, emb_dim, p_uncond, param_space=param_space)
    cls = HashEncoder if kind == "hash" else FeatureEncoder
    valid = ("code_length",) if kind == "hash" else ("n_frequencies", "categorical_dim")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"condition encoder {kind!r}: unknown options {unknown}; valid options are {list(valid)}")
    return ConditionEncoder(cls(param_space, emb_dim, **options), emb_dim, p_uncond)


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
