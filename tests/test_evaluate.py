"""Evaluation tools against closed forms: spectra of plane waves, Parseval, metric identities."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rho_workflow.data import synthetic as syn
from rho_workflow.evaluate import (
    compare_fields,
    model_power_spectrum,
    plot_field_gallery,
    plot_spectra,
    plot_value_histograms,
    power_spectrum,
    spectrum_error,
)
from rho_workflow.evaluate.spectra import infer_grid_ndim

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- spectra

def test_plane_wave_spectrum_closed_form():
    n, box, j, a = 16, 50.0, 3, 1.7
    x = syn.cell_centres(n, 0.0, box)
    field = a * np.cos(2.0 * np.pi * j * x / box)[:, None] * np.ones((n, n))
    k, p, counts = power_spectrum(field, box, ndim=2)
    ij = np.arange(-n // 2, n // 2)
    radius = np.hypot(ij[:, None], ij[None, :])
    shell_count = np.count_nonzero((radius >= j - 0.5) & (radius < j + 0.5))
    assert counts[j - 1] == shell_count
    # two modes (+-k) of |delta_k|^2 = a^2 / 4 among shell_count modes, times V = box^2
    assert p[j - 1] == pytest.approx(box ** 2 * 2 * (a ** 2 / 4) / shell_count, rel=1e-12)
    others = np.delete(p, j - 1)
    assert np.all(np.abs(others) < 1e-20 * p[j - 1])
    assert k[j - 1] == pytest.approx(
        2 * np.pi / box * radius[(radius >= j - 0.5) & (radius < j + 0.5)].mean(), rel=1e-12)


def test_parseval_in_one_dimension():
    n, box = 24, 7.0
    x = np.random.default_rng(0).standard_normal(n)
    k, p, counts = power_spectrum(x, box, ndim=1)
    np.testing.assert_allclose(k, 2 * np.pi / box * np.arange(1, n // 2 + 1), rtol=1e-12)
    assert np.sum(p * counts) / box == pytest.approx(np.var(x), rel=1e-12)


def test_batch_average_and_ndim_inference():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 8, 8))
    _, p_ab, _ = power_spectrum(np.stack([a, b]), 3.0, ndim=2)
    _, p_a, _ = power_spectrum(a, 3.0)
    _, p_b, _ = power_spectrum(b, 3.0)
    np.testing.assert_allclose(p_ab, 0.5 * (p_a + p_b), rtol=1e-12)
    assert infer_grid_ndim((5, 32, 32)) == 2
    assert infer_grid_ndim((2, 32, 32, 32)) == 3
    assert infer_grid_ndim((32, 32)) == 2
    with pytest.raises(ValueError, match="ndim=3 or ndim=2"):
        power_spectrum(np.zeros((8, 8, 8)), 1.0)
    assert infer_grid_ndim((4, 7)) == 1
    with pytest.raises(ValueError, match="cubic grid"):
        power_spectrum(np.zeros((4, 6)), 1.0, ndim=2)


def test_model_spectrum_and_spectrum_error():
    k, p, counts = model_power_spectrum(lambda kk: np.full_like(kk, 2.5), 12, 10.0, 2)
    np.testing.assert_allclose(p, 2.5)
    rel = np.array([0.1, -0.3, 0.05, 0.2, -0.02, 0.4])
    assert spectrum_error(p * (1 + rel), p) == pytest.approx(np.median(np.abs(rel)))
    with pytest.raises(ValueError, match="same grid"):
        spectrum_error(p[:3], p)


# ---------------------------------------------------------------- metrics

def _grf_set(m, seed, index=-2.0, amplitude=1.0, n=16):
    rng = np.random.default_rng(seed)
    return np.stack([syn.gaussian_random_field(index, amplitude, n, rng=rng) for _ in range(m)])


def test_identical_sets_score_zero():
    ref = _grf_set(8, 2)
    out = compare_fields(ref, ref, box_size=syn.BOX_SIZE_MPC)
    for key in ("mean_error", "std_rel_error", "skewness_error", "wasserstein_1",
                "spectrum_error"):
        assert out[key] == pytest.approx(0.0, abs=1e-12), key
    assert out["variance_ratio"] == pytest.approx(1.0)
    json.dumps(out, allow_nan=False)


def test_scaled_and_shifted_sets_closed_forms():
    ref = _grf_set(8, 3)
    scaled = compare_fields(2.0 * ref, ref, box_size=syn.BOX_SIZE_MPC)
    assert scaled["std_rel_error"] == pytest.approx(1.0)
    assert scaled["variance_ratio"] == pytest.approx(4.0)
    assert scaled["spectrum_error"] == pytest.approx(3.0)
    assert scaled["wasserstein_1"] == pytest.approx(np.mean(np.abs(ref)))  # quantile coupling
    shift = 0.3
    shifted = compare_fields(ref + shift, ref)
    assert shifted["wasserstein_1"] == pytest.approx(shift)
    assert shifted["mean_error"] == pytest.approx(shift / np.std(ref))
    assert shifted["std_rel_error"] == pytest.approx(0.0, abs=1e-12)
    assert shifted["skewness_error"] == pytest.approx(0.0, abs=1e-10)
    assert shifted["variance_ratio"] == pytest.approx(1.0)
    assert "spectrum_error" not in shifted


def test_noise_floor_of_independent_sets_is_small_and_detects_wrong_spectrum():
    a, b = _grf_set(48, 4), _grf_set(48, 5)
    floor = compare_fields(a, b, syn.BOX_SIZE_MPC)  # two true sets: the noise floor
    assert floor["spectrum_error"] < 0.1
    assert abs(floor["variance_ratio"] - 1.0) < 0.1
    wrong = compare_fields(_grf_set(48, 6, index=-1.0), b, syn.BOX_SIZE_MPC)
    assert wrong["spectrum_error"] > 5 * floor["spectrum_error"]


def test_compare_fields_rejects_bad_input():
    ref = np.zeros((3, 8, 8))
    with pytest.raises(ValueError, match="same grid"):
        compare_fields(np.zeros((3, 8, 4)), ref)
    with pytest.raises(ValueError, match="samples along the first axis"):
        compare_fields(np.zeros(8), ref[:, 0, :])
    nan = np.full_like(ref, np.nan)
    with pytest.raises(ValueError, match="share no cell"):
        compare_fields(nan, ref)


# ---------------------------------------------------------------- plots

def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


def test_plots_write_png_files_atomically(tmp_path):
    ref = _grf_set(6, 7)
    k, p, _ = power_spectrum(ref, syn.BOX_SIZE_MPC)
    _, p_model, _ = model_power_spectrum(lambda kk: syn.power_law_spectrum(kk, -2.0, 1.0), 16,
                                         syn.BOX_SIZE_MPC, 2)
    out = plot_spectra(k, {"reference": p, "model": p_model}, "Mparsec-1", "Mparsec2",
                       tmp_path / "figs" / "spectra.png")
    assert _is_png(out)
    assert _is_png(plot_value_histograms({"a": ref[:3], "b": ref[3:]}, "1",
                                         tmp_path / "hist.png"))
    assert _is_png(plot_field_gallery(ref[:4], [f"field {i}" for i in range(4)],
                                      tmp_path / "gallery2d.png", extent=(0, 100, 0, 100),
                                      units="1"))
    cube = syn.spherical_harmonic_density(2, 1, n=12)
    assert _is_png(plot_field_gallery([cube, cube], ["a", "b"], tmp_path / "gallery3d.png"))
    line, spec = syn.generate("spectral-lines", {"temperature": 200.0, "pressure": 300.0})
    nu = spec.coords["wavenumber"][0]
    assert _is_png(plot_field_gallery([line], ["line"], tmp_path / "gallery1d.png",
                                      extent=(nu[0], nu[-1]), units="cm"))
    leftovers = [p.name for p in tmp_path.rglob(".*")]
    assert leftovers == []


def test_plots_reject_mismatched_input(tmp_path):
    k = np.linspace(0.1, 1.0, 5)
    with pytest.raises(ValueError, match="'bad' has shape"):
        plot_spectra(k, {"ok": np.ones(5), "bad": np.ones(4)}, "Mparsec-1", "Mparsec2",
                     tmp_path / "s.png")
    with pytest.raises(ValueError, match="titles"):
        plot_field_gallery([np.zeros((4, 4))] * 2, ["one"], tmp_path / "g.png")
    with pytest.raises(ValueError, match="different shapes"):
        plot_field_gallery([np.zeros((4, 4)), np.zeros((5, 4))], ["a", "b"], tmp_path / "g.png")
    with pytest.raises(ValueError, match="extent"):
        plot_field_gallery([np.zeros((4, 4))], ["a"], tmp_path / "g.png", extent=(0, 1))
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "g.png").exists()
