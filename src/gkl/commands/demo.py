"""The main job (``gkl demo``, ``make run``): distillation on bundled, offline data.

It trains a teacher on MNIST-1D (generated procedurally by the ``mnist1d`` package),
then students with CE only, Hinton KD and GKL over several seeds, all through the same
engine and recipe files as the full-size experiments (``configs/demo/``). It prints a
table of mean ± std top-1 (last and best epoch) and writes the test-accuracy curves as
a PNG.

Runs that already finished in ``out_dir`` are re-reported, not retrained (the engine's
resume), so running the demo twice loses nothing; an interrupted demo continues.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from gkl.config import ExperimentConfig, load_config
from gkl.recipes import resolve_recipe
from gkl.study.statistics import mean_std
from gkl.utils.errors import InputError

METHODS = ("ce", "kd", "gkl")


def _demo_config(name: str, out_dir: Path, overrides: list[str]) -> ExperimentConfig:
    path = resolve_recipe(f"demo/{name}")  # configs/demo/ of the checkout or of the installed wheel
    return load_config(path, [f"out_dir={out_dir}", *overrides])


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run's ``metrics.jsonl``."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _curve(records: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(r["epoch"], r["eval"]["top1"]) for r in records if "eval" in r]


def format_table(results: dict[str, list[dict[str, float]]], teacher: dict[str, float]) -> str:
    """Mean ± std (over seeds) of last- and best-epoch top-1 per method."""
    lines = [
        f"{'model':<22}{'seeds':>6}  {'top-1 last epoch':>18}  {'top-1 best epoch':>18}",
        f"{'teacher':<22}{1:>6}  {teacher['last']:>18.2f}  {teacher['best']:>18.2f}",
    ]
    labels = {"ce": "student, CE only", "kd": "student, KD", "gkl": "student, GKL"}
    for method, runs in results.items():
        last = [r["last"] for r in runs]
        best = [r["best"] for r in runs]
        lines.append(f"{labels.get(method, method):<22}{len(runs):>6}  {mean_std(last):>18}  {mean_std(best):>18}")
    return "\n".join(lines)


def plot_curves(curves: dict[str, list[list[tuple[int, float]]]], path: Path) -> Path | None:
    """Test top-1 per epoch, mean over seeds per method; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, runs in curves.items():
        epochs = [e for e, _ in runs[0]]
        mean = [statistics.mean(run[i][1] for run in runs) for i in range(len(epochs))]
        ax.plot(epochs, mean, label=method)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("MNIST-1D distillation (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _summary(records: list[dict[str, Any]]) -> dict[str, float]:
    accs = [acc for _, acc in _curve(records)]
    return {"last": accs[-1], "best": max(accs)}


def _announce(index: int, total: int, run_dir: Path, summary: dict[str, Any] | None = None) -> None:
    """``gkl demo [3/16] runs/demo/student_kd_seed1: training`` before a run, its test top-1 after it
    (on stderr, with the runs' own lines)."""
    where = f"gkl demo [{index}/{total}] {run_dir}"
    if summary is None:
        again = " (finished before: re-reported)" if (Path(run_dir) / "summary.json").is_file() else ""
        print(f"{where}: training{again}", file=sys.stderr, flush=True)
    else:
        last = summary.get("last_top1", summary.get("last"))
        text = f"{last:.2f}" if isinstance(last, (int, float)) else "-"
        print(f"{where}: done, test top-1 {text} at the last epoch", file=sys.stderr, flush=True)


def run_demo(out_dir: Path = Path("runs/demo"), num_seeds: int = 5, quick: bool = False) -> str:
    """Teacher, then CE / KD / GKL students over ``num_seeds`` seeds; returns the printed report."""
    from gkl.runner import run_experiment

    if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
        raise InputError(f"--seeds: expected an integer >= 1, got {num_seeds!r}")
    out_dir = Path(out_dir)
    # the demo configs keep the bar off (sweeps log to files); here it shows when stderr is a terminal
    common = ["train.epochs=3", "train.progress=false"] if quick else ["train.progress=true"]
    total = 1 + len(METHODS) * num_seeds
    teacher_cfg = _demo_config("teacher", out_dir, common)
    _announce(1, total, teacher_cfg.run_dir)
    _announce(1, total, teacher_cfg.run_dir, run_experiment(teacher_cfg, resume=True))
    teacher_ckpt = teacher_cfg.run_dir / "best.pt"
    teacher = _summary(read_metrics(teacher_cfg.run_dir))

    results: dict[str, list[dict[str, float]]] = {}
    curves: dict[str, list[list[tuple[int, float]]]] = {}
    for method in METHODS:
        for seed in range(num_seeds):
            overrides = [*common, f"train.seed={seed}", f"name=student_{method}_seed{seed}"]
            if method != "ce":
                overrides.append(f"teacher.checkpoint={teacher_ckpt}")
            cfg = _demo_config(f"student_{method}", out_dir, overrides)
            done = len(results.get(method, [])) + 2 + METHODS.index(method) * num_seeds
            _announce(done, total, cfg.run_dir)
            _announce(done, total, cfg.run_dir, run_experiment(cfg, resume=True))
            records = read_metrics(cfg.run_dir)
            results.setdefault(method, []).append(_summary(records))
            curves.setdefault(method, []).append(_curve(records))

    table = format_table(results, teacher)
    png = plot_curves(curves, out_dir / "curves.png")
    (out_dir / "results.json").write_text(json.dumps({"teacher": teacher, "students": results}, indent=2))
    report = [
        "gkl demo: MNIST-1D (procedurally generated, 4000 train / 1000 test), teacher CNN -> student MLP",
        table,
        f"runs, configs and metrics: {out_dir}/",
    ]
    if png is not None:
        report.append(f"curves: {png}")
    return "\n".join(report)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from gkl.commands.args import positive_int

    demo = sub.add_parser(
        "demo",
        help="the main job: teacher, then CE / KD / GKL students on bundled data",
        description="Distillation on MNIST-1D (generated, no download): a 1-D CNN teacher, then MLP students "
        "with CE only, Hinton KD and GKL over several seeds (configs/demo/); prints mean ± std top-1 "
        "and writes the test-accuracy curves. Finished runs in --out are re-reported, not retrained.",
    )
    demo.add_argument("--out", default="runs/demo", help="output directory of the runs, results.json and curves.png")
    demo.add_argument("--seeds", type=positive_int, default=5, help="student seeds per method (>= 1)")
    demo.add_argument("--quick", action="store_true", help="3 epochs per run instead of the recipes' (a smoke test)")
    return demo


def run(args: argparse.Namespace) -> int:
    print(run_demo(out_dir=Path(args.out), num_seeds=args.seeds, quick=args.quick))
    return 0
