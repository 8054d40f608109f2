"""Networks and conditioning encoders of the modelling core (see docs/contracts.md).

Every network is called as ``net(x_in, c_noise, cond) -> tensor shaped like x_in``.
:func:`build_network` makes one from a JSON-able config, the form stored in checkpoints.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from torch import nn

from rho_workflow.models.conditioning import (
    ENCODER_KINDS,
    ConditionEncoder,
    FeatureEncoder,
    HashEncoder,
    NoiseEmbedding,
    canonical_point,
    fourier_aliasing,
    make_condition_encoder,
    sha512_code,
)
from rho_workflow.models.mlp import MLPNet
from rho_workflow.models.unet import UNet
from rho_workflow.params import ParamSpace

__all__ = [
    "ConditionEncoder",
    "ENCODER_KINDS",
    "FeatureEncoder",
    "HashEncoder",
    "MLPNet",
    "NETWORKS",
    "NoiseEmbedding",
    "UNet",
    "build_network",
    "canonical_point",
    "fourier_aliasing",
    "make_condition_encoder",
    "sha512_code",
]


def _default(cls: type, name: str) -> Any:
    return inspect.signature(cls).parameters[name].default


# network kind -> (class, default embedding width given the config)
NETWORKS: dict[str, tuple[type[nn.Module], Callable[[Mapping[str, Any]], int]]] = {
    "unet": (UNet, lambda cfg: 4 * int(cfg.get("base_channels", _default(UNet, "base_channels")))),
    "mlp": (MLPNet, lambda cfg: int(cfg.get("hidden", _default(MLPNet, "hidden")))),
}


def build_network(config: Mapping[str, Any], param_space: ParamSpace) -> nn.Module:
    """Build a network and its condition encoder from a config dict (the factory of STYLE.md item 7).

    Parameters
    ----------
    config : mapping
        ``{"kind": "unet" | "mlp", <keyword arguments of UNet or MLPNet>,
        "condition": {"kind": "features" | "hash" | "none", "p_uncond": 0.1, <encoder options>}}``.
        ``emb_dim`` (optional) sets the embedding width of both network and encoder. Without a
        ``condition`` entry the network is unconditional. Unknown names are errors listing the
        valid ones.
    param_space : ParamSpace
        The parameters the network is conditioned on.

    Examples
    --------
    >>> space = ParamSpace([])
    >>> net = build_network({"kind": "mlp", "dim": 2, "hidden": 32}, space)
    """
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in NETWORKS:
        raise ValueError(f"network kind {kind!r} is unknown; valid kinds are {sorted(NETWORKS)}")
    cls, default_emb_dim = NETWORKS[kind]
    condition = dict(config.pop("condition", None) or {"kind": "none"})
    valid = sorted(set(inspect.signature(cls).parameters) - {"cond_encoder"})
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise ValueError(
            f"network {kind!r}: unknown config keys {unknown}; valid keys are {valid + ['condition', 'kind']}"
        )
    emb_dim = int(config.pop("emb_dim", None) or default_emb_dim(config))
    cond_kind = condition.pop("kind", "features")
    p_uncond = float(condition.pop("p_uncond", 0.1))
    encoder = make_condition_encoder(cond_kind, param_space, emb_dim, p_uncond, **condition)
    return cls(**config, cond_encoder=encoder, emb_dim=emb_dim)
