"""Synthetic generators against closed forms: spherical harmonics, Gaussian fields, Voigt lines."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, linalg, optimize, stats

try:
    import cf_units
except ImportError:  # UDUNITS bindings are optional (the CF checker's test extra)
    cf_units = None

from rho_workflow.data import synthetic as syn
from rho_workflow.data.units import parse_units
from rho_workflow.evaluate.spectra import model_power_spectrum, power_spectrum

LM = [(l, m) for l in range(4) for m in range(-l, l + 1)]


# ---------------------------------------------------------------- spherical harmonics

def sphere_quadrature(n_theta: int = 12, n_phi: int = 16):
    """Gauss-Legendre in cos(theta) x uniform phi: exact for degree <= 2 n_theta - 1 products."""
    u, w_u = np.polynomial.legendre.leggauss(n_theta)
    phi = 2.0 * np.pi * np.arange(n_phi) / n_phi
    theta = np.arccos(u)
    tt, pp = np.meshgrid(theta, phi, indexing="ij")
    weights = np.outer(w_u, np.full(n_phi, 2.0 * np.pi / n_phi))
    return tt.ravel(), pp.ravel(), weights.ravel()


def test_real_spherical_harmonics_are_orthonormal():
    theta, phi, w = sphere_quadrature()
    basis = np.stack([syn.real_spherical_harmonic(l, m, theta, phi) for l, m in LM])
    gram = (basis * w) @ basis.T
    np.testing.assert_allclose(gram, np.eye(len(LM)), atol=1e-12)


def test_real_spherical_harmonics_closed_forms():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((3, 200))
    x, y, z = v / np.linalg.norm(v, axis=0)
    theta, phi = np.arccos(z), np.arctan2(y, x)
    c1 = math.sqrt(3.0 / (4.0 * math.pi))
    expected = {
        (0, 0): np.full_like(x, 0.5 / math.sqrt(math.pi)),
        (1, 0): c1 * z,
        (1, 1): c1 * x,
        (1, -1): c1 * y,
        (2, 0): math.sqrt(5.0 / (16.0 * math.pi)) * (3.0 * z ** 2 - 1.0),
        (2, 2): math.sqrt(15.0 / (16.0 * math.pi)) * (x ** 2 - y ** 2),
        (2, -2): math.sqrt(15.0 / (4.0 * math.pi)) * x * y,
        (2, 1): math.sqrt(15.0 / (4.0 * math.pi)) * x * z,
    }
    for (l, m), want in expected.items():
        np.testing.assert_allclose(syn.real_spherical_harmonic(l, m, theta, phi), want,
                                   atol=1e-13, err_msg=f"(l, m) = ({l}, {m})")


@pytest.mark.parametrize("l,m", [(l, m) for l, m in LM if m > 0])
def test_negative_order_is_positive_order_rotated_about_z(l, m):
    rng = np.random.default_rng(2)
    theta = np.arccos(rng.uniform(-1, 1, 100))
    phi = rng.uniform(-np.pi, np.pi, 100)
    neg = syn.real_spherical_harmonic(l, -m, theta, phi)
    pos = syn.real_spherical_harmonic(l, m, theta, phi)
    np.testing.assert_allclose(neg, syn.real_spherical_harmonic(l, m, theta, phi - np.pi / (2 * m)),
                               atol=1e-12)
    assert np.max(np.abs(neg - pos)) > 0.1


def test_density_grid_closed_form_and_quarter_turn():
    n = 10
    c = syn.cell_centres(n, -1.0, 1.0)
    x = c[:, None, None] * np.ones((n, n, n))
    f11 = syn.spherical_harmonic_density(1, 1, n=n)
    np.testing.assert_allclose(f11, math.sqrt(3.0 / (4.0 * math.pi)) * np.abs(x), atol=1e-13)
    for l in (1, 2, 3):
        pos = syn.spherical_harmonic_density(l, 1, n=n)
        neg = syn.spherical_harmonic_density(l, -1, n=n)
        i, j, k = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
        # S_l,-1(x, y) = S_l,1 at azimuth phi - 90 deg, i.e. at the point (y, -x).
        np.testing.assert_allclose(neg, pos[j, n - 1 - i, k], atol=1e-12)


def test_density_forms_and_origin():
    f2 = syn.spherical_harmonic_density(2, 0, n=5, form="ylm2")
    assert f2[2, 2, 2] == pytest.approx(1.0 / (4.0 * math.pi))
    fr = syn.spherical_harmonic_density(2, 0, n=5, form="ylm_r")
    assert fr[2, 2, 2] == 0.0
    ratio = fr ** 2 / f2
    r2 = sum(a ** 2 for a in np.meshgrid(*[syn.cell_centres(5, -1, 1)] * 3, indexing="ij"))
    mask = r2 > 0
    np.testing.assert_allclose(ratio[mask], r2[mask], rtol=1e-12)


def test_spherical_harmonic_rejects_bad_order():
    with pytest.raises(ValueError, match=r"-l <= m <= l"):
        syn.spherical_harmonic_density(1, 2)
    with pytest.raises(ValueError, match="form"):
        syn.spherical_harmonic_density(1, 0, form="ylm3")


# ---------------------------------------------------------------- Gaussian random fields

def dense_covariance(index, amplitude, n, box_size, ndim):
    """C(x, y) = sum_{k != 0} P(|k|) / V cos(k.(x - y)), built mode by mode from the convention."""
    k1 = 2.0 * np.pi * np.fft.fftfreq(n, d=box_size / n)
    ks = np.array(np.meshgrid(*[k1] * ndim, indexing="ij")).reshape(ndim, -1).T
    pos = np.array(np.meshgrid(*[np.arange(n) * box_size / n] * ndim,
                               indexing="ij")).reshape(ndim, -1).T
    cov = np.zeros((len(pos), len(pos)))
    for k in ks:
        kk = np.linalg.norm(k)
        if kk == 0:
            continue
        p = amplitude * (kk / syn.K_PIVOT) ** index
        phase = pos @ k
        cov += p / box_size ** ndim * np.cos(phase[:, None] - phase[None, :])
    return cov


@pytest.mark.parametrize("n,ndim", [(6, 1), (7, 1), (4, 2), (5, 2), (6, 2), (4, 3)])
def test_log_density_matches_dense_multivariate_normal(n, ndim):
    index, amplitude, box = -2.2, 1.3, 20.0
    rng = np.random.default_rng(3)
    fields = np.stack([syn.gaussian_random_field(index, amplitude, n, box, ndim, rng=rng)
                       for _ in range(3)])
    cov = dense_covariance(index, amplitude, n, box, ndim)
    basis = linalg.null_space(np.ones((1, n ** ndim)))  # orthonormal basis of zero-mean grids
    reduced = stats.multivariate_normal(mean=np.zeros(basis.shape[1]), cov=basis.T @ cov @ basis)
    want = reduced.logpdf(fields.reshape(3, -1) @ basis)
    got = syn.gaussian_field_log_density(fields, index, amplitude, box, ndim=ndim)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-8 * max(1.0, np.max(np.abs(want))))
    single = syn.gaussian_field_log_density(fields[0], index, amplitude, box)
    assert single == pytest.approx(want[0], abs=1e-8 * max(1.0, abs(want[0])))


@pytest.mark.parametrize("n,ndim", [(7, 1), (6, 2), (4, 3)])
def test_generator_is_covariance_square_root_of_white_noise(n, ndim):
    # documented algorithm: delta = C^(1/2) w with w = rng.standard_normal((n,) * ndim) and
    # C^(1/2) the symmetric square root of the covariance built from the convention
    index, amplitude, box = -1.7, 0.8, 30.0
    field = syn.gaussian_random_field(index, amplitude, n, box, ndim,
                                      rng=np.random.default_rng(11))
    white = np.random.default_rng(11).standard_normal((n,) * ndim).ravel()
    eigval, eigvec = np.linalg.eigh(dense_covariance(index, amplitude, n, box, ndim))
    eigval[eigval < 1e-12 * eigval.max()] = 0.0  # the k = 0 mode (round-off would leak ~1e-8)
    root = (eigvec * np.sqrt(eigval)) @ eigvec.T
    np.testing.assert_allclose(field.ravel(), root @ white, atol=1e-12 * np.abs(field).max())


def test_log_density_zero_mean_rule():
    rng = np.random.default_rng(4)
    f = syn.gaussian_random_field(-2.0, 1.0, 8, 10.0, 2, rng=rng)
    with pytest.raises(ValueError, match="zero_mean='project'"):
        syn.gaussian_field_log_density(f + 0.5, -2.0, 1.0, 10.0)
    projected = syn.gaussian_field_log_density(f + 0.5, -2.0, 1.0, 10.0, zero_mean="project")
    assert projected == pytest.approx(syn.gaussian_field_log_density(f, -2.0, 1.0, 10.0))


@pytest.mark.parametrize("ndim,n", [(2, 32), (3, 16)])
def test_estimated_spectrum_matches_power_law(ndim, n):
    index, amplitude, box, m = -2.5, 1.7, syn.BOX_SIZE_MPC, 64
    rng = np.random.default_rng(5)
    fields = np.stack([syn.gaussian_random_field(index, amplitude, n, box, ndim, rng=rng)
                       for _ in range(m)])
    k, p_hat, counts = power_spectrum(fields, box, ndim=ndim)
    k_m, p_model, counts_m = model_power_spectrum(
        lambda kk: syn.power_law_spectrum(kk, index, amplitude), n, box, ndim)
    np.testing.assert_array_equal(counts, counts_m)
    # each shell averages counts/2 independent exponential |delta_k|^2 per field
    sigma = np.sqrt(2.0 / (m * counts))
    z = (p_hat / p_model - 1.0) / sigma
    assert np.all(np.abs(z) < 5.0), z


def test_lognormal_spectrum_is_transform_of_exp_correlation():
    # xi_rho(r) = exp(xi_g(r)) - 1 for rho = exp(g - sigma^2 / 2), so on the grid
    # P_rho(k) = V / N^d * FFT[exp(xi_g) - 1] with xi_g(r) = N^d / V * IFFT[P_g].
    index, amplitude, n, box, m = -2.0, 2.0, 32, syn.BOX_SIZE_MPC, 128
    p_g = syn.power_law_spectrum(syn.wavenumber_grid(n, box, 2), index, amplitude)
    xi_g = np.fft.ifftn(p_g).real * n ** 2 / box ** 2
    assert xi_g[0, 0] == pytest.approx(syn.gaussian_field_variance(index, amplitude, n))
    p_rho = box ** 2 * np.fft.fftn(np.expm1(xi_g)).real / n ** 2
    rng = np.random.default_rng(9)
    rho = np.stack([syn.lognormal_field(index, amplitude, n, rng=rng) for _ in range(m)])
    _, p_hat, counts = power_spectrum(rho, box, ndim=2)
    _, p_model, _ = model_power_spectrum(lambda kk: p_rho, n, box, 2)
    z = (p_hat / p_model - 1.0) / np.sqrt(2.0 / (m * counts))
    assert np.all(np.abs(z) < 6.0), z  # heavier tails than Gaussian: 6 instead of 5


def test_field_variance_and_lognormal_mean():
    index, amplitude, n, m = -1.5, 1.2, 16, 4000
    var = syn.gaussian_field_variance(index, amplitude, n)
    rng = np.random.default_rng(6)
    g0 = np.array([syn.gaussian_random_field(index, amplitude, n, rng=rng)[3, 5]
                   for _ in range(m)])
    assert np.mean(g0 ** 2) == pytest.approx(var, rel=5.0 * math.sqrt(2.0 / m))
    rho = np.stack([syn.lognormal_field(index, amplitude, n, rng=rng) for _ in range(m)])
    assert np.all(rho > 0)
    # Var[grid mean of rho] = N^-d sum_r (exp(xi_g(r)) - 1), xi_g(r) = N^d / V IFFT[P_g]
    box = syn.BOX_SIZE_MPC
    p_g = syn.power_law_spectrum(syn.wavenumber_grid(n, box, 2), index, amplitude)
    xi_g = np.fft.ifftn(p_g).real * n ** 2 / box ** 2
    var_of_mean = np.expm1(xi_g).mean()
    grid_means = rho.mean(axis=(1, 2))
    assert grid_means.mean() == pytest.approx(1.0, abs=5.0 * math.sqrt(var_of_mean / m))
    assert np.var(grid_means) == pytest.approx(var_of_mean, rel=0.25)


def test_random_fields_are_deterministic_given_rng():
    a = syn.gaussian_random_field(-2.0, 1.0, rng=np.random.default_rng(7))
    b = syn.gaussian_random_field(-2.0, 1.0, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert abs(a.mean()) < 1e-12


# ---------------------------------------------------------------- Voigt profiles

def test_voigt_has_unit_area():
    c, t, p = 2143.0, 250.0, 300.0
    f = lambda nu: syn.voigt_profile(nu, c, t, p)  # noqa: E731
    w = 1.0
    core = integrate.quad(f, c - w, c + w, points=[c], limit=200, epsabs=1e-12)[0]
    tails = (integrate.quad(f, c + w, np.inf, epsabs=1e-12)[0]
             + integrate.quad(f, -np.inf, c - w, epsabs=1e-12)[0])
    assert core + tails == pytest.approx(1.0, abs=1e-7)


def test_voigt_gaussian_limit_has_hitran_doppler_width():
    c, t, mass = 2143.0, 296.0, 28.0
    alpha = 3.581e-7 * c * math.sqrt(t / mass)  # HITRAN closed form of the Doppler HWHM
    assert syn.doppler_hwhm(c, t, mass) == pytest.approx(alpha, rel=2e-4)
    sigma = syn.doppler_hwhm(c, t, mass) / math.sqrt(2.0 * math.log(2.0))
    nu = np.linspace(c - 5 * alpha, c + 5 * alpha, 101)
    np.testing.assert_allclose(syn.voigt_profile(nu, c, t, 0.0, mass),
                               stats.norm.pdf(nu, c, sigma), rtol=1e-9)


def test_voigt_lorentz_limit_and_reference_width():
    c = 2143.0
    assert syn.lorentz_hwhm(1013.25, 296.0) == pytest.approx(0.07, rel=1e-14)
    assert syn.lorentz_hwhm(506.625, 296.0 * 2 ** (1 / 0.75)) == pytest.approx(0.0175, rel=1e-12)
    nu = np.linspace(c - 1.0, c + 1.0, 81)
    got = syn.voigt_profile(nu, c, 296.0, 1013.25, mass_amu=1e12)  # negligible Doppler width
    np.testing.assert_allclose(got, stats.cauchy.pdf(nu, c, 0.07), rtol=1e-6)


@pytest.mark.parametrize("t,p", [(150.0, 10.0), (250.0, 100.0), (350.0, 1000.0), (200.0, 40.0)])
def test_voigt_fwhm_matches_olivero(t, p):
    c = 2143.0
    f = lambda nu: syn.voigt_profile(nu, c, t, p)  # noqa: E731
    half = 0.5 * f(c)
    wide = 10.0 * (syn.doppler_hwhm(c, t, 28.0) + syn.lorentz_hwhm(p, t))
    right = optimize.brentq(lambda nu: f(nu) - half, c, c + wide, xtol=1e-14)
    fwhm = 2.0 * (right - c)
    want = syn.voigt_fwhm_olivero(2.0 * syn.doppler_hwhm(c, t, 28.0), 2.0 * syn.lorentz_hwhm(p, t))
    assert fwhm == pytest.approx(want, rel=0.01)


def test_voigt_rejects_nonphysical_inputs():
    with pytest.raises(ValueError, match="temperature"):
        syn.voigt_profile(np.array([1.0]), 1.0, 0.0, 100.0)
    with pytest.raises(ValueError, match="pressure"):
        syn.voigt_profile(np.array([1.0]), 1.0, 200.0, -1.0)


# ---------------------------------------------------------------- generate / specs / sweeps

@pytest.mark.parametrize("kind", syn.KINDS)
def test_generate_matches_its_spec(kind):
    rng = np.random.default_rng(8)
    points = syn.default_points(kind, 3, rng)
    field, spec = syn.generate(kind, points[0], size=16, rng=rng)
    assert field.shape == spec.shape == syn.field_spec(kind, 16).shape
    assert field.dtype == np.float64 and np.all(np.isfinite(field))
    assert set(spec.coords) == set(spec.dims)
    units = [spec.units, *(u for _, u in spec.coords.values()), *spec.param_units.values()]
    for u in units:
        parse_units(u)  # the project's pint registry reads it
        if cf_units is not None:
            cf_units.Unit(u)  # and so does UDUNITS, as CF requires
    assert set(spec.param_units) == set(spec.param_kinds) == set(points[0])
    array = spec.param_space().to_array(points)
    assert array.shape == (3, len(spec.param_units))


def test_generate_errors_name_the_problem():
    with pytest.raises(ValueError, match="not one of"):
        syn.generate("turbulence", {})
    with pytest.raises(ValueError, match="missing"):
        syn.generate("spectral-lines", {"temperature": 200.0})
    with pytest.raises(ValueError, match="rng="):
        syn.generate("gaussian-field", {"index": -2.0, "amplitude": 1.0})


def test_spectral_line_kind_resolves_its_line():
    field, spec = syn.generate("spectral-lines", {"temperature": 150.0, "pressure": 10.0},
                               size=64)
    nu = spec.coords["wavenumber"][0]
    area = field.sum() * (nu[1] - nu[0])
    assert area == pytest.approx(1.0, abs=0.05)


def test_default_points_designs():
    sh = syn.default_points("spherical-harmonics", 16, np.random.default_rng(0))
    assert {(p["l"], p["m"]) for p in sh} == set(LM)
    n = 20
    lines = syn.default_points("spectral-lines", n, np.random.default_rng(0))
    t = np.array([p["temperature"] for p in lines])
    logp = np.log([p["pressure"] for p in lines])
    for values, low, high in ((t, 150.0, 350.0), (logp, np.log(10.0), np.log(1000.0))):
        strata = np.floor((values - low) / (high - low) * n).astype(int)
        assert sorted(strata) == list(range(n))  # Latin hypercube: one point per stratum
    grf = syn.default_points("gaussian-field", n, np.random.default_rng(0))
    idx = np.array([p["index"] for p in grf])
    assert sorted(np.floor((idx + 3.0) / 2.0 * n).astype(int)) == list(range(n))
