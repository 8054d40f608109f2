"""The project's pint registry: CF/UDUNITS spellings, conversions, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rho_workflow.data.units import (UNITS, UnitsError, compatible, convert, format_units,
                                     is_dimensionless, linear_conversion, parse_units)

SPELLINGS = ["K", "degree_C", "degC", "m s-1", "kg m-3", "W m-2", "1", "percent", "hPa", "Mpc",
             "megaparsec", "Mparsec", "Msun", "km s-1", "cm-1", "psu", "1e-3", "degrees_north",
             "kg m-2 s-1", "m2 s-2", "Mparsec2", "km s-1 Mpc-1", "Jy", "%", "m.s-1"]


@pytest.mark.parametrize("text", SPELLINGS)
def test_cf_spellings_parse(text):
    parsed = parse_units(text)
    assert parsed.text == text
    assert parse_units(format_units(text)).dimensionality == parsed.dimensionality


@pytest.mark.parametrize("source,target,value,expected", [
    ("degC", "K", 20.0, 293.15), ("degree_C", "K", -273.15, 0.0), ("K", "degC", 0.0, -273.15),
    ("hPa", "Pa", 1013.25, 101325.0), ("percent", "1", 35.0, 0.35), ("1e-3", "1", 35.0, 0.035),
    ("km s-1", "m s-1", 1.0, 1000.0), ("megaparsec", "Mpc", 3.0, 3.0),
    ("Mparsec", "kparsec", 1.0, 1000.0), ("Msun", "kg", 1.0, 1.98847e30),
    ("g cm-3", "kg m-3", 1.0, 1000.0), ("cm-1", "m-1", 1.0, 100.0),
])
def test_conversions(source, target, value, expected):
    assert convert(value, source, target) == pytest.approx(expected, rel=1e-12, abs=1e-9)


def test_identity_conversion_returns_input_object():
    x = np.arange(3.0)
    assert convert(x, "K", "K") is x
    assert linear_conversion("Mpc", "megaparsec") == (1.0, 0.0)


def test_incompatible_units_error_names_where_and_rule():
    with pytest.raises(UnitsError) as err:
        linear_conversion("K", "m s-1", where="file run1.nc, variable 'tas'")
    message = str(err.value)
    assert "run1.nc" in message and "'tas'" in message and "'K'" in message
    assert "rule:" in message and "fix:" in message
    assert "[temperature]" in err.value.reason
    assert not compatible("K", "m") and compatible("degC", "K")


@pytest.mark.parametrize("bad", ["blargs m-2", "kg m-", "", 3.0, "days since 2000-01-01"])
def test_bad_unit_strings(bad):
    if bad == "":
        assert is_dimensionless(bad)
        return
    with pytest.raises(UnitsError) as err:
        parse_units(bad, where="data.units.rho")
    assert "data.units.rho" in str(err.value)


def test_one_registry():
    from cf_xarray.units import units as cf_units

    assert UNITS is cf_units
    assert UNITS.Quantity(1, "Msun").to("kg").magnitude == pytest.approx(1.98847e30)


LINEAR_PAIRS = [("degC", "K"), ("K", "degF"), ("hPa", "Pa"), ("percent", "1e-3"),
                ("km s-1", "m s-1"), ("Mparsec", "m"), ("kg m-3", "g cm-3")]


@settings(max_examples=60, deadline=None)
@given(pair=st.sampled_from(LINEAR_PAIRS),
       x=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
def test_conversion_roundtrip_and_agrees_with_pint(pair, x):
    source, target = pair
    y = convert(x, source, target)
    assert convert(y, target, source) == pytest.approx(x, rel=1e-9, abs=1e-6)
    src, dst = parse_units(source), parse_units(target)
    reference = UNITS.Quantity(x * src.scale, src.unit).to(dst.unit).magnitude / dst.scale
    assert y == pytest.approx(reference, rel=1e-9, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(x=st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=20))
def test_conversion_of_arrays_matches_scalars(x):
    arr = np.asarray(x)
    out = convert(arr, "degC", "K")
    np.testing.assert_allclose(out, [convert(v, "degC", "K") for v in x])
