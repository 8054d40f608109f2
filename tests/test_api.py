"""The Python API end to end on tiny models: fit, sample, save/load, resume, bad input."""

import pickle
import warnings

import numpy as np
import pytest
import torch

from rho_workflow.api import RhoModel
from rho_workflow.params import Parameter, ParameterError, ParamSpace
from rho_workflow.training.checkpoint import CheckpointError, load_checkpoint

SPACE = ParamSpace([Parameter("temperature", "K", low=200.0, high=300.0),
                    Parameter("phase", "1", kind="categorical", values=("gas", "liquid"))])
TINY_NET = {"kind": "unet", "dims": 1, "base_channels": 8, "channel_mults": [1, 2],
            "num_res_blocks": 1, "attention_levels": []}


def tiny_data(n=64, length=16, seed=0):
    """1D fields whose level and wiggle depend on the parameters (units: kg m-3)."""
    rng = np.random.default_rng(seed)
    pts, xs = [], []
    grid = np.linspace(0, 2 * np.pi, length)
    for i in range(n):
        t = float(rng.choice([200.0, 250.0, 300.0]))
        phase = ["gas", "liquid"][i % 2]
        level = 1000.0 if phase == "liquid" else 1.2
        xs.append(level * (1 + 0.1 * (t - 250) / 50 * np.sin(grid)) + 0.01 * level * rng.standard_normal(length))
        pts.append({"temperature": t, "phase": phase})
    return np.stack(xs), pts


def make_model(**kw):
    return RhoModel.create((16,), SPACE, network=dict(TINY_NET), device="cpu", **kw)


def test_fit_reduces_loss_and_samples_in_physical_units():
    x, pts = tiny_data()
    model = make_model()
    result = model.fit(x, pts, transform="log-standardize", steps=120, batch_size=16, lr=2e-3,
                       warmup_steps=10, progress=False)
    first, last = np.mean(result.losses[:20]), np.mean(result.losses[-20:])
    assert last < 0.7 * first, (first, last)
    out = model.sample([{"temperature": 250.0, "phase": "liquid"}, {"temperature": 250.0, "phase": "gas"}],
                       n=4, steps=10, seed=1)
    assert out.shape == (2, 4, 1, 16)
    assert np.isfinite(out).all()
    # physical units are restored: liquid ~1000 kg m-3, gas ~1.2 kg m-3 (three decades apart)
    assert 300 < np.median(out[0]) < 3000 and 0.3 < np.median(out[1]) < 4, np.median(out, axis=(1, 2, 3))


@pytest.mark.parametrize("network", [{}, {"patch_size": 2, "coordinates": True}])
def test_save_load_roundtrip_gives_identical_samples(tmp_path, network):
    x, pts = tiny_data(n=16)
    model = RhoModel.create((16,), SPACE, network={**TINY_NET, **network}, device="cpu")
    model.fit(x, pts, steps=5, batch_size=8, progress=False)
    path = model.save(tmp_path / "m.pt")
    loaded = RhoModel.load(path, device="cpu")
    point = {"temperature": 230.0, "phase": "gas"}
    a = model.sample(point, n=3, steps=5, seed=7)
    b = loaded.sample(point, n=3, steps=5, seed=7)
    np.testing.assert_array_equal(a, b)
    assert loaded.param_space == SPACE
    assert loaded.config["transform"] == model.config["transform"]


def test_per_sample_seeding_independent_of_batch_size():
    x, pts = tiny_data(n=16)
    model = make_model()
    model.fit(x, pts, steps=3, batch_size=8, progress=False)
    points = [{"temperature": 210.0 + 10 * i, "phase": "gas"} for i in range(4)]
    seeds = [11, 12, 13, 14]
    whole = model.sample_seeded(points, seeds, sampler="ddpm", steps=20, batch_size=4)
    split = model.sample_seeded(points, seeds, sampler="ddpm", steps=20, batch_size=1)
    np.testing.assert_allclose(whole, split, rtol=1e-6, atol=1e-9)
    other = model.sample_seeded(points, [11, 12, 13, 99], sampler="ddpm", steps=20)
    np.testing.assert_array_equal(whole[:3], other[:3])
    assert not np.allclose(whole[3], other[3])


def test_resume_is_exact(tmp_path):
    x, pts = tiny_data(n=16)
    straight = make_model()
    straight.fit(x, pts, steps=8, batch_size=8, progress=False, seed=3)
    ckpt = tmp_path / "ckpt.pt"
    first = make_model()

    def interrupt(step, loss):
        if step == 5:
            raise KeyboardInterrupt  # as if the job were killed after the step-4 checkpoint

    with pytest.raises(KeyboardInterrupt):
        first.fit(x, pts, steps=8, batch_size=8, progress=False, seed=3, checkpoint_path=ckpt,
                  checkpoint_every=4, log_every=1, on_log=interrupt)
    assert load_checkpoint(ckpt)["trainer_state"]["step"] == 4
    resumed = RhoModel.load(ckpt, device="cpu")
    resumed.fit(x, pts, steps=8, batch_size=8, progress=False, seed=3, checkpoint_path=ckpt, resume=True)
    for k, v in straight.denoiser.net.state_dict().items():
        torch.testing.assert_close(resumed.denoiser.net.state_dict()[k], v, rtol=0, atol=0)
    assert load_checkpoint(ckpt)["trainer_state"]["step"] == 8


def test_checkpoint_refuses_foreign_and_truncated_files(tmp_path):
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format": "rho_workflow-checkpoint", "x": Parameter}, f)
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        RhoModel.load(evil)
    x, pts = tiny_data(n=8)
    model = make_model()
    good = model.save(tmp_path / "good.pt")
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        RhoModel.load(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        RhoModel.load(tmp_path / "missing.pt")


@pytest.mark.parametrize("point, message", [
    ({"temperature": 250.0}, "missing \\['phase'\\]"),
    ({"temperature": 250.0, "phase": "gas", "pressure": 1.0}, "unexpected \\['pressure'\\]"),
    ({"temperature": 400.0, "phase": "gas"}, "'temperature': value 400.0 K is outside the declared range"),
    ({"temperature": 250.0, "phase": "plasma"}, "'phase': value 'plasma' was never seen"),
    ({"temperature": float("nan"), "phase": "gas"}, "not finite"),
])
def test_bad_parameter_values_are_named(point, message):
    model = make_model()
    with pytest.raises(ParameterError, match=message):
        model.sample(point, n=1, steps=2)


def test_extrapolation_only_when_asked():
    model = make_model()
    out = model.sample({"temperature": 400.0, "phase": "gas"}, n=1, steps=2, allow_extrapolation=True)
    assert out.shape == (1, 1, 1, 16)


def test_bad_fields_are_named():
    model = make_model()
    x, pts = tiny_data(n=8)
    with pytest.raises(ValueError, match=r"expected \(N, \*spatial\) = \(N, 16\)"):
        model.fit(x[:, :8], pts, steps=1, progress=False)
    x[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN/inf values at unmasked points.*sample 3, index \\(5,\\)"):
        model.fit(x, pts, steps=1, progress=False)
    with pytest.raises(ValueError, match="one point per field"):
        model.fit(tiny_data(n=8)[0], pts[:4], steps=1, progress=False)


def test_mask_points_come_back_nan_and_are_ignored():
    x, pts = tiny_data(n=16)
    mask = np.ones(16, bool)
    mask[:3] = False
    x[:, :3] = np.nan  # land: never valid, ignored by the loss
    model = make_model()
    model.fit(x, pts, mask=mask, steps=3, batch_size=8, progress=False)
    out = model.sample({"temperature": 250.0, "phase": "gas"}, n=2, steps=3)
    assert np.isnan(out[..., :3]).all() and np.isfinite(out[..., 3:]).all()


def test_point_data_with_mlp():
    """Conditional 2D points: x ~ N((shift, -shift), 0.1^2 I); the MLP learns the shift."""
    space = ParamSpace([Parameter("shift", "m", low=-1.0, high=1.0)])
    rng = np.random.default_rng(0)
    shifts = rng.choice([-1.0, 1.0], 512)
    x = np.stack([shifts, -shifts], 1) + 0.1 * rng.standard_normal((512, 2))
    net = {"kind": "mlp", "dim": 2, "hidden": 64, "depth": 2,
           "condition": {"kind": "features", "n_frequencies": 0}}  # two values: no octave is alias-free
    model = RhoModel.create((2,), space, network=net, device="cpu")
    model.fit(x, [{"shift": s} for s in shifts], steps=300, batch_size=64, lr=3e-3, warmup_steps=10,
              progress=False)
    out = model.sample([{"shift": -1.0}, {"shift": 1.0}], n=64, steps=20, seed=0)
    assert out.shape == (2, 64, 2)
    np.testing.assert_allclose(np.median(out, axis=1), [[-1, 1], [1, -1]], atol=0.3)
    with pytest.raises(ValueError, match=r"expected \(N, 2\)"):
        model.fit(x[:, :1], [{"shift": s} for s in shifts], steps=1, progress=False)


def test_fit_warns_when_the_training_design_aliases_the_feature_encoder():
    x, pts = tiny_data(n=16)  # temperature on a 3-value grid: gaps of half the range
    net = {**TINY_NET, "condition": {"kind": "features", "n_frequencies": 3}}
    model = RhoModel.create((16,), SPACE, network=net, device="cpu")
    with pytest.warns(UserWarning, match=r"'temperature'.*n_frequencies <= 1"):
        model.fit(x, pts, steps=1, batch_size=8, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_model().fit(x, pts, steps=1, batch_size=8, progress=False)


def test_default_sampler_is_unipc_on_fitted_levels_at_12_steps_and_warns_off_them():
    x, pts = tiny_data(n=16)
    model = make_model()
    model.fit(x, pts, steps=2, batch_size=8, progress=False)
    point = {"temperature": 250.0, "phase": "gas"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default = model.sample(point, n=2, seed=3)
        model.sample(point, n=2, steps=5, seed=3)  # fitted levels are stored down to 5 steps
        model.sample(point, n=2, steps=5, seed=3, sampler="dpmpp_2m")
    np.testing.assert_array_equal(default, model.sample(point, n=2, steps=12, seed=3, sampler="unipc",
                                                        spacing="fitted"))
    with pytest.warns(UserWarning, match="unipc with 5 steps"):  # its own log-snr levels, below 10 steps
        model.sample(point, n=2, steps=5, seed=3, spacing="log-snr")


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_non_positive_or_fractional_counts_are_refused(n):
    from rho_workflow.errors import RhoWorkflowError

    space = ParamSpace([Parameter("a", "1", low=0.0, high=1.0)])
    model = RhoModel.create((8,), space, network={"kind": "unet", "dims": 1, "base_channels": 8,
                                                  "channel_mults": [1], "num_res_blocks": 1,
                                                  "attention_levels": []}, device="cpu")
    with pytest.raises(RhoWorkflowError, match="n must be an integer >= 1"):
        model.sample({"a": 0.5}, n=n)


def test_atomic_writes_follow_the_umask(tmp_path):
    import os

    from rho_workflow.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_default_3d_network_works_on_patches_from_32_cells_a_side():
    """The default network of a 32^3 grid folds 2^3-cell patches (bench/time_to_quality.py:
    lower error after 30 CPU-minutes at about 2.5x fewer CPU seconds a step); smaller grids and other
    ranks work on single cells."""
    from rho_workflow.api import default_network

    assert default_network((32, 32, 40)).get("patch_size") == 2
    assert default_network((32, 32, 40))["base_channels"] == 32
    for shape in [(16, 16, 16), (32, 32, 31), (64, 64), (128,)]:
        assert default_network(shape).get("patch_size", 1) == 1


def test_guidance_needs_a_model_trained_with_condition_dropout():
    """With ``p_uncond=0`` the null condition is never trained, so guided samples would mix in
    an untrained model: refused by name; guidance 0 samples as usual."""
    from rho_workflow.training.model import SampleRequestError

    x, pts = tiny_data(n=16)
    model = make_model(p_uncond=0.0)
    model.fit(x, pts, steps=3, batch_size=8, progress=False)
    point = {"temperature": 250.0, "phase": "gas"}
    assert np.isfinite(model.sample(point, n=2, steps=3, seed=0, sampler="dpmpp_2m")).all()
    with pytest.raises(SampleRequestError, match=r"guidance=1\.5 needs the unconditional model.*p_uncond 0.*fix"):
        model.sample(point, n=2, steps=3, seed=0, sampler="dpmpp_2m", guidance=1.5)
    guided = make_model(p_uncond=0.1)
    guided.fit(x, pts, steps=3, batch_size=8, progress=False)
    assert np.isfinite(guided.sample(point, n=2, steps=3, seed=0, sampler="dpmpp_2m", guidance=1.5)).all()
