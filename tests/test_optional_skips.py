"""The end-of-run line of tests skipped for a missing optional package, and CI failing on one
(tests/optional_skips.py; .ci/run sets GKL_REQUIRE_OPTIONAL=1): pytest run on a small test file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import TESTS_DIR

CASES = """
import sys
import pytest

def test_runs():
    assert True

def test_needs_submitit():
    sys.modules["submitit"] = None  # as if the slurm extra were not installed
    pytest.importorskip("submitit")

def test_needs_a_package_ci_does_not_promise():
    pytest.importorskip("gkl_no_such_package.sub")
"""


def run_pytest(folder: Path, *args: str, require: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    env.pop("GKL_REQUIRE_OPTIONAL", None)
    if require:
        env["GKL_REQUIRE_OPTIONAL"] = "1"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "optional_skips", "-p", "no:cacheprovider", *args]
    return subprocess.run(command + [str(folder)], cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_skips_for_missing_packages_are_listed_and_fail_ci_only_for_expected_ones(tmp_path: Path) -> None:
    (tmp_path / "test_cases.py").write_text(CASES)
    listed = "optional-dependency skips: gkl_no_such_package (1 skip), submitit (1 skip)"

    local = run_pytest(tmp_path, "-n", "0", require=False)
    assert local.returncode == 0, local.stdout[-2000:]
    assert listed in local.stdout and "GKL_REQUIRE_OPTIONAL" not in local.stdout

    ci = run_pytest(tmp_path, "-n", "2", require=True)  # as make test runs it: the xdist controller decides
    assert ci.returncode == 1, ci.stdout[-2000:]
    assert listed in ci.stdout
    assert "must have: submitit (gkl[slurm])" in ci.stdout and "gkl_no_such_package (gkl" not in ci.stdout
    assert "1 passed, 2 skipped" in ci.stdout


INDIRECT = """
import sys
import types
import pytest
from optional_skips import skip_if_optional_missing

def _feature():  # library code reaching an optional package from inside
    try:
        import submitit  # noqa: F401
    except ImportError as err:
        raise RuntimeError("the feature needs gkl[slurm]") from err

def test_feature_of_a_missing_package():
    sys.modules["submitit"] = None  # as if the slurm extra were not installed
    with skip_if_optional_missing():
        _feature()

def test_broken_import_of_an_installed_expected_package():
    sys.modules["wandb"] = types.ModuleType("wandb")  # installed, but a name in it is gone
    with skip_if_optional_missing():
        raise ImportError("cannot import name 'gone' from 'wandb'", name="wandb")

def test_other_errors_propagate():
    with skip_if_optional_missing():
        raise KeyError("model")
"""


def test_an_indirect_import_of_a_missing_package_skips_and_other_errors_fail(tmp_path: Path) -> None:
    (tmp_path / "test_indirect.py").write_text(INDIRECT)
    run = run_pytest(tmp_path, "-n", "0", require=False)
    assert run.returncode == 1, run.stdout[-2000:]
    assert "optional-dependency skips: submitit (1 skip)" in run.stdout
    assert "FAILED test_indirect.py::test_broken_import_of_an_installed_expected_package" in run.stdout
    assert "FAILED test_indirect.py::test_other_errors_propagate" in run.stdout
    assert "2 failed, 1 skipped" in run.stdout
