"""Which settings may differ between a run and its resume.

A resume must compute what the uninterrupted run would have computed, so the
train settings and the config are compared with the checkpoint's, except:

- :data:`gkl.settings.train.RESUME_TOLERANT_FIELDS` (progress, logging, evaluation and
  checkpoint frequency, device, trackers): they never change the trained weights;
- the caller's ``tolerant_config_keys`` (the runner passes ``out_dir``, ``name``,
  ``data.root``, ``data.num_workers``: a run folder or a data set may move);
- after a run stopped on a non-finite loss, :data:`gkl.settings.train.RESUME_FIX_FIELDS`
  (``optim.lr``, ``clip_grad_norm``, ``amp``, ``schedule``): "fix the cause and resume".
  What changed is recorded in ``run.json``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gkl.engine.checkpoint import dict_differences
from gkl.settings.train import RESUME_FIX_FIELDS, RESUME_TOLERANT_FIELDS, TrainSettings
from gkl.utils.errors import InputError

#: Config keys a resume may change besides the tolerant train fields (a run folder or data set may move).
DEFAULT_TOLERANT_CONFIG_KEYS: tuple[str, ...] = ("out_dir", "name", "data.root", "data.num_workers")


def _lookup(tree: Any, dotted: str) -> tuple[bool, Any]:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _new_with_default(key: str, current: Any, saved: Any, defaults: dict) -> bool:
    """``key`` is absent from the checkpoint (written before the field existed) and the current value
    is the field's default: the older run ran with that default, so it is no difference."""
    has_saved, _ = _lookup(saved, key)
    has_current, value = _lookup(current, key)
    has_default, default = _lookup(defaults, key)
    return not has_saved and has_current and has_default and value == default


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in patterns)


def resume_changes(
    *,
    settings: dict,
    saved_settings: dict,
    config: Any,
    saved_config: Any,
    tolerant_config_keys: Iterable[str],
    after_non_finite: bool,
    path: Path,
) -> list[str]:
    """Dotted keys that changed and are allowed to (``train.``-prefixed for settings), or raise
    :class:`InputError` naming the keys that may not change."""
    tolerant = set(RESUME_TOLERANT_FIELDS)
    fixable = set(RESUME_FIX_FIELDS)
    changed: list[str] = []
    refused: list[str] = []
    fix_refused: list[str] = []

    def sort(keys: list[str], prefix: str, extra_tolerant: set[str]) -> None:
        for key in keys:
            inner = key[len(prefix) :] if prefix and key.startswith(prefix) else None
            if _matches(key, extra_tolerant) or (inner is not None and _matches(inner, tolerant)):
                continue
            if inner is not None and _matches(inner, fixable):
                (changed if after_non_finite else fix_refused).append(key)
                continue
            refused.append(key)

    defaults = {
        "train": TrainSettings(epochs=settings.get("epochs") or None, iterations=settings.get("iterations")).to_dict()
    }
    keys = [
        k
        for k in dict_differences(settings, saved_settings)
        if not _new_with_default("train." + k, {"train": settings}, {"train": saved_settings}, defaults)
    ]
    sort(["train." + k for k in keys], "train.", set())
    if config is not None or saved_config is not None:
        keys = [
            k
            for k in dict_differences(config, saved_config)
            if not (k.startswith("train.") and _new_with_default(k, config, saved_config, defaults))
        ]
        sort(keys, "train.", set(tolerant_config_keys))
    refused = sorted(set(refused))
    fix_refused = sorted(set(fix_refused))
    if refused:
        what = "different train settings" if all(k.startswith("train.") for k in refused) else "a different config"
        raise InputError(
            f"{path}: the checkpoint was written with {what} (differing: "
            f"{', '.join(refused)}); a resume continues the same run (see docs/training.md, "
            "Resume, for what may change)"
        )
    if fix_refused:
        raise InputError(
            f"{path}: the checkpoint was written with different train settings (differing: "
            f"{', '.join(fix_refused)}); these may change on resume only after the run "
            "stopped on a non-finite loss"
        )
    return sorted(set(changed))
