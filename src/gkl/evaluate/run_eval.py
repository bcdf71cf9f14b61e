"""Evaluate a finished (or running) run directory: last and best epoch, clean and robust.

Backs ``gkl evaluate RUN_DIR``. The run's own ``config.yaml`` says which dataset and
model to rebuild; ``key=value`` overrides can point it elsewhere (e.g. ``data.root``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from gkl.config import ExperimentConfig, recorded_config_from_dict
from gkl.config_schema import apply_overrides
from gkl.data import build_dataset, build_loader
from gkl.utils.distributed import resolve_device
from gkl.evaluate.accuracy import evaluate_classifier
from gkl.models import create_model, load_weights

CHECKPOINT_FILES = {"last": "checkpoint.pt", "best": "best.pt"}


def load_run_config(run_dir: Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The resolved config a run recorded in ``config.yaml``, with overrides applied."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a gkl run directory: {path} is missing")
    data = yaml.safe_load(path.read_text()) or {}
    return recorded_config_from_dict(apply_overrides(data, list(overrides)))


def evaluate_run(
    run_dir: Path,
    *,
    overrides: Sequence[str] = (),
    which: Sequence[str] = ("last", "best"),
    weights: str | None = None,
    robust: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], str]:
    """Evaluate the run's ``last`` (checkpoint.pt) and/or ``best`` (best.pt) weights.

    ``weights`` picks the raw or the EMA weights of the last checkpoint (default: what the
    run tracked); best.pt holds the weights the run tracked. ``robust`` holds keyword
    arguments of :func:`gkl.evaluate.robust.evaluate_robustness` (eps_list, attacks, ...).
    Returns the JSON-ready report and a printable table.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir, overrides)
    unknown = [w for w in which if w not in CHECKPOINT_FILES]
    if unknown or not which:
        raise ValueError(f"which: expected a subset of {sorted(CHECKPOINT_FILES)}, got {list(which)}")
    weights = weights or cfg.train.ema.evaluate
    if weights not in ("raw", "ema"):
        raise ValueError(f"weights: expected 'raw' or 'ema', got {weights!r}")
    if robust is not None and cfg.data.normalize:
        raise ValueError(
            "robust evaluation needs inputs in [0, 1] with normalisation inside the model: "
            "this run used data.normalize=true"
        )
    device = resolve_device(cfg.train.device)
    eval_set = build_dataset(cfg.data.name, cfg.data.root, False, normalize=cfg.data.normalize)
    info = eval_set.info
    loader = build_loader(eval_set, batch_size=cfg.data.eval_batch_size, train=False, device=device,
                          in_memory=cfg.data.in_memory, num_workers=cfg.data.num_workers, seed=cfg.train.seed)

    report: dict[str, Any] = {"run_dir": str(run_dir), "dataset": info.name, "model": cfg.model.name,
                              "weights": weights, "results": {}}
    lines = [f"{'checkpoint':<10} {'epoch':>5} {'top-1':>7} {'top-5':>7}  groups"]
    for name in which:
        path = run_dir / CHECKPOINT_FILES[name]
        if not path.is_file():
            raise FileNotFoundError(f"no {name} checkpoint in {run_dir}: {path} is missing")
        key = "ema" if (name == "last" and weights == "ema") else "model"
        model = create_model(cfg.model.name, info.num_classes, **cfg.model.kwargs)
        contents = load_weights(model, path, key=key)
        epoch = contents.get("epoch") if isinstance(contents, dict) else None
        model.to(device)
        clean = evaluate_classifier(model, loader, num_classes=info.num_classes, device=device,
                                    class_groups=info.class_groups)
        entry: dict[str, Any] = {"epoch": epoch if isinstance(epoch, int) else None, "clean": clean}
        groups = clean.get("groups") or {}
        top5 = clean.get("top5")
        lines.append(
            f"{name:<10} {entry['epoch'] if entry['epoch'] is not None else '-':>5} {clean['top1']:>7.2f} "
            f"{top5 if top5 is None else format(top5, '.2f'):>7}  "
            + " ".join(f"{g}={v:.2f}" for g, v in groups.items())
        )
        if robust is not None:
            from gkl.evaluate.robust import evaluate_robustness

            rob = evaluate_robustness(model, eval_set, device=device, seed=cfg.train.seed,
                                      batch_size=cfg.data.eval_batch_size, **robust)
            entry["robust"] = json.loads(rob.to_json())
            lines.append(f"robustness of the {name} checkpoint:\n{rob.format_table()}")
        report["results"][name] = entry
    return report, "\n".join(lines)
