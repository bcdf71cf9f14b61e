"""A study shrunk from the command line: ``gkl sweep STUDY --only A,B --seeds 2 key=value ...``.

``--only`` keeps the named settings and the teachers they depend on (transitively), ``--seeds``
replaces the study's ``seeds:`` (a setting that fixes its own ``seeds:``, e.g. a shared teacher's
``[0]``, keeps them), and ``key=value`` overrides are applied to every run after the study's own.
A shrunk study writes to a folder of its own, :func:`subset_out_dir`, so its runs never mix
with the full study's.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gkl.utils.errors import InputError

__all__ = ["parse_only", "parse_seeds", "check_extra_overrides", "select_settings", "subset_out_dir"]

#: run keys a command-line override may not set: the study sets them per run
RESERVED_OVERRIDES = {"train.seed": "use --seeds", "name": "the study names its runs", "out_dir": "use --out"}


def parse_only(text: str | None) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]``; None stays None (every setting)."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InputError(f"--only: expected setting names separated by commas, got {text!r}")
    return list(dict.fromkeys(names))


def parse_seeds(text: str | None) -> list[int] | None:
    """``"3"`` -> seeds 0, 1, 2; ``"0,4,7"`` -> those seeds; None stays None (the study's seeds)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--seeds: expected a number of seeds N or a list a,b,c of seeds, got {text!r}") from None
    if len(values) == 1 and "," not in text:
        if values[0] < 1:
            raise InputError(f"--seeds: expected a number of seeds >= 1, got {values[0]}")
        return list(range(values[0]))
    if any(v < 0 for v in values) or len(set(values)) != len(values):
        raise InputError(f"--seeds: expected distinct seeds >= 0, got {text!r}")
    return values


def check_extra_overrides(overrides: Sequence[str]) -> list[str]:
    """Command-line ``key=value`` overrides, checked for form and for the keys the study sets per run."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if "=" not in item or not key:
            raise InputError(f"override {item!r}: expected key=value")
        if key in RESERVED_OVERRIDES:
            raise InputError(f"override {item!r}: the study sets {key} for each run ({RESERVED_OVERRIDES[key]})")
    return list(overrides)


def select_settings(settings: Mapping[str, Mapping[str, Any]], only: Sequence[str] | None, where: str) -> set[str]:
    """The settings to run: ``only`` and every teacher they depend on (all settings when ``only`` is None)."""
    if only is None:
        return set(settings)
    chosen: set[str] = set()
    for name in only:
        if name not in settings:
            close = difflib.get_close_matches(name, list(settings), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; settings: {', '.join(settings)}"
            raise InputError(f"--only: {where} has no setting named {name!r}{hint}")
        link: str | None = name
        while link is not None and link not in chosen:  # the chain of teachers (cycles are refused before)
            chosen.add(link)
            link = settings[link].get("teacher")
    return chosen


def subset_out_dir(out_dir: Path, subset: Mapping[str, Any]) -> Path:
    """The folder of a shrunk study: ``<out_dir>--only-A+B--seeds-0+1--set-<hash>`` (the parts present).

    ``only`` lists the settings asked for (their teachers are implied), ``seeds`` the seeds,
    ``set-<8 hex digits>`` the first digits of the SHA-1 of the overrides (in order, one per line):
    the same command line always gives the same folder, so running it again continues it.
    """
    parts = []
    if subset.get("only"):
        names = "+".join(subset["only"])
        if len(names) > 60:  # many settings: a digest keeps the name short and still unique
            names = f"{len(subset['only'])}settings-" + hashlib.sha1(names.encode()).hexdigest()[:8]
        parts.append(f"only-{names}")
    if subset.get("seeds") is not None:
        parts.append("seeds-" + "+".join(str(s) for s in subset["seeds"]))
    if subset.get("overrides"):
        digest = hashlib.sha1("\n".join(subset["overrides"]).encode()).hexdigest()[:8]
        parts.append(f"set-{digest}")
    if not parts:
        return out_dir
    return out_dir.with_name(out_dir.name + "--" + "--".join(parts))


def describe_subset(subset: Mapping[str, Any]) -> str:
    """One phrase for messages: ``only kd, gkl (and their teachers); seeds 0, 1; overrides train.epochs=2``."""
    said = []
    if subset.get("only"):
        said.append("only " + ", ".join(subset["only"]) + " (and their teachers)")
    if subset.get("seeds") is not None:
        said.append("seeds " + ", ".join(str(s) for s in subset["seeds"]))
    if subset.get("overrides"):
        said.append("overrides " + " ".join(subset["overrides"]))
    return "; ".join(said) if said else "the whole study"


def subset_record(only: Sequence[str] | None, seeds: Sequence[int] | None, overrides: Sequence[str]) -> dict[str, Any]:
    """What ``study.json`` records of the command line (JSON-ready; empty for the whole study)."""
    record: dict[str, Any] = {}
    if only is not None:
        record["only"] = list(only)
    if seeds is not None:
        record["seeds"] = list(seeds)
    if overrides:
        record["overrides"] = list(overrides)
    return json.loads(json.dumps(record))
