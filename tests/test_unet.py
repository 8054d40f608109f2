"""Networks: the n-D U-Net and the MLP keep the contract ``net(x_in, c_noise, cond) -> like x_in``."""

from __future__ import annotations

import warnings

import pytest
import torch

from rho_workflow.models import MLPNet, UNet, build_network, make_condition_encoder
from rho_workflow.params import Parameter, ParamSpace

SPACE = ParamSpace([
    Parameter("n", "1", "continuous", -3.0, -1.0),
    Parameter("model", "1", "categorical", values=("gaussian", "lognormal")),
])


def tiny_unet(dims: int, channels: int = 1, kind: str = "features", **kw) -> UNet:
    enc = make_condition_encoder(kind, SPACE, emb_dim=16, p_uncond=0.0)
    opts = dict(base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1, cond_encoder=enc)
    return UNet(dims, in_channels=channels, **{**opts, **kw})


def randomize_zero_layers(net: torch.nn.Module) -> torch.nn.Module:
    """The zero-initialized output layers make a fresh net output 0; give them weights."""
    torch.manual_seed(123)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0.0, 0.2)
    return net


def conds(b: int) -> torch.Tensor:
    pts = [{"n": -3.0 + 2.0 * i / max(b - 1, 1), "model": ("gaussian", "lognormal")[i % 2]} for i in range(b)]
    return torch.from_numpy(SPACE.to_array(pts))


SHAPES = [(1, (100,)), (1, (64,)), (2, (30, 27)), (2, (16, 16)), (3, (12, 10, 9))]


@pytest.mark.parametrize("dims,spatial", SHAPES)
@pytest.mark.parametrize("channels", [1, 3])
def test_unet_output_has_the_input_shape(dims, spatial, channels):
    net = randomize_zero_layers(tiny_unet(dims, channels))
    x = torch.randn(2, channels, *spatial)
    y = net(x, torch.randn(2), conds(2))
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_unet_out_channels_and_attention_levels():
    net = tiny_unet(2, 2, out_channels=1, attention_levels=(1, 2))
    assert net(torch.randn(2, 2, 12, 20), torch.zeros(2), conds(2)).shape == (2, 1, 12, 20)
    with pytest.warns(UserWarning, match=r"3D levels \[1\]"):  # quadratic in the voxels of a fine level
        tiny_unet(3, attention_levels=(1, 2))
    with warnings.catch_warnings():  # the coarsest level is cheap: no warning
        warnings.simplefilter("error")
        tiny_unet(3, attention_levels=(2,))


def test_fresh_unet_outputs_zero_and_gradients_reach_every_parameter():
    net = tiny_unet(2, attention_levels=(2,))
    x = torch.randn(3, 1, 12, 12)
    assert not net(x, torch.zeros(3), conds(3)).any()  # zero-initialized output conv
    randomize_zero_layers(net)
    net(x, torch.randn(3), conds(3)).square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    # the null embedding is unused when every row has a condition and dropout is off
    assert missing == ["cond_encoder.null"]


@pytest.mark.parametrize("kind", ["features", "hash"])
def test_conditioning_changes_the_output_and_none_means_the_null_condition(kind):
    net = randomize_zero_layers(tiny_unet(1, kind=kind)).eval()
    x, c = torch.randn(1, 1, 32).expand(2, 1, 32), torch.zeros(2)
    y = net(x, c, conds(2))
    assert not torch.allclose(y[0], y[1], atol=1e-4)  # same input, different parameters
    null = net(x, c, None)
    torch.testing.assert_close(null[0], null[1])
    assert not torch.allclose(null, y, atol=1e-4)
    net.cond_encoder.p_uncond = 1.0
    torch.testing.assert_close(net.train()(x, c, conds(2)), null)


def test_noise_level_changes_the_output():
    net = randomize_zero_layers(tiny_unet(2)).eval()
    x = torch.randn(1, 1, 8, 8).expand(2, 1, 8, 8)
    y = net(x, torch.tensor([-1.0, 0.5]), conds(1).expand(2, -1))
    assert not torch.allclose(y[0], y[1], atol=1e-4)


@pytest.mark.parametrize("dims,spatial", [(1, (20,)), (2, (10, 9)), (3, (6, 5, 4))])
def test_samples_of_a_batch_do_not_interact(dims, spatial):
    net = randomize_zero_layers(tiny_unet(dims, attention_levels=(1,) if dims < 3 else ())).eval()
    x, c, cond = torch.randn(4, 1, *spatial), torch.randn(4), conds(4)
    together = net(x, c, cond)
    alone = torch.cat([net(x[i:i + 1], c[i:i + 1], cond[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_unet_bad_inputs_name_expected_and_given_shapes():
    net = tiny_unet(2)
    with pytest.raises(ValueError, match=r"\(B, 1, n, n\).*\(4, 1, 32\)"):
        net(torch.randn(4, 1, 32), torch.zeros(4), conds(4))
    with pytest.raises(ValueError, match=r"1 channels.*\(4, 3, 8, 8\)"):
        net(torch.randn(4, 3, 8, 8), torch.zeros(4), conds(4))
    with pytest.raises(ValueError, match=r"2 parameters \['n', 'model'\]"):
        net(torch.randn(4, 1, 8, 8), torch.zeros(4), torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="c_noise"):
        net(torch.randn(4, 1, 8, 8), torch.zeros(3), conds(4))
    with pytest.raises(ValueError, match="dims"):
        UNet(4)


def test_pad_modes_keep_shapes():
    for mode in ("replicate", "reflect", "circular", "zeros"):
        net = tiny_unet(2, pad_mode=mode)
        assert net(torch.randn(1, 1, 13, 7), torch.zeros(1), conds(1)).shape == (1, 1, 13, 7)


def test_unconditional_unet_accepts_none_only():
    net = UNet(1, base_channels=8)
    assert net(torch.randn(2, 1, 16), torch.zeros(2), None).shape == (2, 1, 16)
    with pytest.raises(ValueError, match="without a condition encoder"):
        net(torch.randn(2, 1, 16), torch.zeros(2), conds(2))


def test_mlp_contract_conditioning_and_independence():
    enc = make_condition_encoder("hash", SPACE, emb_dim=32, p_uncond=0.0)
    net = randomize_zero_layers(MLPNet(3, hidden=32, depth=2, cond_encoder=enc)).eval()
    x, c, cond = torch.randn(4, 3), torch.randn(4), conds(4)
    y = net(x, c, cond)
    assert y.shape == (4, 3)
    alone = torch.cat([net(x[i:i + 1], c[i:i + 1], cond[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(y, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(net(x, c, None), y, atol=1e-4)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        net(torch.randn(4, 2), c, cond)


def test_build_network_from_config():
    cfg = {"kind": "unet", "dims": 2, "in_channels": 2, "base_channels": 8, "channel_mults": [1, 2],
           "condition": {"kind": "features", "p_uncond": 0.2, "n_frequencies": 3}}
    net = build_network(cfg, SPACE)
    assert isinstance(net, UNet) and net.emb_dim == 32 and net.cond_encoder.p_uncond == 0.2
    assert net.cond_encoder.inner.n_frequencies == 3
    assert net(torch.randn(2, 2, 9, 9), torch.zeros(2), conds(2)).shape == (2, 2, 9, 9)
    mlp = build_network({"kind": "mlp", "dim": 2, "hidden": 16, "depth": 1}, ParamSpace([]))
    assert mlp(torch.randn(5, 2), torch.zeros(5), None).shape == (5, 2)


@pytest.mark.parametrize("dims, spatial", [(1, (6,)), (2, (5, 7)), (3, (4, 6, 3))])
def test_coordinate_channels_give_a_constant_input_position(dims, spatial):
    """``coordinates=True``: the first convolution sees each cell's centre in (-1, 1) along each
    axis, so a spatially constant input (pure noise's mean) yields features that vary with
    position away from the edges; without them a constant input stays constant inside."""
    x = torch.ones(2, 1, *spatial)
    net = UNet(dims, base_channels=8, channel_mults=(1,), coordinates=True)
    grid = net._with_coordinates(x)[:, 1:]
    assert grid.shape == (2, dims, *spatial)
    for axis, n in enumerate(spatial):
        line = grid[0, axis].movedim(axis, 0).reshape(n, -1)[:, 0]
        torch.testing.assert_close(line, (2 * torch.arange(n) + 1) / n - 1.0)
    inner = (slice(None), slice(None)) + (slice(1, -1),) * dims
    with torch.no_grad():
        h = net.conv_in(net._with_coordinates(x))[inner]
        flat = UNet(dims, base_channels=8, channel_mults=(1,)).conv_in(x)[inner]
    assert h.flatten(2).std(-1).max() > 1e-3 and flat.flatten(2).std(-1).max() < 1e-6
    assert net(torch.randn(2, 1, *spatial), torch.zeros(2)).shape == (2, 1, *spatial)
    cfg = build_network({"kind": "unet", "dims": dims, "base_channels": 8, "coordinates": True}, ParamSpace([]))
    assert cfg.conv_in.in_channels == 1 + dims


@pytest.mark.parametrize("dims, spatial, patch", [(1, (12,), 3), (2, (4, 6), 2), (3, (4, 2, 6), 2)])
def test_space_to_depth_folds_each_block_into_channels_and_back(dims, spatial, patch):
    """Channel ``c * p**d + k`` of the folded field holds offset ``k`` (row-major) of block
    ``(i, j, ...)``: cell ``(i * p + k_0, j * p + k_1, ...)`` of channel ``c``."""
    import itertools

    from rho_workflow.models.unet import depth_to_space, space_to_depth

    x = torch.randn(2, 3, *spatial)
    folded = space_to_depth(x, patch)
    assert folded.shape == (2, 3 * patch ** dims, *[n // patch for n in spatial])
    for k, offset in enumerate(itertools.product(range(patch), repeat=dims)):
        cells = tuple(slice(o, None, patch) for o in offset)
        torch.testing.assert_close(folded[:, 1 * patch ** dims + k], x[(slice(None), 1) + cells])
    torch.testing.assert_close(depth_to_space(folded, patch), x)


@pytest.mark.parametrize("dims, spatial", [(1, (30,)), (2, (12, 10)), (3, (12, 10, 9))])
def test_patched_unet_keeps_the_contract_on_fewer_positions(dims, spatial):
    """``patch_size=2``: the output has the input's shape (sizes padded to multiples of
    ``2 * 2**(levels-1)``), samples of a batch stay independent, and the first level runs on
    ``2**dims`` fewer positions than the unpatched network's."""
    net = randomize_zero_layers(tiny_unet(dims, 2, patch_size=2, coordinates=True))
    x = torch.randn(3, 2, *spatial)
    c_noise, cond = torch.randn(3), conds(3)
    y = net(x, c_noise, cond)
    assert y.shape == x.shape and torch.isfinite(y).all()
    torch.testing.assert_close(net(x[1:2], c_noise[1:2], cond[1:2]), y[1:2], atol=1e-4, rtol=1e-4)
    seen = []
    hook = net.down[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[2:]))
    net(x, c_noise, cond)
    hook.remove()
    padded = [n + (-n) % 8 for n in spatial]
    assert tuple(seen[0]) == tuple(n // 2 for n in padded)
    assert net.conv_in.in_channels == (2 + dims) * 2 ** dims and net.conv_out.out_channels == 2 * 2 ** dims


def test_patch_size_must_be_a_positive_integer():
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="patch_size"):
            tiny_unet(2, patch_size=bad)


@pytest.mark.parametrize("dims, spatial, patch", [(1, (16,), 1), (2, (8, 12), 1), (2, (16, 8), 2), (3, (8, 4, 8), 1)])
def test_periodic_unet_commutes_with_shifts_of_the_box(dims, spatial, patch):
    """``boundary="periodic"``: shifting the input around the torus by a multiple of the
    coarsest stride (``patch * 2**(levels-1)``) shifts the output the same way, exactly; with
    the other boundaries the network sees the box's faces and does not."""
    x = torch.randn(2, 1, *spatial)
    c_noise, cond = torch.randn(2), conds(2)
    stride = patch * 4
    shifts, axes = tuple(stride * (i + 1) for i in range(dims)), tuple(range(2, 2 + dims))
    coarsest = min(spatial) // stride
    for boundary in ("periodic", "zeros", "replicate", "reflect"):
        if boundary == "reflect" and coarsest < 2:
            with pytest.raises(ValueError, match="boundary 'reflect': spatial shape .* single position"):
                tiny_unet(dims, patch_size=patch, boundary=boundary)(x, c_noise, cond)
            continue
        net = randomize_zero_layers(tiny_unet(dims, patch_size=patch, boundary=boundary))
        with torch.no_grad():
            moved = net(torch.roll(x, shifts, axes), c_noise, cond)
            expected = torch.roll(net(x, c_noise, cond), shifts, axes)
        if boundary == "periodic":
            torch.testing.assert_close(moved, expected, atol=1e-5, rtol=1e-5)
        else:
            assert (moved - expected).abs().max() > 1e-3, boundary


def test_replicate_boundary_sees_a_constant_field_as_unbounded():
    """A constant input is the same beyond every face with ``boundary="replicate"`` (and
    periodic), so the first convolution's output is constant; zero padding makes it differ at the faces."""
    x = torch.full((1, 1, 8, 8), 3.0)
    for boundary, constant in (("replicate", True), ("periodic", True), ("zeros", False)):
        net = randomize_zero_layers(tiny_unet(2, boundary=boundary))
        h = net.conv_in(x)
        assert bool(torch.allclose(h, h[..., 3:4, 3:4].expand_as(h), atol=1e-5)) is constant, boundary


def test_periodic_unet_refuses_sizes_it_would_have_to_pad():
    net = tiny_unet(2, boundary="periodic")
    with pytest.raises(ValueError, match=r"boundary 'periodic': spatial shape \(10, 8\) is not a multiple of 4"):
        net(torch.randn(1, 1, 10, 8), torch.randn(1), conds(1))
    with pytest.raises(ValueError, match="boundary 'walls': valid boundaries are"):
        tiny_unet(2, boundary="walls")
