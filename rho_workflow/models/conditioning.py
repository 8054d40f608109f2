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

:func:`make_condition_encoder` resolves the kind by name. The encoders live in
:mod:`.hash_encoder`, :mod:`.feature_encoder` and :mod:`.embedding` (the null condition,
the noise-level embedding and the sum the networks inject); this module re-exports them.
"""

from __future__ import annotations

from typing import Any

from rho_workflow.models.embedding import (  # noqa: F401  (check_cond: the old import path)
    ConditionEncoder, NoiseEmbedding, check_cond, network_embedding,
)
from rho_workflow.models.feature_encoder import FeatureEncoder, fourier_aliasing
from rho_workflow.models.hash_encoder import (  # noqa: F401  (SHA512_HEX_LENGTH: the old path)
    SHA512_HEX_LENGTH, HashEncoder, canonical_point, sha512_code,
)
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


def make_condition_encoder(kind: str, param_space: ParamSpace, emb_dim: int, p_uncond: float = 0.1,
                           **options: Any) -> ConditionEncoder:
    """Resolve a conditioning kind -- ``"hash"`` (Cai & Lee 2023), ``"features"`` or ``"none"``.

    A parameter space with zero parameters gives an unconditional encoder whatever the kind.
    ``options`` go to the inner encoder (``code_length`` for hash; ``n_frequencies``,
    ``categorical_dim`` and ``jitter`` for features).
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
    valid = ("code_length",) if kind == "hash" else ("n_frequencies", "categorical_dim", "jitter")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"condition encoder {kind!r}: unknown options {unknown}; valid options are {list(valid)}")
    return ConditionEncoder(cls(param_space, emb_dim, **options), emb_dim, p_uncond)
