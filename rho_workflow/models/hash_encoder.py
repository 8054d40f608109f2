"""The rho-Diffusion conditioning (Cai & Lee 2023, arXiv:2312.08153, Sec. 3): SHA-512 codes.

The SHA-512 digest of the parameter dict, read as character codes, then a learned
projection. Works for arbitrary parameter dicts but cannot interpolate: nearby values get
unrelated codes.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from rho_workflow.models.embedding import check_cond
from rho_workflow.params import ParamSpace

__all__ = ["HashEncoder", "SHA512_HEX_LENGTH", "canonical_point", "sha512_code"]

SHA512_HEX_LENGTH = 128


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
