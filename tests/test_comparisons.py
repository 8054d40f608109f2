"""Comparisons in the metrics Dataset (evaluation.compare) and noise floors of deterministic and
single-realization simulations (evaluation.simulations, make-data --realizations).

Closed forms: the floor of a deterministic simulator is the score of exact copies (W1 0,
variance ratio 1); a shifted copy has W1 equal to the shift; a variant drawn from the true
distribution scores near the floor while a biased one scores its bias.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from rho_workflow.config import PipelineConfig
from rho_workflow.data.make_data import write_sweep
from rho_workflow.errors import ConfigError
from rho_workflow.evaluate.point_metrics import (add_comparison, comparison_summary,
                                                 metrics_dataset, point_metrics)
from rho_workflow.evaluate.report import comparison_table_html


def _grf(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth Gaussian fields: white noise filtered by a Gaussian in Fourier space."""
    k = np.fft.fftfreq(size)
    kk = np.sqrt(k[:, None] ** 2 + k[None] ** 2)
    white = rng.standard_normal((n, size, size))
    return np.fft.ifft2(np.fft.fft2(white) * np.exp(-(kk / 0.15) ** 2)).real * 5


def _metrics(gen, ref, **kw):
    return point_metrics(gen, ref, box_size=10.0, field_units="K", length_units="km", **kw)


def test_deterministic_floor_is_the_score_of_exact_copies():
    exact = _grf(1, 16, np.random.default_rng(0))
    copies = np.repeat(exact, 4, axis=0)
    ds = _metrics(copies, exact, deterministic=True)
    for name in ("wasserstein_1", "spectrum_error", "mean_error", "mean_field_rmse"):
        assert float(ds[name]) == pytest.approx(0.0, abs=1e-12)
        assert float(ds[f"{name}_floor"]) == pytest.approx(0.0, abs=1e-12)
    assert float(ds["variance_ratio_floor"]) == pytest.approx(0.0, abs=1e-12)  # rms(ratio - 1)
    assert "deterministic" in ds.attrs["noise_floor_method"]
    shifted = _metrics(copies + 0.3, exact, deterministic=True)
    assert float(shifted["wasserstein_1"]) == pytest.approx(0.3, rel=1e-9)
    assert float(shifted["wasserstein_1_floor"]) == 0.0
    assert np.isinf(float(shifted["wasserstein_1_excess"]))
    # the same single field without the declaration: no floor can be estimated
    assert np.isnan(float(_metrics(copies, exact)["wasserstein_1_floor"]))


def test_deterministic_declaration_is_checked_against_the_simulations():
    fields = _grf(2, 16, np.random.default_rng(1))
    with pytest.raises(ValueError, match="evaluation.simulations: stochastic"):
        _metrics(fields, fields, deterministic=True)


def test_comparison_of_variants_in_one_dataset():
    rng = np.random.default_rng(2)
    points = [{"a": 1.0}, {"a": 2.0}, {"a": 3.0}]
    refs = [_grf(24, 16, rng) for _ in points]
    model = [_metrics(_grf(24, 16, rng), r, rng=np.random.default_rng(i)) for i, r in enumerate(refs)]
    good = [_metrics(_grf(24, 16, rng), r, rng=np.random.default_rng(i)) for i, r in enumerate(refs)]
    biased = [_metrics(_grf(24, 16, rng) + 1.0, r, rng=np.random.default_rng(i)) for i, r in enumerate(refs)]
    ds = metrics_dataset(model, points, [False, False, True], {"a": "s"})
    ds = add_comparison(ds, {"good": good, "biased": biased},
                        {"model": "the model", "good": "true draws", "biased": "shifted by 1 K"})
    assert list(ds["variant"].values) == ["model", "good", "biased"]
    w1 = ds["compare_wasserstein_1"]
    assert w1.dims == ("variant", "case") and w1.attrs["units"] == "K"
    np.testing.assert_array_equal(w1.sel(variant="model").values, ds["wasserstein_1"].values)
    # the biased variant's W1 is its bias; true draws stay within a few noise floors
    np.testing.assert_allclose(w1.sel(variant="biased").values, 1.0, atol=0.15)
    assert (w1.sel(variant="good").values < 4 * ds["wasserstein_1_floor"].values).all()
    summary = comparison_summary(ds)
    assert summary["variants"]["biased"] == "shifted by 1 K"
    entry = summary["scores"]["wasserstein_1"]
    assert entry["biased"]["held_out"] == pytest.approx(np.median(w1.sel(variant="biased").values[:2]))
    assert entry["biased"]["training"] == pytest.approx(float(w1.sel(variant="biased", case=2)))
    assert entry["good"]["held_out"] < entry["biased"]["held_out"] / 3
    html = comparison_table_html(summary)
    assert "shifted by 1 K" in html and "noise floor" in html
    with pytest.raises(ValueError, match="same points"):
        add_comparison(metrics_dataset(model, points, [False] * 3, {}), {"short": good[:2]}, {})


def test_comparison_dataset_writes_to_netcdf(tmp_path):
    rng = np.random.default_rng(3)
    ref = _grf(8, 16, rng)
    per = [_metrics(_grf(8, 16, rng), ref)]
    ds = add_comparison(metrics_dataset(per, [{"a": 1.0}], [False], {}),
                        {"other": [_metrics(_grf(8, 16, rng), ref)]}, {"model": "m", "other": "o"})
    ds.to_netcdf(tmp_path / "m.nc")
    back = xr.open_dataset(tmp_path / "m.nc")
    assert list(back["variant"].values) == ["model", "other"]
    assert list(back["variant_description"].values) == ["m", "o"]


def test_gaussian_field_realizations(tmp_path):
    one = write_sweep("gaussian-field", tmp_path / "one", runs=2, size=8)
    with xr.open_dataset(one[0]) as ds:
        assert "realization" not in ds.dims          # the historical layout by default
    many = write_sweep("gaussian-field", tmp_path / "many", runs=2, size=8, realizations=3)
    with xr.open_dataset(many[0]) as ds:
        field = ds["density_contrast"].values
        assert ds.sizes["realization"] == 3 and "amplitude" in ds.coords
    assert not np.allclose(field[0], field[1])         # independent realizations


def _config(evaluation: dict) -> dict:
    return {"name": "t", "data": {"files": "x/*.nc", "variables": ["v"], "spatial_dims": ["x"],
                                  "units": {"v": "K"},
                                  "params": {"p": {"source": "global_attribute"}}},
            "model": {}, "training": {}, "sampling": {"grid": {"p": [1.0]}},
            "evaluation": evaluation, "output": {"dir": "out"}}


@pytest.mark.parametrize("evaluation, words", [
    ({"compare": ["ddpm", "ddpm"]}, ["evaluation.compare", "repeat"]),
    ({"compare": ["flow"]}, ["evaluation.compare", "flow"]),
    ({"simulations": "exact"}, ["evaluation.simulations", "exact"]),
    ({"reference_steps": 1}, ["evaluation.reference_steps"]),
])
def test_bad_evaluation_keys(evaluation, words):
    with pytest.raises(ConfigError) as info:
        PipelineConfig.from_dict(_config(evaluation))
    for word in words:
        assert word in str(info.value)
