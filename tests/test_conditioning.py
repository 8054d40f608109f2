"""Condition encoders: the rho-Diffusion SHA-512 code, Fourier features, null condition and dropout."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from rho_workflow.models import (
    ConditionEncoder,
    FeatureEncoder,
    HashEncoder,
    build_network,
    fourier_aliasing,
    make_condition_encoder,
    sha512_code,
)
from rho_workflow.params import Parameter, ParamSpace


@pytest.fixture
def space() -> ParamSpace:
    return ParamSpace([
        Parameter("n", "1", "continuous", -3.0, -1.0),
        Parameter("L", "Mpc", "continuous", 10.0, 100.0),
        Parameter("model", "1", "categorical", values=("gaussian", "lognormal", 3)),
    ])


def cond_of(space: ParamSpace, points) -> torch.Tensor:
    return torch.from_numpy(space.to_array(points))


# -- sha512_code ----------------------------------------------------------------------------------
def test_sha512_code_matches_the_definition_from_the_json_digest():
    point = {"m": 2, "l": 3}
    digest = hashlib.sha512(json.dumps({"l": 3, "m": 2}).encode()).hexdigest()
    expected = np.array([ord(ch) for ch in digest], dtype=np.float64) / 128.0
    code = sha512_code(point, 256)
    assert code.shape == (256,) and code.dtype == np.float32
    np.testing.assert_allclose(code[0::2], expected, rtol=1e-7)  # each character repeated in place
    np.testing.assert_allclose(code[1::2], expected, rtol=1e-7)


def test_sha512_code_is_deterministic_and_key_order_invariant():
    a = sha512_code({"n": -2.5, "L": 50.0, "model": "gaussian"})
    b = sha512_code({"model": "gaussian", "L": 50.0, "n": -2.5})
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sha512_code({"n": -2.5, "L": 50.0, "model": "lognormal"}))


def test_sha512_code_spells_integral_numbers_one_way():
    ref = sha512_code({"a": 1, "b": -2.5})
    for one in (1.0, np.float64(1.0), np.int64(1), np.float32(1.0)):
        np.testing.assert_array_equal(sha512_code({"a": one, "b": np.float64(-2.5)}), ref)
    assert not np.array_equal(sha512_code({"a": 1.5, "b": -2.5}), ref)


@pytest.mark.parametrize("length", [0, 100, 129, -128])
def test_sha512_code_rejects_lengths_that_are_not_multiples_of_128(length):
    with pytest.raises(ValueError, match="multiple of 128"):
        sha512_code({"a": 1}, length)


def test_sha512_code_rejects_non_finite_values():
    with pytest.raises(ValueError, match="not finite"):
        sha512_code({"a": float("nan")})


# -- encoders -------------------------------------------------------------------------------------
def test_hash_encoder_codes_use_the_real_categorical_values(space):
    enc = HashEncoder(space, emb_dim=8)
    cond = cond_of(space, [{"n": -2.0, "L": 20.0, "model": 3}, {"n": -2.0, "L": 20.0, "model": "lognormal"}])
    codes = enc.codes(cond).numpy()
    np.testing.assert_array_equal(codes[0], sha512_code({"n": -2, "L": 20, "model": 3}))
    np.testing.assert_array_equal(codes[1], sha512_code({"n": -2, "L": 20, "model": "lognormal"}))
    assert enc(cond).shape == (2, 8)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_hash_codes_of_nearby_values_are_no_more_alike_than_random_pairs():
    near = _corr(sha512_code({"n": -2.0}), sha512_code({"n": -2.01}))
    rng = np.random.default_rng(0)
    values = rng.uniform(-3, -1, size=(200, 2))
    random_pairs = [_corr(sha512_code({"n": float(a)}), sha512_code({"n": float(b)})) for a, b in values]
    assert near <= np.quantile(random_pairs, 0.99)


def test_feature_encoder_interpolates_where_the_hash_encoder_cannot():
    torch.manual_seed(0)
    space = ParamSpace([Parameter("n", "1", "continuous", -3.0, -1.0)])
    grid = torch.linspace(-3.0, -1.0, 41, dtype=torch.float64)[:, None]
    pair = torch.tensor([[-2.0], [-2.01]], dtype=torch.float64)
    for enc, continuous in [(FeatureEncoder(space, 32), True), (HashEncoder(space, 32), False)]:
        with torch.no_grad():
            e = enc(grid)
            typical = torch.cdist(e, e)[torch.triu_indices(41, 41, 1).unbind()].median()
            near = enc(pair)
            step = (near[0] - near[1]).norm()
        if continuous:
            assert step < 0.1 * typical
        else:
            assert step > 0.5 * typical


def test_feature_encoder_normalizes_like_the_param_space(space):
    cond = cond_of(space, [{"n": -2.5, "L": 10.0, "model": 3}, {"n": -1.0, "L": 77.0, "model": "gaussian"}])
    enc = FeatureEncoder(space, emb_dim=16)
    expected = space.normalize(cond.numpy())[:, [0, 1]]
    np.testing.assert_allclose(enc.normalized(cond).numpy(), expected, rtol=1e-12)


def test_condition_encoder_none_gives_the_null_embedding(space):
    enc = make_condition_encoder("features", space, emb_dim=16, p_uncond=0.0)
    null = enc(None, batch_size=3)
    assert null.shape == (3, 16)
    torch.testing.assert_close(null, enc.null.expand(3, -1))
    real = enc(cond_of(space, [{"n": -2.0, "L": 20.0, "model": 3}]))
    assert not torch.allclose(real, null[:1])


@pytest.mark.parametrize("kind", ["features", "hash"])
def test_condition_dropout_at_p1_is_the_null_condition_and_p0_never_drops(space, kind):
    points = [{"n": -2.0 + 0.1 * i, "L": 20.0, "model": "gaussian"} for i in range(6)]
    cond = cond_of(space, points)
    enc = make_condition_encoder(kind, space, emb_dim=16, p_uncond=1.0).train()
    torch.testing.assert_close(enc(cond), enc(None, batch_size=6))
    enc.p_uncond = 0.0
    dropped_nothing = enc(cond)
    torch.testing.assert_close(dropped_nothing, enc.eval()(cond))
    assert not torch.isclose(dropped_nothing, enc.null.expand(6, -1)).all(dim=1).any()


def test_condition_dropout_rate_follows_p_uncond(space):
    torch.manual_seed(1)
    cond = cond_of(space, [{"n": -2.0, "L": 20.0, "model": "gaussian"}] * 2000)
    enc = make_condition_encoder("features", space, emb_dim=8, p_uncond=0.3).train()
    emb = enc(cond)
    frac = torch.isclose(emb, enc.null.expand_as(emb)).all(dim=1).float().mean().item()
    assert abs(frac - 0.3) < 0.04  # ~4 standard deviations of a binomial(2000, 0.3) fraction


def test_unconditional_encoder_for_an_empty_space():
    enc = make_condition_encoder("features", ParamSpace([]), emb_dim=8)
    assert not enc.conditional
    empty = torch.zeros(4, 0, dtype=torch.float64)
    torch.testing.assert_close(enc(empty), enc(None, batch_size=4))


def test_wrong_cond_width_names_the_parameters(space):
    enc = make_condition_encoder("hash", space, emb_dim=8)
    with pytest.raises(ValueError, match=r"3 parameters \['n', 'L', 'model'\].*shape \(4, 2\)|shape \(4, 2\).*\['n', 'L', 'model'\]"):
        enc(torch.zeros(4, 2, dtype=torch.float64))


def test_bad_categorical_index_is_an_error(space):
    enc = make_condition_encoder("features", space, emb_dim=8)
    with pytest.raises(ValueError, match="'model'"):
        enc(torch.tensor([[-2.0, 20.0, 5.0]], dtype=torch.float64))


def test_unknown_names_list_the_valid_ones(space):
    with pytest.raises(ValueError, match="valid kinds are"):
        make_condition_encoder("clip", space, emb_dim=8)
    with pytest.raises(ValueError, match="valid options are"):
        make_condition_encoder("hash", space, emb_dim=8, n_frequencies=3)
    with pytest.raises(ValueError, match="valid kinds are"):
        build_network({"kind": "transformer"}, space)
    with pytest.raises(ValueError, match="valid keys are"):
        build_network({"kind": "mlp", "dim": 2, "widht": 3}, space)


def test_condition_encoder_rejects_mismatched_width(space):
    with pytest.raises(ValueError, match="emb_dim"):
        ConditionEncoder(FeatureEncoder(space, 8), emb_dim=16)


def test_hash_encoder_refuses_float32_cond(space):
    cond = cond_of(space, [{"n": -2.01, "L": 20.0, "model": 3}])
    enc = make_condition_encoder("hash", space, emb_dim=8)
    assert enc(cond).shape == (1, 8)
    with pytest.raises(TypeError, match="float64"):
        enc(cond.float())


def test_non_finite_cond_is_an_error(space):
    enc = make_condition_encoder("features", space, emb_dim=8)
    with pytest.raises(ValueError, match="NaN"):
        enc(torch.tensor([[float("nan"), 20.0, 0.0]], dtype=torch.float64))


# -- aliasing of Fourier features on coarse training designs ----------------------------------------
GRID_SPACE = ParamSpace([Parameter("index", "1", "continuous", -3.0, -1.0),
                         Parameter("amplitude", "Mpc2", "continuous", 0.5, 2.0)])
GRID = [{"index": n, "amplitude": a} for n in (-3.0, -2.5, -2.0, -1.5, -1.0) for a in (0.5, 1.0, 2.0)]


def _features(enc: FeatureEncoder, cond: torch.Tensor) -> torch.Tensor:
    x = enc.normalized(cond)[:, :, None] * enc.freqs.double()
    return torch.cat([x.sin(), x.cos()], dim=2)


def test_fourier_aliasing_follows_nyquist_on_a_sweep_grid():
    cond = GRID_SPACE.to_array(GRID)
    # index: 5 values, gap 1/4 of the range -> alias-free up to 2 octaves (finest period 1)
    # amplitude: 0.5, 1, 2 of [0.5, 2] -> gaps 1/3 and 2/3 -> alias-free only with 1 octave
    assert fourier_aliasing(GRID_SPACE, cond, 0) == []
    assert fourier_aliasing(GRID_SPACE, cond, 1) == []
    two = fourier_aliasing(GRID_SPACE, cond, 2)
    assert len(two) == 1 and "'amplitude'" in two[0] and "n_frequencies <= 1" in two[0]
    three = fourier_aliasing(GRID_SPACE, cond, 3)
    assert len(three) == 2 and "'index'" in three[0] and "n_frequencies <= 2" in three[0]
    assert "0.25" in three[0] and "[-3.0, -1.0]" in three[0]


def test_aliased_octaves_take_unseen_values_between_grid_points():
    """What the rule protects against: with 4 octaves, sin(4 pi x), sin(8 pi x) and cos(8 pi x)
    are constant over the 5-point grid, and halfway between two grid values cos(8 pi x) = -1."""
    space = ParamSpace([GRID_SPACE.params[0]])
    grid = torch.tensor([[-3.0], [-2.5], [-2.0], [-1.5], [-1.0]], dtype=torch.float64)
    between = torch.tensor([[-1.75]], dtype=torch.float64)
    enc = FeatureEncoder(space, 8, n_frequencies=4)
    on_grid, off_grid = _features(enc, grid)[:, 0], _features(enc, between)[:, 0]
    lo, hi = on_grid.min(0).values, on_grid.max(0).values
    outside = (off_grid[0] < lo - 1e-9) | (off_grid[0] > hi + 1e-9)
    assert bool(outside.any())  # the aliased design: a feature value never seen in training
    ok = FeatureEncoder(space, 8, n_frequencies=2)
    assert fourier_aliasing(space, grid.numpy(), 2) == []
    on_grid, off_grid = _features(ok, grid)[:, 0], _features(ok, between)[:, 0]
    assert bool(((off_grid[0] >= on_grid.min(0).values - 1e-9) & (off_grid[0] <= on_grid.max(0).values + 1e-9)).all())


def test_feature_encoder_default_is_alias_free_on_coarse_grids():
    assert FeatureEncoder(GRID_SPACE, 8).n_frequencies == 1
    assert fourier_aliasing(GRID_SPACE, GRID_SPACE.to_array(GRID), FeatureEncoder(GRID_SPACE, 8).n_frequencies) == []


# -- parameter jitter ------------------------------------------------------------------------------
def test_jitter_is_gaussian_noise_in_units_of_each_range_in_training_mode_only(space):
    enc = FeatureEncoder(space, emb_dim=8, jitter=0.05)
    cond = cond_of(space, [{"n": -2.0, "L": 40.0, "model": "lognormal"}] * 4)
    enc.eval()
    plain = enc(cond)
    torch.testing.assert_close(enc(cond), plain)  # eval mode: no noise
    enc.train()
    torch.manual_seed(3)
    jittered = enc(cond)
    torch.manual_seed(3)
    eps = torch.randn((4, 2), dtype=torch.float32)  # the same draw, in normalized units
    moved = cond.clone()
    moved[:, 0] += 0.05 * 2.0 * eps[:, 0].double()   # range of n: 2
    moved[:, 1] += 0.05 * 90.0 * eps[:, 1].double()  # range of L: 90 Mpc
    enc.eval()
    torch.testing.assert_close(jittered, enc(moved), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(jittered, plain)


def test_jitter_zero_changes_nothing_and_bad_jitter_is_refused(space):
    enc = FeatureEncoder(space, emb_dim=8)
    cond = cond_of(space, [{"n": -2.0, "L": 40.0, "model": 3}] * 2)
    enc.train()
    torch.testing.assert_close(enc(cond), enc.eval()(cond))
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="jitter"):
            FeatureEncoder(space, emb_dim=8, jitter=bad)
    assert make_condition_encoder("features", space, 8, jitter=0.02).inner.jitter == 0.02
    with pytest.raises(ValueError, match="jitter"):
        make_condition_encoder("hash", space, 8, jitter=0.02)  # the hash cannot interpolate
