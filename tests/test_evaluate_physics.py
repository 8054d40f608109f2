"""Physics metrics against closed forms: white-noise and GRF spectra within their noise floor,
W1 identities, Minkowski functionals of a GRF, a three-wave bispectrum, the fair CRPS of
Gaussians, and the metrics Dataset's floors (a perfect generator sits at its floor, a wrong
one far above it)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from rho_workflow.data import synthetic as syn
from rho_workflow.evaluate.bispectrum import reduced_bispectrum
from rho_workflow.evaluate.ensemble import crps_fair, spread_skill_ratio
from rho_workflow.evaluate.minkowski import (derivative_variance, gaussian_minkowski,
                                             minkowski_functionals)
from rho_workflow.evaluate.noise_floor import (independent_noise_floor, resolving_members,
                                               split_noise_floor)
from rho_workflow.evaluate.point_metrics import metrics_dataset, metrics_summary, point_metrics
from rho_workflow.evaluate.spectra import model_power_spectrum, power_spectrum

BOX = 100.0


def grfs(n_fields, index=-2.0, amplitude=1.0, n=32, ndim=2, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([syn.gaussian_random_field(index, amplitude, n, BOX, ndim, rng=rng)
                     for _ in range(n_fields)])


@pytest.mark.parametrize("ndim,n", [(1, 64), (2, 32), (3, 16)])
def test_white_noise_spectrum_is_flat_at_its_variance(ndim, n):
    sigma, n_fields = 1.7, 40
    x = sigma * np.random.default_rng(ndim).standard_normal((n_fields,) + (n,) * ndim)
    k, p, counts = power_spectrum(x, BOX, ndim=ndim)
    cell_volume = (BOX / n) ** ndim
    expected = sigma ** 2 * cell_volume           # P = V <|delta_k|^2> = sigma^2 dV
    rel_std = np.sqrt(2.0 / (counts * n_fields))  # counts/2 independent complex modes per field
    assert np.all(np.abs(p / expected - 1.0) < 4.5 * rel_std)
    shell = np.arange(1, n // 2 + 1) * 2 * np.pi / BOX   # physical wavenumbers, rad per Mpc
    assert np.all(np.abs(k - shell) <= 0.5 * 2 * np.pi / BOX)


def test_grf_matches_its_input_spectrum_within_the_noise_floor():
    fields = grfs(64)
    k, p, _ = power_spectrum(fields, BOX, ndim=2)
    p_true = model_power_spectrum(lambda q: syn.power_law_spectrum(q, -2.0, 1.0), 32, BOX, 2)[1]
    floor = split_noise_floor(lambda a, b: power_spectrum(a, BOX, ndim=2)[1]
                              / power_spectrum(b, BOX, ndim=2)[1] - 1.0,
                              fields, n_generated=10 ** 9, rng=np.random.default_rng(1)).rms
    within = np.abs(p / p_true - 1.0) < 2.5 * floor
    assert within.mean() >= 0.9
    # the same test fails for the wrong spectrum: it can tell
    p_wrong = model_power_spectrum(lambda q: syn.power_law_spectrum(q, -2.3, 1.0), 32, BOX, 2)[1]
    assert (np.abs(p / p_wrong - 1.0) < 2.5 * floor).mean() < 0.5


def test_split_floor_agrees_with_independent_sets():
    stat = lambda a, b: float(np.median(np.abs(power_spectrum(a, BOX, ndim=2)[1]
                                               / power_spectrum(b, BOX, ndim=2)[1] - 1)))
    reference = grfs(24, seed=2)
    split = split_noise_floor(stat, reference, n_generated=24, rng=np.random.default_rng(0),
                              n_splits=32)
    independent = [independent_noise_floor(stat, grfs(24, seed=100 + s), reference).draws[0]
                   for s in range(12)]
    assert float(split.rms) == pytest.approx(np.sqrt(np.mean(np.square(independent))), rel=0.35)
    assert "split" in split.method and "rescaled" in split.method


def test_resolving_members():
    assert resolving_members(6) == 29             # sqrt(1 + 6 / 29) < 1.1
    assert np.sqrt(1 + 6 / 29) <= 1.1 < np.sqrt(1 + 6 / 28)
    with pytest.raises(ValueError, match="at least one"):
        resolving_members(0)


def test_wasserstein_identities():
    x = np.random.default_rng(3).lognormal(size=(8, 16, 16))
    assert stats.wasserstein_distance(x.ravel(), x.ravel()) == 0.0
    assert stats.wasserstein_distance(x.ravel(), (x + 0.37).ravel()) == pytest.approx(0.37, rel=1e-12)
    ds = point_metrics(x + 0.37, x, box_size=BOX, field_units="1", length_units="Mparsec")
    assert float(ds["wasserstein_1"]) == pytest.approx(0.37, rel=1e-12)
    assert float(ds["mean_error"]) == pytest.approx(0.37, rel=1e-12)
    assert float(point_metrics(x, x, box_size=BOX, field_units="1",
                               length_units="Mparsec")["wasserstein_1"]) == 0.0


def test_minkowski_functionals_of_a_grf_match_the_gaussian_expectation():
    n, n_fields, smoothing = 128, 20, 3.0  # smoothing length 3 Mpc ~ 4 cells: resolved contours
    rng = np.random.default_rng(4)
    k1 = 2 * np.pi * np.fft.fftfreq(n, BOX / n)
    transfer = np.exp(-0.5 * (np.hypot(k1[:, None], k1[None, :]) * smoothing) ** 2)
    f = np.stack([np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) * transfer).real
                  for _ in range(n_fields)])
    sigma0 = f.std()
    thresholds = sigma0 * np.linspace(-3, 3, 13)
    measured = minkowski_functionals(f, thresholds, BOX)
    expected = gaussian_minkowski(thresholds, 0.0, sigma0, derivative_variance(f, BOX))
    for name, values in measured.items():
        mean, se = values.mean(0), values.std(0) / np.sqrt(n_fields)
        tol = 4 * se + 0.03 * np.abs(expected[name]).max()
        assert np.all(np.abs(mean - expected[name]) < tol), name
    # a lognormal field does not: its excursion sets are skewed
    g = np.exp(f / sigma0)
    lg = minkowski_functionals(g, np.quantile(g, [0.3, 0.5, 0.7]), BOX)["euler_density"].mean(0)
    ex = gaussian_minkowski(np.quantile(g, [0.3, 0.5, 0.7]), g.mean(), g.std(),
                            derivative_variance(g, BOX))["euler_density"]
    assert np.max(np.abs(lg - ex)) > 0.3 * np.abs(ex).max()


def test_euler_characteristic_of_discs_and_rings():
    x = np.zeros((1, 32, 32))
    yy, xx = np.mgrid[:32, :32]
    r = np.hypot(xx - 10, yy - 10)
    x[0][r < 4] = 1.0                                   # a disc: chi = 1
    x[0][(np.hypot(xx - 22, yy - 22) < 7) & (np.hypot(xx - 22, yy - 22) > 4)] = 1.0  # a ring: 0
    chi = minkowski_functionals(x, np.array([0.5]), 32.0)["euler_density"][0, 0] * 32.0 ** 2
    assert chi == pytest.approx(1.0)


def test_three_wave_bispectrum_closed_form():
    n = 32
    x = syn.cell_centres(n, 0.0, BOX)
    X, Y = np.meshgrid(x, x, indexing="ij")
    kf = 2 * np.pi / BOX
    q1, q2 = np.array([3, 0]), np.array([0, 4])
    q3 = -(q1 + q2)                                     # |q3| = 5: a closed (3, 4, 5) triangle
    field = sum(np.cos(kf * (q[0] * X + q[1] * Y)) for q in (q1, q2, q3))
    out = reduced_bispectrum(field[None], BOX, 2, [(3, 4, 5)])
    kmag = syn.wavenumber_grid(n, BOX, 2) / kf
    shells = [np.abs(kmag - s) < 0.5 for s in (3, 4, 5)]
    ones = [np.fft.ifftn(m.astype(float)).real * n ** 2 for m in shells]
    n_triangles = np.sum(ones[0] * ones[1] * ones[2]) / n ** 2
    # delta_(+-q) = 1/2: two closed triangles (all +q, all -q) of 1/8 each
    assert out["bispectrum"][0] == pytest.approx(BOX ** 4 * 0.25 / n_triangles, rel=1e-10)
    gaussian = reduced_bispectrum(grfs(40, n=32), BOX, 2)["reduced_bispectrum"]
    lognormal = reduced_bispectrum(np.exp(grfs(40, n=32, seed=9)), BOX, 2)["reduced_bispectrum"]
    assert np.mean(lognormal) > np.mean(np.abs(gaussian))


def test_fair_crps_and_spread_skill_of_gaussian_ensembles():
    rng = np.random.default_rng(5)
    members, obs = rng.standard_normal((20, 4000)), rng.standard_normal((3, 4000))
    # E|X - y| - E|X - X'| / 2 = 2/sqrt(pi) - 1/sqrt(pi) for X, X', y iid N(0, 1)
    assert crps_fair(members, obs) == pytest.approx(1 / np.sqrt(np.pi), rel=0.03)
    assert spread_skill_ratio(members, obs) == pytest.approx(1.0, abs=0.05)
    assert spread_skill_ratio(0.5 * members, obs) < 0.7      # under-dispersed
    with pytest.raises(ValueError, match="same grid"):
        crps_fair(members, obs[:, :10])


def test_metrics_dataset_perfect_generator_at_floor_wrong_one_above():
    ref = grfs(8, seed=10)
    perfect = grfs(40, seed=11)
    wrong = grfs(40, index=-1.5, seed=12)
    kw = dict(box_size=BOX, field_units="1", length_units="Mparsec")
    good, bad = point_metrics(perfect, ref, **kw), point_metrics(wrong, ref, **kw)
    assert float(good["spectrum_error_excess"]) < 2.0
    assert float(bad["spectrum_error_excess"]) > 3.0
    dev = np.abs(bad["spectrum_ratio"].values - 1) / bad["spectrum_ratio_floor"].values
    assert dev[-4:].min() > 3.0                  # the small scales are where index -1.5 differs
    assert "split" in good.attrs["noise_floor_method"]
    ds = metrics_dataset([good, bad], [{"index": -2.0, "amplitude": 1.0}] * 2, [True, False],
                         {"index": "1", "amplitude": "Mparsec2"})
    assert ds["spectrum_ratio"].dims == ("case", "k")
    assert ds["k"].attrs["units"] == "rad Mparsec-1"
    assert ds["perimeter_density_generated"].attrs["units"] == "Mparsec-1"
    assert ds["amplitude"].attrs["units"] == "Mparsec2"
    summary = metrics_summary(ds)
    assert summary["cases"][0]["seen_in_training"] and not summary["cases"][1]["seen_in_training"]
    assert summary["cases"][1]["spectrum_error"]["excess"] > 3.0


def test_metrics_dataset_round_trips_through_netcdf(tmp_path):
    kw = dict(box_size=BOX, field_units="1", length_units="Mparsec")
    ds = metrics_dataset([point_metrics(grfs(6, seed=s), grfs(4, seed=s + 50), **kw) for s in (0, 1)],
                         [{"index": -2.0}, {"index": -1.0}], [False, False], {"index": "1"})
    ds.to_netcdf(tmp_path / "m.nc")
    back = xr.open_dataset(tmp_path / "m.nc")
    xr.testing.assert_allclose(back.load(), ds)


def test_point_metrics_errors():
    with pytest.raises(ValueError, match="same grid"):
        point_metrics(np.zeros((2, 8, 8)), np.zeros((2, 8, 4)), box_size=None, field_units="1",
                      length_units="m")
    with pytest.raises(ValueError, match="NaN"):
        point_metrics(np.full((2, 8, 8), np.nan), np.zeros((2, 8, 8)), box_size=None,
                      field_units="1", length_units="m")
