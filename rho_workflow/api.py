"""The Python API: fit a conditional diffusion model of a field, sample it, score it, save it.

>>> from rho_workflow.api import RhoModel
>>> from rho_workflow.params import ParamSpace, Parameter
>>> space = ParamSpace([Parameter("index", "1", low=-3, high=-1)])
>>> model = RhoModel.create((32, 32), space)                # doctest: +SKIP
>>> model.fit(fields, [{"index": -2.0}, ...], steps=2000)   # doctest: +SKIP
>>> x = model.sample({"index": -1.7}, n=16, steps=25)       # doctest: +SKIP
>>> model.log_prob(x[0], {"index": -1.7}, unit="bits_per_dim")  # doctest: +SKIP

A thin facade: the model itself lives in the learning layer
(:class:`rho_workflow.training.model.TrainedModel`), where the workflow's tasks use it too.
Fields go in and come out in physical units; each sample is seeded on its own.
"""

from __future__ import annotations

from rho_workflow.diffusion.samplers import DEFAULT_SAMPLER
from rho_workflow.training.model import DEFAULT_SPACING, TrainedModel, default_network

__all__ = ["RhoModel", "default_network", "DEFAULT_SAMPLER", "DEFAULT_SPACING"]


class RhoModel(TrainedModel):
    """A conditional diffusion model of a scalar (or multi-channel) field on a fixed grid.

    Build one with :meth:`create` (or :meth:`load`); then :meth:`fit`, :meth:`sample`,
    :meth:`log_prob`, :meth:`save`. See :class:`~rho_workflow.training.model.TrainedModel`
    for every method.
    """
