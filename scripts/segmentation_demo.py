"""The segmentation demo: a teacher, then CE / KD-KL / KD-GKL / APD-KL / APD-GKL students on the
bundled digit scenes, every student over several seeds, each run an ordinary ``gkl seg-train`` run.

    python scripts/segmentation_demo.py --out runs/segmentation_demo --seeds 3 --jobs 2

Resumable: a run with a ``summary.json`` is not started again, a killed run continues from its
checkpoint (``--resume``). Model selection (``best.pt``, the teacher the students learn from) is on
the validation split held out of the training scenes (``data.val_fraction`` of the demo recipes);
the table reports test mIoU (the 500 val scenes of digit_scenes, never used for selection) at the
last epoch and at the best-validation epoch, mean ± sample std over the seeds, and each run's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gkl.engine.checkpoint import read_checkpoint

DEMO = Path(__file__).resolve().parents[1] / "configs" / "segmentation" / "demo"
STUDENTS = ("student_ce", "student_kd_kl", "student_kd_gkl", "student_apd_kl", "student_apd_gkl")


def run(config: str, out: Path, name: str, extra: list[str], threads: int) -> float:
    """``gkl seg-train`` one run (skipped when finished); returns its wall time in seconds."""
    run_dir = out / name
    timing = run_dir / "wall_time.json"
    if (run_dir / "summary.json").is_file() and timing.is_file():
        return json.loads(timing.read_text())["seconds"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "gkl.cli", "seg-train", str(DEMO / f"{config}.yaml"), f"out_dir={out}",
               f"name={name}", *extra, "--resume"]
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{name}.log", "w") as log:
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed (exit {done.returncode}); see {out / f'{name}.log'}")
    seconds = time.perf_counter() - started
    timing.write_text(json.dumps({"seconds": seconds, "threads": threads}) + "\n")
    return seconds


def test_miou(run_dir: Path) -> tuple[float, float | None]:
    """(test mIoU at the last epoch, test mIoU at the best-validation epoch)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    last = summary["final"]["eval"]["mIoU"]
    best = read_checkpoint(run_dir / "checkpoint.pt")["best"]
    return float(last), best.get("eval_at_best")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/segmentation_demo")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each with --threads threads)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args()
    out = Path(args.out)
    started = time.perf_counter()
    teacher_time = run("teacher", out, "teacher", list(args.overrides), args.threads)
    teacher = f"teacher.checkpoint={out / 'teacher' / 'best.pt'}"
    jobs = [(s, seed) for s in STUDENTS for seed in range(args.seeds)]

    def one(job: tuple[str, int]) -> float:
        student, seed = job
        extra = [*args.overrides, f"train.seed={seed}"] + ([teacher] if student != "student_ce" else [])
        return run(student, out, f"{student}_seed{seed}", extra, args.threads)

    with ThreadPoolExecutor(args.jobs) as pool:
        times = dict(zip(jobs, pool.map(one, jobs)))
    total = time.perf_counter() - started
    t_last, t_best = test_miou(out / "teacher")
    lines = ["| run | test mIoU, last epoch | test mIoU at best-val epoch | wall time per run |", "|---|---|---|---|",
             f"| teacher (pspnet_small, seed 0) | {t_last:.2f} | {t_best:.2f} | {teacher_time:.0f} s |"]
    for student in STUDENTS:
        values = [test_miou(out / f"{student}_seed{seed}") for seed in range(args.seeds)]
        last = [v[0] for v in values]
        best = [v[1] for v in values]
        wall = [times[(student, seed)] for seed in range(args.seeds)]

        def fmt(xs: list[float]) -> str:
            spread = f" ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else ""
            return f"{statistics.mean(xs):.2f}{spread} ({', '.join(f'{x:.2f}' for x in xs)})"

        lines.append(f"| {student} | {fmt(last)} | {fmt(best)} | {statistics.mean(wall):.0f} s |")
    lines.append(f"\ntotal wall time {total:.0f} s, {args.jobs} job(s) x {args.threads} thread(s)")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
