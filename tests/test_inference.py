"""Parameter inference against the exact posterior of Gaussian random fields.

A periodic Gaussian random field with a power-law spectrum has an exact log-density
``log p(x | index, amplitude)`` (the package computes it), hence an exact posterior. With the
exact conditional denoiser standing in for a perfectly trained network, the posterior that
``infer_field`` builds from the model likelihood (the bound K with common random numbers)
must match it; a trained tiny model must run through the same path and the bad requests
must get one clear message.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rho_workflow.data.synthetic.random_fields import K_PIVOT, gaussian_field_with_mean
from rho_workflow.training.inference import InferenceError, infer_field, parse_prior
from rho_workflow.training.reference import ExactGRFModel as ReferenceModel

N = 16


class ExactGRFModel(ReferenceModel):
    """The package's exact GRF model at N x N, with the exact posterior moments of a field."""

    def __init__(self, n: int = N):
        super().__init__(n)

    def exact_posterior(self, field: np.ndarray, n_grid: int = 240) -> dict[str, tuple[float, float]]:
        """Mean and sd of index and amplitude under the uniform prior, by a dense grid of the exact density."""
        ranges = {p.name: (p.low, p.high) for p in self.param_space.params}
        idx = np.linspace(*ranges["index"], n_grid)
        amp = np.linspace(*ranges["amplitude"], n_grid)
        ll = self.exact_log_likelihood(field, idx, amp)
        w = np.exp(ll - ll.max())
        w /= w.sum()
        I, A = np.meshgrid(idx, amp, indexing="ij")
        out = {}
        for name, grid in (("index", I), ("amplitude", A)):
            m = float((w * grid).sum())
            out[name] = (m, float(np.sqrt((w * (grid - m) ** 2).sum())))
        return out


@pytest.fixture(scope="module")
def exact_model():
    return ExactGRFModel()


@pytest.mark.parametrize("truth", [{"index": -2.4, "amplitude": 1.2}, {"index": -1.5, "amplitude": 0.8}])
def test_grid_posterior_matches_exact_posterior(exact_model, truth):
    field = gaussian_field_with_mean(truth["index"], truth["amplitude"], N, rng=np.random.default_rng(11))
    # 128 stratified steps and 2 antithetic pairs: Monte-Carlo scatter of the mean ~0.1 sd (seeds 0-4)
    post = infer_field(exact_model, field, method="grid", n_grid=24, n_coarse=10,
                       likelihood_options={"t_samples": 128, "n_noise": 4})
    summary = json.loads(post.attrs["summary"])
    exact = exact_model.exact_posterior(field)
    for name in ("index", "amplitude"):
        mean, sd = exact[name]
        assert abs(summary[name]["mean"] - mean) < 0.25 * sd, (name, summary[name], exact[name])
        assert 0.8 < summary[name]["sd"] / sd < 1.25, (name, summary[name], exact[name])
    # the Dataset: parameter coordinates with units, a normalized posterior, draws
    assert post["index"].attrs["units"] == "1" and post["amplitude"].attrs["units"] == exact_model.param_space["amplitude"].units
    assert math.isclose(float(np.exp(post["log_posterior_mass"]).sum()), 1.0, rel_tol=1e-9)
    assert post["index_draws"].sizes["draw"] == 4000


def test_mcmc_agrees_with_grid(exact_model):
    truth = {"index": -2.0, "amplitude": 1.5}
    field = gaussian_field_with_mean(truth["index"], truth["amplitude"], N, rng=np.random.default_rng(5))
    exact = exact_model.exact_posterior(field)
    post = infer_field(exact_model, field, method="mcmc", n_steps=300, burn=100, n_walkers=16,
                       likelihood_options={"t_samples": 32})
    summary = json.loads(post.attrs["summary"])
    info = json.loads(post.attrs["inference"])
    assert 0.2 < info["acceptance"] < 0.9
    for name in ("index", "amplitude"):
        mean, sd = exact[name]
        assert abs(summary[name]["mean"] - mean) < 0.5 * sd, (name, summary[name], exact[name])
        assert 0.7 < summary[name]["sd"] / sd < 1.4, (name, summary[name], exact[name])


def test_fixed_parameter_gives_a_one_dimensional_posterior(exact_model):
    field = gaussian_field_with_mean(-2.0, 1.0, N, rng=np.random.default_rng(2))
    post = infer_field(exact_model, field, {"amplitude": 1.0, "index": (-2.8, -1.2)}, n_grid=16, n_coarse=8,
                       likelihood_options={"t_samples": 16})
    assert set(post["log_likelihood"].dims) == {"index"}
    assert json.loads(post.attrs["summary"])["amplitude"] == {"units": exact_model.param_space["amplitude"].units,
                                                              "fixed": 1.0}


def test_bad_requests_are_one_clear_message(exact_model):
    space = exact_model.param_space
    with pytest.raises(InferenceError, match=r"within the trained range \[-3, -1\]"):
        parse_prior(space, {"index": (-4.0, -1.0)})
    with pytest.raises(InferenceError, match="unknown parameter 'sigma8'"):
        parse_prior(space, {"sigma8": (0.1, 1.0)})
    with pytest.raises(InferenceError, match="low < high"):
        parse_prior(space, {"amplitude": (1.5, 1.0)})
    with pytest.raises(InferenceError, match="one field of the model's shape"):
        infer_field(exact_model, np.zeros((8, 8)))
    with pytest.raises(InferenceError, match="'grid' .* or 'mcmc'"):
        infer_field(exact_model, np.zeros((N, N)), method="nested")


class CategoricalGRFModel(ExactGRFModel):
    """index continuous, ``regime`` categorical: 'faint' (amplitude 0.7) or 'bright' (1.6)."""

    AMPLITUDES = {"faint": 0.7, "bright": 1.6}

    def __init__(self):
        super().__init__()
        from rho_workflow.params import Parameter, ParamSpace
        self.param_space = ParamSpace([self.param_space["index"],
                                       Parameter("regime", "1", "categorical", values=("faint", "bright"))])

    def eigenvalues(self, cond):
        amp = torch.tensor(list(self.AMPLITUDES.values()), dtype=torch.float64)[cond[:, 1].long()]
        return amp[:, None, None] * (self.k / K_PIVOT) ** cond[:, 0, None, None].double() / self.cell_area


def test_categorical_parameter_is_summed_and_tabled_against_exact():
    model = CategoricalGRFModel()
    field = gaussian_field_with_mean(-2.0, 1.0, N, rng=np.random.default_rng(3))  # between the two regimes
    post = infer_field(model, field, n_grid=24, n_coarse=10, likelihood_options={"t_samples": 128, "n_noise": 4})
    table = json.loads(post.attrs["summary"])["regime"]["probabilities"]
    # exact: the density summed over the index grid of each regime
    power = (np.abs(np.fft.fft2(field)) ** 2).reshape(-1)
    k = model.k.numpy().reshape(-1)
    idx = np.linspace(-3, -1, 400)
    logz = {}
    for name, amp in CategoricalGRFModel.AMPLITUDES.items():
        lam = amp * (k / K_PIVOT) ** idx[:, None] / model.cell_area
        ll = -0.5 * (power / (field.size * lam) + np.log(2 * np.pi * lam)).sum(-1)
        logz[name] = np.logaddexp.reduce(ll)
    p_bright = 1 / (1 + np.exp(logz["faint"] - logz["bright"]))
    assert abs(table["bright"] - p_bright) < 0.1, (table, p_bright)
    assert abs(table["faint"] + table["bright"] - 1) < 1e-9
    assert set(post["regime"].values) == {"faint", "bright"}
    with pytest.raises(InferenceError, match="categorical parameters \\['regime'\\] left free"):
        infer_field(model, field, method="mcmc")
