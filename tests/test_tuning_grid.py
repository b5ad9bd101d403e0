"""Curvature-centred tuning grids on `smoke`: the suite keys."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import quick_smoke_suite
from initbench.suite import SuiteError, builtin_suite_dir, load_suite


def _with_tuning(source, path, tuning):
    spec = yaml.safe_load(source.read_text())
    spec["tuning"] = tuning
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("tuning, fragment", [
    ({"grid": "centred", "points": 3}, "'tuning.grid' must be one of fixed, curvature-centred"),
    ({"grid": "curvature-centred"}, "'tuning.points' is required"),
    ({"grid": "curvature-centred", "points": 1}, "'tuning.points' must be at least 2"),
    ({"grid": "curvature-centred", "points": 3, "factor": 1.0}, "'tuning.factor'"),
    ({"grid": "curvature-centred", "points": 3, "lr_grid": [0.01, 0.1]}, "'tuning.lr_grid' does not go with"),
    ({"lr_grid": [0.01, 0.1], "points": 3}, "'tuning.points' applies to grid: curvature-centred only"),
    ({"grid": "fixed", "factor": 3}, "'tuning.factor' applies to grid: curvature-centred only"),
    ({"grid": "curvature-centred", "points": "five"}, "'tuning.points' must be of type int"),
])
def test_curvature_centred_keys_are_validated(tmp_path, tuning, fragment):
    path = _with_tuning(quick_smoke_suite(tmp_path), tmp_path / "bad.yaml", tuning)
    with pytest.raises(SuiteError, match=re.escape(str(path)) + ".*" + re.escape(fragment)):
        load_suite(str(path))


def test_the_grid_kind_is_not_part_of_the_spec_hash(tmp_path, smoke_suite):
    centred = load_suite(str(_with_tuning(builtin_suite_dir() / "smoke.yaml", tmp_path / "c.yaml",
                                          {"grid": "curvature-centred", "points": 4, "factor": 2})))
    assert centred.tuning.curvature_centred and centred.tuning.lr_grid == []
    assert centred.spec_hash == smoke_suite.spec_hash == load_suite("smoke").spec_hash
