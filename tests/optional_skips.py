"""The tests a run skipped because an optional package is missing, listed at the end of every run.

A test of an optional feature skips when its package is absent (``pytest.importorskip``, or
:func:`skip_if_optional_missing` around code that reaches the package indirectly). After the
run one line names those packages and how many tests each cost. With ``GKL_REQUIRE_OPTIONAL=1``
(``.ci/run`` sets it: CI installs ``gkl[all]``) a skip for a package of :data:`EXPECTED` fails the run,
so CI never passes while skipping the tests of a feature it claims to check.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

#: the optional packages CI installs (``pip install -e ".[all]"``), by top-level module, with their extra
EXPECTED = {
    "open_clip": "clip",
    "timm": "clip",
    "webdataset": "webdataset",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "submitit": "slurm",
    "scipy": "bundled (scikit-learn)",
    "transformers": "llm",
    "tokenizers": "llm",
    "accelerate": "llm",
    "sklearn": "bundled",
    "mnist1d": "bundled",
    "braceexpand": "webdataset",
    "matplotlib": "logging",
    "tensorboard": "logging",
    "pyautoattack": "eval",
}
REQUIRE_ENV = "GKL_REQUIRE_OPTIONAL"
_MISSING = re.compile(r"could not import '([\w.]+)'")


def _missing_optional_module(err: BaseException) -> str | None:
    """The top-level optional module (one of :data:`EXPECTED`) whose import failed somewhere in the
    chain of ``err`` (``raise ... from`` and exceptions raised while handling), or None."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ImportError) and current.name and current.name.split(".")[0] in EXPECTED:
            return current.name.split(".")[0]
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def skip_if_optional_missing() -> Iterator[None]:
    """Around code that reaches an optional package only indirectly (a recipe of an optional feature):
    an import of a package of :data:`EXPECTED` that fails skips the test through ``pytest.importorskip``
    (so the end-of-run line lists it and ``GKL_REQUIRE_OPTIONAL=1`` fails the run); any other error, and
    an import error of a package that is installed (a broken import, not a missing extra), propagates."""
    try:
        yield
    except Exception as err:
        module = _missing_optional_module(err)
        if module is not None:
            pytest.importorskip(module)  # skips only when the package really cannot be imported
        raise


def missing_packages(reports) -> Counter:
    """Top-level modules whose import failed, counted over the skip reports (tests or whole modules)."""
    counts: Counter = Counter()
    for report in reports:
        longrepr = getattr(report, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        found = _MISSING.search(reason)
        if found:
            counts[found.group(1).split(".")[0]] += 1
    return counts


def _line(counts: Counter) -> str:
    if not counts:
        return "optional-dependency skips: none"
    listed = ", ".join(f"{name} ({n} skip{'s' if n > 1 else ''})" for name, n in sorted(counts.items()))
    return f"optional-dependency skips: {listed}"


def _skipped_packages(config: pytest.Config) -> tuple[Counter, list[str]]:
    """(missing packages by skip count, those of :data:`EXPECTED`), from the controller's reports."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    counts = missing_packages(reporter.stats.get("skipped", [])) if reporter is not None else Counter()
    return counts, sorted(name for name in counts if name in EXPECTED)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller sees every report
        return
    _, required = _skipped_packages(session.config)
    if os.environ.get(REQUIRE_ENV) == "1" and required:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    counts, required = _skipped_packages(config)
    terminalreporter.write_line(_line(counts))
    if os.environ.get(REQUIRE_ENV) == "1" and required:
        extras = ", ".join(f"{name} (gkl[{EXPECTED[name]}])" for name in required)
        terminalreporter.write_line(f"{REQUIRE_ENV}=1: tests skipped for missing packages this run must have: {extras}")
