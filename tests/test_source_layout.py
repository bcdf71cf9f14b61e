"""Small modules: no source module of gkl is over 500 lines (docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "gkl"
MAX_LINES = 500


def test_no_source_module_is_over_500_lines() -> None:
    sizes = {
        path.relative_to(SRC).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in SRC.rglob("*.py")
    }
    assert len(sizes) > 50  # the scan sees the package
    too_long = {name: n for name, n in sorted(sizes.items()) if n > MAX_LINES}
    assert not too_long, f"split these modules by job (max {MAX_LINES} lines): {too_long}"
