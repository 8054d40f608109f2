"""Invertible, serializable transforms: property tests of inverse(forward(x)) == x."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rho_workflow.data.transforms import (Affine, Chain, Identity, Log, MinMax, PerChannel,
                                          transform_from_dict)

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)
positive = st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False, width=64)
fields = hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.just(2), st.integers(1, 4)),
                    elements=finite)
positive_fields = hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.just(2),
                                                   st.integers(1, 4)), elements=positive)
scales = st.floats(1e-3, 1e3)
shifts = st.floats(-1e3, 1e3)


def roundtrip(t, x, rtol=1e-9, atol=1e-6):
    again = transform_from_dict(json.loads(json.dumps(t.to_dict())))
    y = t.forward(x)
    np.testing.assert_allclose(again.forward(x), y)
    np.testing.assert_allclose(t.inverse(y), x, rtol=rtol, atol=atol)
    np.testing.assert_allclose(again.inverse(y), x, rtol=rtol, atol=atol)


@settings(max_examples=40, deadline=None)
@given(x=fields, shift=st.tuples(shifts, shifts), scale=st.tuples(scales, scales))
def test_affine(x, shift, scale):
    roundtrip(Affine(shift=list(shift), scale=list(scale), axis=1), x)


@settings(max_examples=40, deadline=None)
@given(x=fields, lo=shifts, width=st.floats(1e-2, 1e4))
def test_minmax(x, lo, width):
    roundtrip(MinMax(lo, lo + width), x)


@settings(max_examples=40, deadline=None)
@given(x=positive_fields, floor=st.floats(1e-12, 1e-7))
def test_log_above_floor(x, floor):
    roundtrip(Log(floor), x, rtol=1e-12, atol=0.0)


@settings(max_examples=30, deadline=None)
@given(x=positive_fields)
def test_chain_and_per_channel(x):
    fitted = Affine.fit(np.log(x), axis=1)
    roundtrip(Chain([Log(1e-9), fitted]), x, rtol=1e-9, atol=0)
    per = PerChannel([Chain([Log(1e-9), MinMax(-20, 20)]), Chain([Affine([1.0], [2.0])])])
    roundtrip(per, x, rtol=1e-9, atol=1e-9)
    roundtrip(Identity(), x)


def test_log_floor_clips_and_affine_fit_standardizes():
    y = Log(1e-3).forward(np.array([0.0, -1.0, 1.0]))
    np.testing.assert_allclose(y, [np.log(1e-3), np.log(1e-3), 0.0])
    x = np.random.default_rng(0).normal(5.0, 3.0, size=(100, 2, 8))
    z = Affine.fit(x).forward(x)
    np.testing.assert_allclose(z.mean(axis=(0, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=(0, 2)), 1, atol=1e-12)


def test_invalid_transforms():
    with pytest.raises(ValueError, match="floor"):
        Log(0.0)
    with pytest.raises(ValueError, match="scale"):
        Affine([0.0], [0.0])
    with pytest.raises(ValueError, match="hi > lo"):
        MinMax(1.0, 1.0)
    with pytest.raises(ValueError, match="valid kinds"):
        transform_from_dict({"kind": "sqrt"})
    with pytest.raises(ValueError, match="channels"):
        PerChannel([Identity()]).forward(np.zeros((2, 3, 4)))


@settings(max_examples=40, deadline=None)
@given(data=hnp.arrays(np.float64, st.integers(2, 60), elements=st.floats(-1e3, 1e3)),
       cuts=st.lists(st.integers(0, 60), max_size=4), offset=st.sampled_from([0.0, 1e6]))
def test_pairwise_moments_match_numpy(data, cuts, offset):
    """Normalization statistics merged from blocks equal those of the whole array."""
    from rho_workflow.data.validate import _moments, combine_stats

    data = data + offset
    bounds = sorted({0, len(data), *[c for c in cuts if c < len(data)]})
    parts = [_moments(data[a:b].copy()) for a, b in zip(bounds, bounds[1:])]
    merged = combine_stats(parts)
    assert merged["count"] == len(data)
    assert merged["mean"] == pytest.approx(data.mean(), rel=1e-12, abs=1e-9)
    assert merged["std"] == pytest.approx(data.std(), rel=1e-6, abs=1e-6)
    assert merged["min"] == data.min() and merged["max"] == data.max()
