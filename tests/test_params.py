"""Parameter spaces: validation messages name the parameter, the value and the rule."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rho_workflow.params import Parameter, ParameterError, ParamSpace

SPACE = ParamSpace([Parameter("index", "1", low=-3.0, high=-1.0),
                    Parameter("amplitude", "Mpc2", low=0.5, high=2.0),
                    Parameter("scenario", "1", kind="categorical", values=("ssp126", "ssp585"))])


@given(st.floats(-3, -1), st.floats(0.5, 2.0), st.sampled_from(["ssp126", "ssp585"]))
def test_round_trip(index, amplitude, scenario):
    point = {"index": index, "amplitude": amplitude, "scenario": scenario}
    assert SPACE.to_dicts(SPACE.to_array(point)) == [point]


def test_all_errors_reported_together():
    with pytest.raises(ParameterError) as info:
        SPACE.to_array([{"index": -5.0, "amplitude": 1.0, "scenario": "ssp245"}, {"index": -2.0}])
    msg = str(info.value)
    assert "point 0: continuous parameter 'index': value -5.0 1 is outside the declared range [-3.0, -1.0]" in msg
    assert "point 0: categorical parameter 'scenario': value 'ssp245' was never seen" in msg
    assert "point 1: parameter names must be exactly" in msg and "missing ['amplitude', 'scenario']" in msg


def test_normalize_and_serialize():
    arr = SPACE.to_array({"index": -2.0, "amplitude": 2.0, "scenario": "ssp585"})
    np.testing.assert_allclose(SPACE.normalize(arr), [[0.5, 1.0, 1.0]])
    assert ParamSpace.from_dict(SPACE.to_dict()) == SPACE


def test_declaration_errors():
    with pytest.raises(ParameterError, match="needs a declared range"):
        Parameter("T", "K")
    with pytest.raises(ParameterError, match="kind 'ordinal' is not one of"):
        Parameter("T", "K", kind="ordinal", low=0, high=1)
    with pytest.raises(ParameterError, match="duplicate parameter names"):
        ParamSpace([Parameter("a", low=0, high=1), Parameter("a", low=0, high=1)])


def test_infer_from_points():
    space = ParamSpace.infer([{"T": 250.0, "model": "A"}, {"T": 300.0, "model": "B"}], units={"T": "K"})
    assert space["T"].low == 250.0 and space["T"].units == "K"
    assert space["model"].values == ("A", "B")
