"""Measure the spread of every training outcome the tests assert on, over seeds (not a test module).

Each test that trains asserts a threshold on an outcome (an accuracy, a loss, an attack's margin).
A threshold must hold on any CPU, so it is set from the spread of that outcome over seeds (a
different seed changes the run at least as much as a different CPU's rounding) and thread counts,
with margin. Run this with 1 and with 2 threads and read the minimum of each margin:

    OMP_NUM_THREADS=1 python tests/helpers_margins.py --seeds 0 1 2 3 4 --out margins_1.jsonl
    OMP_NUM_THREADS=2 python tests/helpers_margins.py --seeds 0 1 2 3 4 --out margins_2.jsonl
    python tests/helpers_margins.py --summarize margins_1.jsonl margins_2.jsonl

Every value printed is a margin: the test passes while the value is above the threshold named
in the key (``name>threshold``); the summary lists the minimum over all runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402


def robust_outcomes(seed: int, root: Path, only_main: bool = False) -> dict[str, float]:
    """test_robust.py and test_adversarial_training.py: the standard and adversarial digits CNNs."""
    from torch.utils.data import TensorDataset

    from gkl.evaluate.robust import evaluate_robustness
    from gkl.objectives.adversarial import build_adversarial_objective
    from gkl.objectives.supervised import SupervisedObjective

    test = TensorDataset(*helpers.digits01(root / "data", False))
    standard, _ = helpers.train_digits_cnn(SupervisedObjective(), root / f"std{seed}", seed=seed)
    out: dict[str, float] = {}
    # test_report_is_consistent_and_autoattack_is_strongest
    report = evaluate_robustness(
        copy.deepcopy(standard),
        test,
        eps_list=(8 / 255, 0.1),
        attacks=("pgd10", "cw10", "autoattack"),
        step_size=2 / 255,
        num_examples=48,
        batch_size=32,
        autoattack_version="fast",
    )
    out["robust.clean48>0.85"] = report.clean_accuracy
    for r in report.results:
        out[f"robust.pgd10-aa@{r.eps:.3f}>=0"] = r.accuracy["pgd10"] - r.accuracy["autoattack"]
        out[f"robust.cw10-aa@{r.eps:.3f}>=0"] = r.accuracy["cw10"] - r.accuracy["autoattack"]
        out[f"robust.aa@{r.eps:.3f}(info)"] = r.accuracy["autoattack"]
    out["robust.clean-worst>=0"] = min(report.clean_accuracy - r.worst_case for r in report.results)
    out["robust.worst(8/255)-worst(0.1)>=0"] = report.worst_case(8 / 255) - report.worst_case(0.1)
    out["robust.clean-pgd10(0.1)>0"] = report.clean_accuracy - report.accuracy("pgd10", 0.1)
    # test_standard_autoattack_runs_all_four_attacks_and_is_no_weaker_than_pgd
    report = evaluate_robustness(
        standard, test, eps_list=(0.1,), attacks=("pgd20", "autoattack"), num_examples=16, batch_size=16
    )
    out["standard_aa.pgd20-aa>=0"] = report.accuracy("pgd20") - report.accuracy("autoattack")
    out["standard_aa.aa(info)"] = report.accuracy("autoattack")
    out["standard_aa.clean-pgd20>0"] = report.clean_accuracy - report.accuracy("pgd20")
    if only_main:
        return out
    # test_l2_evaluation
    report = evaluate_robustness(
        standard, test, eps_list=(0.5,), attacks=("pgd10",), step_size=0.1, num_examples=32, norm="l2"
    )
    out["l2.clean-pgd10>=0"] = report.clean_accuracy - report.accuracy("pgd10")
    # test_adversarial_training_beats_standard_training_under_pgd
    std_report = evaluate_robustness(
        standard, test, eps_list=(helpers.AT_EPS,), attacks=("pgd10",), step_size=helpers.AT_EPS / 4
    )
    out["at.standard_clean>0.9"] = std_report.clean_accuracy
    for method in ("gkl", "trades"):
        objective = build_adversarial_objective(
            helpers.adversarial_settings(method), num_classes=10, epochs=helpers.AT_EPOCHS
        )
        model, _ = helpers.train_digits_cnn(objective, root / f"{method}{seed}", seed=seed)
        adv_report = evaluate_robustness(
            model, test, eps_list=(helpers.AT_EPS,), attacks=("pgd10",), step_size=helpers.AT_EPS / 4
        )
        out[f"at.{method}_clean>0.85"] = adv_report.clean_accuracy
        out[f"at.{method}_pgd10-standard_pgd10>0.3"] = adv_report.accuracy("pgd10") - std_report.accuracy("pgd10")
    return out


def engine_outcomes(seed: int, root: Path) -> dict[str, float]:
    """test_engine_training.py, test_engine_parts.py, test_evaluate_accuracy.py."""
    from test_engine_support import build_trainer, quick_settings, read_jsonl

    out: dict[str, float] = {}
    # test_short_run_learns_and_writes_the_run_directory
    run = root / f"short{seed}"
    build_trainer(run, quick_settings(ema={"decay": 0.5}, seed=seed)).fit()
    records = read_jsonl(run / "metrics.jsonl")
    out["short.last_eval_top1>90"] = records[-1]["eval"]["top1"]
    out["short.first_train_acc<80 (80-x>0)"] = 80.0 - records[0]["train"]["acc"]
    out["short.loss_drop>0"] = records[0]["train"]["loss"] - records[-1]["train"]["loss"]
    out["short.acc_gain>0"] = records[-1]["train"]["acc"] - records[0]["train"]["acc"]
    # test_runs_on_gkl_data_loaders_with_lr_scaling (both loaders)
    from gkl.data import build_dataset, build_loader
    from gkl.engine import Trainer
    from gkl.metrics.classification import ClassificationEvaluator
    from gkl.models import create_model
    from test_engine_support import CountingObjective

    for in_memory in (True, False):
        common = dict(device=torch.device("cpu"), in_memory=in_memory, num_workers=0, seed=seed)
        train = build_loader(
            build_dataset("digits", root / "data", True), batch_size=32, train=True, rank=0, world_size=1, **common
        )
        test = build_loader(build_dataset("digits", root / "data", False), batch_size=100, train=False, **common)
        torch.manual_seed(seed)
        settings = quick_settings(
            epochs=2,
            optim={"lr": 0.1, "reference_batch_size": 64},
            schedule={"kind": "multistep", "milestones": [1], "gamma": 0.1},
            seed=seed,
        )
        trainer = Trainer(
            model=create_model("digits_mlp_small", 10),
            objective=CountingObjective(),
            train_loader=train,
            eval_loader=test,
            settings=settings,
            evaluator=ClassificationEvaluator(10),
            run_dir=root / f"loaders{seed}{in_memory}",
        )
        summary = trainer.fit()
        out[f"loaders[{in_memory}].best_top1>80"] = summary["best_top1"]
    # test_bf16_autocast_run_trains_without_scaler
    trainer = build_trainer(
        root / f"bf16{seed}",
        quick_settings(epochs=2, amp="bf16", clip_grad_norm=1.0, schedule={"kind": "cosine_at"}, seed=seed),
        model_name="digits_mlp_small",
    )
    summary = trainer.fit()
    out["bf16.1.5-train_loss>0"] = 1.5 - summary["train"]["loss"]
    out["bf16.last_top1>65"] = summary["last_top1"]
    return out


def cli_outcomes(seed: int, root: Path) -> dict[str, float]:
    """test_cli.py: the 3-epoch MNIST-1D teacher of the demo config."""
    from gkl.cli import main

    configs = Path(__file__).resolve().parents[1] / "configs"
    name = f"teacher{seed}"
    assert (
        main(
            [
                "train",
                str(configs / "demo" / "teacher.yaml"),
                f"out_dir={root / 'runs'}",
                f"name={name}",
                f"data.root={root / 'data'}",
                "train.epochs=3",
                "train.progress=false",
                f"train.seed={seed}",
            ]
        )
        == 0
    )
    records = [json.loads(line) for line in (root / "runs" / name / "metrics.jsonl").read_text().splitlines()]
    return {"cli.teacher_top1>60": records[-1]["eval"]["top1"]}


def robust_main_outcomes(seed: int, root: Path) -> dict[str, float]:
    """The standard model and test_robust.py's main report only (per-eps attack margins)."""
    return robust_outcomes(seed, root, only_main=True)


GROUPS = {
    "robust": robust_outcomes,
    "robust_main": robust_main_outcomes,
    "engine": engine_outcomes,
    "cli": cli_outcomes,
}


def summarize(paths: list[str]) -> None:
    rows = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines() if line.strip()]
    values: dict[str, list[tuple[float, int, int]]] = {}
    for row in rows:
        for key, value in row["values"].items():
            values.setdefault(key, []).append((value, row["seed"], row["threads"]))
    for key in sorted(values):
        low = min(values[key])
        print(
            f"{key:45s} n={len(values[key]):2d} min={low[0]:.4g} (seed {low[1]}, {low[2]} threads) "
            f"max={max(values[key])[0]:.4g}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--groups", nargs="+", default=sorted(GROUPS), choices=sorted(GROUPS))
    parser.add_argument("--out", help="append one JSON line per (group, seed) to this file")
    parser.add_argument("--summarize", nargs="+", metavar="JSONL")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for group in args.groups:
            for seed in args.seeds:
                start = time.process_time()
                values = GROUPS[group](seed, Path(tmp) / group)
                line = json.dumps(
                    {
                        "group": group,
                        "seed": seed,
                        "threads": torch.get_num_threads(),
                        "cpu_s": round(time.process_time() - start, 1),
                        "values": values,
                    }
                )
                print(line, file=sys.stderr, flush=True)
                if args.out:
                    with open(args.out, "a") as out:
                        out.write(line + "\n")


if __name__ == "__main__":
    main()
