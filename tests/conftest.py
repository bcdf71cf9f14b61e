"""Session-wide test set-up: torch threads per pytest-xdist worker, and the shared trained models.

Threads: under ``pytest -n N`` (``make test``) each worker gets ``cpu_count // N`` threads (at least
one), unless ``OMP_NUM_THREADS`` is set, which then rules; the same count is exported to the
subprocesses the tests start. A test that changes ``torch.set_num_threads`` gets it restored after.

Order: the modules with a slow or grouped test run first (:func:`pytest_collection_modifyitems`).

The trained digits models are session fixtures: each is trained once per process, and tests that
would change one (train mode, BN statistics) work on a copy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402

# the end-of-run line of tests skipped for a missing optional package (CI fails on one: tests/optional_skips.py)
pytest_plugins = ["optional_skips"]


def pytest_configure(config: pytest.Config) -> None:
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules with a ``slow`` or ``xdist_group`` test first (each module kept whole, in file order).

    ``--dist loadgroup`` hands out the groups first (most tests first) and then every other test in this
    order: the slow ungrouped tests (a run through the CLI) start early, and the many short ones after
    them even out the workers' ends (the suite's wall time is the later worker's)."""
    heavy = {
        item.nodeid.split("::")[0]
        for item in items
        if item.get_closest_marker("slow") is not None or item.get_closest_marker("xdist_group") is not None
    }
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in heavy)  # stable: file order otherwise


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits01_splits(tmp_path_factory: pytest.TempPathFactory):
    """The bundled digits in [0, 1]: ((train images, labels), (test images, labels))."""
    root = tmp_path_factory.mktemp("digits01")
    return helpers.digits01(root, True), helpers.digits01(root, False)


@pytest.fixture(scope="session")
def standard_digits_cnn(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    """:class:`helpers.SmallCNN` trained with cross-entropy (seed 0, 6 epochs), in eval mode.

    Shared by the session: never change it in place (``copy.deepcopy`` it first)."""
    from gkl.objectives.supervised import SupervisedObjective

    model, _ = helpers.train_digits_cnn(SupervisedObjective(), tmp_path_factory.mktemp("standard_digits_cnn"))
    return model
