"""The suite's time budget relies on ``xdist_group``: tests that share an expensive session fixture run
on one worker, so the fixture is built once. pytest 9.2 keeps a node's id where pytest-xdist 3.8 does
not set the group suffix, and every group then silently splits over the workers (the fixtures are built
once per worker); pyproject.toml pins pytest below 9.2 for that reason. This test runs a tiny suite
under ``-n 2 --dist loadgroup`` and fails if a group is split."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

GROUPED = """
import time
import pytest

@pytest.mark.xdist_group("together")
@pytest.mark.parametrize("i", range(3))
def test_grouped(i):
    time.sleep(0.3)

def test_free():
    time.sleep(0.3)
"""


def test_tests_of_one_xdist_group_run_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_other.py").write_text("import time\n\ndef test_other():\n    time.sleep(0.3)\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    workers = re.findall(r"\[(gw\d)\] .*PASSED test_grouped.py::test_grouped\[\d\]", done.stdout)
    assert len(workers) == 3, done.stdout[-2000:]
    assert len(set(workers)) == 1, f"the group ran on {sorted(set(workers))}: xdist_group is not honoured"
