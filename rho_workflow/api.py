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

from typing import Any

from rho_workflow.diffusion.samplers import DEFAULT_SAMPLER
from rho_workflow.training.model import DEFAULT_SPACING, TrainedModel, default_network

__all__ = ["RhoModel", "default_network", "DEFAULT_SAMPLER", "DEFAULT_SPACING"]


class RhoModel(TrainedModel):
    """A conditional diffusion model of a scalar (or multi-channel) field on a fixed grid.

    Build one with :meth:`create` (or :meth:`load`); then :meth:`fit`, :meth:`sample`,
    :meth:`log_prob`, :meth:`save`. See :class:`~rho_workflow.training.model.TrainedModel`
    for every method.
    """

    def diagnostics(self, fields: Any = None, params: Any = None, **options: Any) -> Any:
        """Per-step diagnostics of the diffusion over ``t`` as an xarray Dataset.

        The analytic ``H_q(X^t|X^0)`` and the eq. 24 bounds on each reverse step's entropy
        (nats per dimension); with ``fields`` and ``params`` also the mean per-step KL terms
        of the bound K on those fields (the bound over all T steps; ``options`` as
        :meth:`log_prob`), i.e. where along the trajectory the bound loses its nats.
        """
        from rho_workflow.diffusion.likelihood import gaussian_entropy_diagnostics
        from rho_workflow.evaluate.diagnostics import diagnostics_dataset

        entropy = gaussian_entropy_diagnostics(self.schedule)
        if fields is None:
            return diagnostics_dataset(entropy)
        result = self.log_prob(fields, params, method="bound", details=True, **options)
        return diagnostics_dataset(entropy, result.parts[0].steps, result.kl_per_step / result.dim)
