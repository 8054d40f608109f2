"""Bad input: each case a clear error naming file, variable, value and rule; nothing written."""

from __future__ import annotations

import shutil

import netCDF4
import numpy as np
import pytest

from rho_workflow.data.config import ConfigError, DataConfig
from rho_workflow.data.make_data import write_sweep
from rho_workflow.data.store import preprocess
from rho_workflow.data.validate import DataValidationError

BASE = {"variables": ["density_contrast"], "spatial_dims": ["x", "y"], "units": "1",
        "params": {"index": {"source": "coordinate"},
                   "amplitude": {"source": "coordinate", "units": "Mparsec2"}}}


@pytest.fixture(scope="module")
def clean_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean")
    write_sweep("gaussian-field", folder, runs=4, seed=7, size=6)
    return folder


@pytest.fixture
def sweep(clean_sweep, tmp_path):
    folder = tmp_path / "sweep"
    shutil.copytree(clean_sweep, folder)
    return folder


def files(folder):
    return sorted(folder.glob("*.nc"))


def run(folder, tmp_path, **overrides):
    """Preprocess ``folder``; return the error message; check that nothing was written."""
    config = DataConfig.from_dict({**BASE, "files": str(folder / "*.nc"), **overrides})
    target = tmp_path / "out" / "store.zarr"
    with pytest.raises(DataValidationError) as err:
        preprocess(config, target, progress=False)
    assert not target.exists()
    assert not list(target.parent.glob(".store.zarr.tmp-*")) if target.parent.exists() else True
    return str(err.value), err.value.problems


def edit(path, fn):
    with netCDF4.Dataset(path, "a") as nc:
        fn(nc)


def test_clean_sweep_passes(sweep, tmp_path):
    info = preprocess(DataConfig.from_dict({**BASE, "files": str(sweep / "*.nc")}),
                      tmp_path / "store.zarr", progress=False)
    assert info.n_samples == 4


def test_missing_file_and_empty_glob(sweep, tmp_path):
    message, problems = run(sweep, tmp_path, files=[str(sweep / "nope.nc"),
                                                   str(tmp_path / "empty" / "*.nc")])
    assert len(problems) == 2
    assert "nope.nc" in message and "every listed file must exist" in message
    assert "empty/*.nc" in message and "a glob must match at least one file" in message


def test_truncated_and_unreadable_files(sweep, tmp_path):
    first, second = files(sweep)[:2]
    first.write_bytes(first.read_bytes()[:200])
    second.write_text("not a netCDF file")
    message, problems = run(sweep, tmp_path)
    assert len(problems) == 2
    assert first.name in message and second.name in message
    assert "readable netCDF" in message and "truncated" in message


def test_variable_missing(sweep, tmp_path):
    message, _ = run(sweep, tmp_path, variables=["temperature"], units="K")
    assert "variable 'temperature'" in message and "must exist" in message
    assert "density_contrast" in message  # lists what the file has


def test_units_attribute_missing(sweep, tmp_path):
    target = files(sweep)[1]
    edit(target, lambda nc: nc["density_contrast"].delncattr("units"))
    message, problems = run(sweep, tmp_path)
    assert len(problems) == 1 and problems[0].file == str(target)
    assert "'units' attribute" in message and "ncatted" in message


def test_unknown_unit_string(sweep, tmp_path):
    edit(files(sweep)[0], lambda nc: nc["density_contrast"].setncattr("units", "blarg m-3"))
    message, problems = run(sweep, tmp_path)
    assert problems[0].value == "blarg m-3" and "unknown units" in message


def test_units_incompatible_with_canonical(sweep, tmp_path):
    edit(files(sweep)[2], lambda nc: nc["density_contrast"].setncattr("units", "K"))
    message, _ = run(sweep, tmp_path)
    assert "'K'" in message and "cannot be converted" in message and "'1'" in message


def test_parameter_not_found(sweep, tmp_path):
    message, problems = run(sweep, tmp_path, params={
        "T": {"source": "global_attribute", "name": "temperature", "units": "K"}})
    assert len(problems) == 4
    assert "parameter attribute 'temperature'" in message and "data.params.T" in message


def test_parameter_units_cannot_convert(sweep, tmp_path):
    edit(files(sweep)[3], lambda nc: nc["amplitude"].setncattr("units", "s"))
    message, problems = run(sweep, tmp_path)
    assert len(problems) == 1 and problems[0].file == str(files(sweep)[3])
    assert "data.params.amplitude" in message and "'s'" in message
    assert "cannot be converted" in message


def test_grids_differ(sweep, tmp_path):
    edit(files(sweep)[1], lambda nc: nc["x"].__setitem__(slice(None), nc["x"][:] * 2))
    message, _ = run(sweep, tmp_path)
    assert "share one grid" in message and "'x'" in message and files(sweep)[0].name in message


def test_grid_shapes_differ(sweep, tmp_path):
    write_sweep("gaussian-field", tmp_path / "other", runs=1, seed=99, size=8)
    shutil.copy(files(tmp_path / "other")[0], sweep / "zz_bigger.nc")
    message, _ = run(sweep, tmp_path)
    assert "zz_bigger.nc" in message and "{'x': 8, 'y': 8}" in message


def test_wrong_number_of_spatial_dims(sweep, tmp_path):
    message, _ = run(sweep, tmp_path, spatial_dims=["x", "y", "z"])
    assert "3 spatial dims" in message and "missing ['z']" in message
    message, _ = run(sweep, tmp_path, spatial_dims=["x"])
    assert "undeclared ['y']" in message and "sample_dims" in message


def test_nan_and_inf_outside_mask(sweep, tmp_path):
    def poison(value):
        return lambda nc: nc["density_contrast"].__setitem__((1, 2), value)

    edit(files(sweep)[0], poison(np.nan))
    edit(files(sweep)[2], poison(np.inf))
    message, problems = run(sweep, tmp_path)
    assert len(problems) == 2
    assert files(sweep)[0].name in message and files(sweep)[2].name in message
    assert "1 NaN/inf point(s)" in message and "missing: fixed-mask" in message


def test_duplicate_runs(sweep, tmp_path):
    shutil.copy(files(sweep)[0], sweep / "zz_copy.nc")
    message, problems = run(sweep, tmp_path)
    assert len(problems) == 1 and problems[0].file.endswith("zz_copy.nc")
    assert files(sweep)[0].name in message and "allow_duplicates" in message
    message, problems = run(sweep, tmp_path, files=[str(files(sweep)[0]), str(sweep / "*.nc")])
    assert "appear once" in message


def test_all_problems_are_collected(sweep, tmp_path):
    edit(files(sweep)[0], lambda nc: nc["density_contrast"].setncattr("units", "K"))
    edit(files(sweep)[1], lambda nc: nc["amplitude"].delncattr("units"))
    files(sweep)[2].write_bytes(b"\x89HDF\r\n")
    _, problems = run(sweep, tmp_path)
    assert [p.file for p in problems] == [str(f) for f in files(sweep)[:3]]
    assert all(p.rule and p.fix for p in problems)


def test_config_errors_name_key_paths():
    with pytest.raises(ConfigError) as err:
        DataConfig.from_dict({"files": "a/*.nc", "variables": ["rho"], "spatial_dims": ["x"],
                              "units": {"rho": "parsnip"}, "colour": 1,
                              "params": {"T": {"source": "header", "units": "K"},
                                         "p": {"source": "filename"}},
                              "split": {"held_out": 1.5, "by": ["nope"]}, "crop": {"x": [4, 2]}})
    problems = err.value.problems
    text = "\n".join(problems)
    for key in ("data.units.rho", "data: unknown keys ['colour']", "data.params.T.source", "data.params.p.pattern",
                "data.split.held_out", "data.split.by", "data.crop.x"):
        assert key in text
    assert "'parsnip'" in text and "'header'" in text


def test_config_needs_files_and_variables():
    with pytest.raises(ConfigError) as err:
        DataConfig.from_dict({"files": [], "variables": [], "spatial_dims": ["x"], "units": "1"})
    assert "data.files" in str(err.value) and "data.variables" in str(err.value)


def test_parameter_from_a_missing_variable(sweep, tmp_path):
    message, problems = run(sweep, tmp_path, params={
        "index": {"source": "variable_attribute", "variable": "ghost"}})
    assert len(problems) == 4 and "data.params.index.variable 'ghost'" in message


def test_select_must_be_labels_or_ranges():
    with pytest.raises(ConfigError, match=r"data.select.depth: unknown keys \['step'\]"):
        DataConfig.from_dict({**BASE, "files": "a.nc", "select": {"depth": {"step": 2}}})
