"""Symmetry augmentation and validation-loss model selection (issue 14: the demo sweep memorizes).

Augmentation must move each field by an element of the declared group and nothing else (a
permutation of its cells that is a periodic translation, a reflection or an axis
permutation), reach every element, and stay exactly resumable. Selection by the validation
loss must keep the weights whose validation loss is the recorded minimum, stop after
``patience`` evaluations without a lower one, and resume to the same result.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from rho_workflow.api import RhoModel
from rho_workflow.errors import ConfigError
from rho_workflow.params import Parameter, ParamSpace
from rho_workflow.training.augment import augment_batch, check_augment
from rho_workflow.training.checkpoint import load_checkpoint
from rho_workflow.training.trainer import TrainConfig, _Validator, EMA

SPACE = ParamSpace([Parameter("index", "1", low=-3.0, high=-1.0)])


def _group_elements(field: torch.Tensor, augment: list[str]) -> list[torch.Tensor]:
    """Every image of ``field`` (C, *spatial) under the group of ``augment``, by brute force."""
    spatial = field.shape[1:]
    d = len(spatial)
    shifts = itertools.product(*[range(n) for n in spatial]) if "roll" in augment else [(0,) * d]
    flips = itertools.product([False, True], repeat=d) if "flip" in augment else [(False,) * d]
    perms = itertools.permutations(range(d)) if "transpose" in augment else [tuple(range(d))]
    out = []
    for s, f, p in itertools.product(list(shifts), list(flips), list(perms)):
        y = torch.roll(field, [-k for k in s], dims=list(range(1, d + 1)))
        y = torch.flip(y, [1 + a for a in range(d) if f[a]]) if any(f) else y
        out.append(y.permute(0, *(1 + a for a in p)))
    return out


@pytest.mark.parametrize("augment,shape", [(["roll"], (5,)), (["roll", "flip"], (4, 6)),
                                           (["roll", "flip", "transpose"], (4, 4)),
                                           (["flip", "transpose"], (3, 3, 3))])
def test_every_augmented_field_is_a_group_image_and_every_image_is_reached(augment, shape):
    torch.manual_seed(0)
    x = torch.randn(2, 2, *shape)  # distinct values: an image is identified exactly
    images = [_group_elements(x[i], augment) for i in range(2)]
    seen = [set(), set()]
    distinct = {tuple(im.flatten().tolist()) for im in images[0]}
    for k in range(12 * len(distinct)):  # coupon collector: all reached with near certainty
        y = augment_batch(x, augment, torch.Generator().manual_seed(k))
        assert y.shape == x.shape
        for i in range(2):
            match = [j for j, im in enumerate(images[i]) if torch.equal(im, y[i])]
            assert match, f"draw {k}: field {i} is not an image of its field under {augment}"
            seen[i].update(match)
    assert len({tuple(images[0][j].flatten().tolist()) for j in seen[0]}) == len(distinct)


def test_augmentation_is_a_function_of_the_generator():
    x = torch.randn(8, 1, 6, 6)
    a = augment_batch(x, ["roll", "flip", "transpose"], torch.Generator().manual_seed(3))
    b = augment_batch(x, ["roll", "flip", "transpose"], torch.Generator().manual_seed(3))
    c = augment_batch(x, ["roll", "flip", "transpose"], torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(augment_batch(x, [], torch.Generator()), x)


def test_check_augment_names_the_rule_and_the_fix():
    assert check_augment(["roll", "flip", "transpose"], (8, 8), False) == []
    (mask,) = check_augment(["roll"], (8, 8), True)
    assert "mask" in mask and "fix" in mask
    (uneven,) = check_augment(["transpose"], (8, 16), False)
    assert "(8, 16)" in uneven
    (points,) = check_augment(["flip"], (), False)
    assert "point data" in points


def _data(n: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    idx = rng.uniform(-3, -1, n)
    x = rng.normal(size=(n, 8, 8)) * (1 + 0.2 * idx[:, None, None])
    return x, [{"index": float(v)} for v in idx]


def _model() -> RhoModel:
    net = {"kind": "unet", "dims": 2, "base_channels": 4, "channel_mults": [1], "num_res_blocks": 1,
           "attention_levels": []}
    return RhoModel.create((8, 8), SPACE, network=net, device="cpu")


def test_training_with_augmentation_and_validation_resumes_exactly(tmp_path):
    x, pts = _data()
    vx, vpts = _data(4, seed=1)
    opts = dict(steps=12, batch_size=4, progress=False, seed=2, augment=["roll", "flip", "transpose"],
                validate_every=3, keep="best", log_every=1)
    straight = _model()
    straight.fit(x, pts, validation=(vx, vpts), **opts)
    ckpt = tmp_path / "m.ckpt"
    first = _model()

    def interrupt(step, loss):
        if step == 7:
            raise KeyboardInterrupt  # killed after the step-6 checkpoint

    with pytest.raises(KeyboardInterrupt):
        first.fit(x, pts, validation=(vx, vpts), checkpoint_path=ckpt, checkpoint_every=6,
                  on_log=interrupt, **opts)
    resumed = RhoModel.load(ckpt, device="cpu")
    resumed.fit(x, pts, validation=(vx, vpts), checkpoint_path=ckpt, resume=True, **opts)
    for k, v in straight.denoiser.net.state_dict().items():
        torch.testing.assert_close(resumed.denoiser.net.state_dict()[k], v, rtol=0, atol=0)
    for k, v in straight.ema_state.items():
        torch.testing.assert_close(resumed.ema_state[k], v, rtol=0, atol=0)
    assert resumed.validation == straight.validation
    assert [h[0] for h in straight.validation["history"]] == [3, 6, 9, 12]
    # augmentation changes the batches: the same run without it ends elsewhere
    plain = _model()
    plain.fit(x, pts, validation=(vx, vpts), **{**opts, "augment": []})
    assert any(not torch.equal(plain.denoiser.net.state_dict()[k], v)
               for k, v in straight.denoiser.net.state_dict().items())


def test_keep_best_holds_the_weights_of_the_lowest_validation_loss(tmp_path):
    x, pts = _data()
    vx, vpts = _data(4, seed=1)
    model = _model()
    ckpt = tmp_path / "best.ckpt"
    model.fit(x, pts, validation=(vx, vpts), steps=40, batch_size=4, lr=3e-2, progress=False,
              validate_every=4, keep="best", checkpoint_path=ckpt)
    record = model.validation
    losses = [h[1] for h in record["history"]]
    assert len(losses) == 10 and record["best_loss"] == min(losses)
    assert record["best_step"] == record["history"][int(np.argmin(losses))][0]
    # recompute the validation loss of the kept weights: it is the recorded minimum
    cfg = TrainConfig.from_dict(model.config["training"])
    vz = torch.as_tensor(model.transform.forward(vx[:, None]), dtype=torch.float32)
    vc = torch.from_numpy(model.param_space.to_array(vpts))
    validator = _Validator(model.denoiser, model.schedule, cfg, vz, vc, None, 1.0)
    ema = EMA(model.denoiser.net, 0.99)
    ema.load_state_dict(model.ema_state)
    assert validator.loss(ema) == pytest.approx(record["best_loss"], rel=1e-6)
    loaded = RhoModel.load(ckpt, device="cpu")
    for k, v in model.ema_state.items():
        torch.testing.assert_close(loaded.ema_state[k], v, rtol=0, atol=0)
    assert load_checkpoint(ckpt)["trainer_state"]["validation"]["best_step"] == record["best_step"]
    if record["best_step"] != 40:  # the running EMA is kept beside the best one, for resume
        running = load_checkpoint(ckpt)["trainer_state"]["running_ema"]
        assert any(not torch.equal(running[k], v) for k, v in model.ema_state.items())


def test_patience_stops_and_a_resume_does_not_train_on(tmp_path):
    x, pts = _data(6)
    vx, vpts = _data(6, seed=5)  # other parameter points: the tiny model overfits the six fields
    model = _model()
    ckpt = tmp_path / "early.ckpt"
    result = model.fit(x, pts, validation=(vx, vpts), steps=400, batch_size=6, lr=5e-2, warmup_steps=1,
                       progress=False, validate_every=2, keep="best", patience=3, checkpoint_path=ckpt)
    record = model.validation
    assert record["stopped_at"] is not None and record["stopped_at"] < 400
    assert result.step == record["stopped_at"] == load_checkpoint(ckpt)["trainer_state"]["step"]
    assert [h[0] for h in record["history"]][-1] - record["best_step"] == 3 * 2
    again = RhoModel.load(ckpt, device="cpu")
    resumed = again.fit(x, pts, validation=(vx, vpts), steps=400, batch_size=6, lr=5e-2, warmup_steps=1,
                        progress=False, validate_every=2, keep="best", patience=3, checkpoint_path=ckpt,
                        resume=True)
    assert resumed.step == record["stopped_at"] and resumed.losses == []
    for k, v in model.ema_state.items():
        torch.testing.assert_close(again.ema_state[k], v, rtol=0, atol=0)


def test_validation_options_need_validation_fields():
    with pytest.raises(ConfigError, match="validate_every"):
        TrainConfig.from_dict({"keep": "best"})
    with pytest.raises(ConfigError, match="validate_every"):
        TrainConfig.from_dict({"patience": 3})
    x, pts = _data()
    with pytest.raises(ConfigError, match="no validation fields"):
        _model().fit(x, pts, steps=2, batch_size=4, progress=False, validate_every=1)
    with pytest.raises(ConfigError, match="mask"):
        _model().fit(x, pts, mask=np.ones((8, 8), bool), steps=2, batch_size=4, progress=False,
                     augment=["roll"])
