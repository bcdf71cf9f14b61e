"""Semi-supervised training-step time: FixMatch with GKL consistency against FixMatch with CE.

USB's CIFAR-100 setting: ViT-S/2 at 32 px, 8 labelled + 8·µ unlabelled images per step
(two views each), one forward on cat(labelled, weak, strong), AdamW step. The two
objectives run interleaved and the ratio is the median of per-round ratios, so machine
load affects both alike. Also reports Mean-Teacher GKL vs Mean-Teacher MSE.

Run: .venv/bin/python benchmarks/ssl_step.py [--rounds 15] [--batch 8] [--uratio 1] [--threads 2]
     [--model vit_small_patch2_32]
Target (issue 10): an SSL step with GKL consistency at most 1.05x the step with CE consistency.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from _proc import add_device_option, checked_device, clock
from gkl.models import create_model
from gkl.objectives.ssl import FixMatchObjective, MeanTeacherObjective
from gkl.settings.ssl import SSLSettings


def _step(objective, model, optimizer, batch) -> float:
    start = clock(batch["x_lb"].device)
    out = objective(model, batch, epoch=1, step=100)
    loss = sum(out.losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    objective.after_optimizer_step()
    return clock(batch["x_lb"].device) - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--uratio", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="vit_small_patch2_32")
    add_device_option(parser)
    args = parser.parse_args()
    device = checked_device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = create_model(args.model, 100).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=5e-4)
    u = args.batch * args.uratio
    batch = {
        "x_lb": torch.randn(args.batch, 3, 32, 32),
        "y_lb": torch.randint(0, 100, (args.batch,)),
        "x_ulb_w": torch.randn(u, 3, 32, 32),
        "x_ulb_s": torch.randn(u, 3, 32, 32),
    }
    batch = {key: value.to(device) for key, value in batch.items()}
    total = 204_800
    objectives = {
        "fixmatch_ce": FixMatchObjective(SSLSettings(consistency="hard_ce")),
        "fixmatch_gkl": FixMatchObjective(SSLSettings(consistency="ikl", alpha=0.1, beta=1.0)),
        "mt_mse": MeanTeacherObjective(
            SSLSettings(algorithm="meanteacher", consistency="softmax_mse"), model, total_steps=total
        ),
        "mt_gkl": MeanTeacherObjective(
            SSLSettings(
                algorithm="meanteacher",
                consistency="ikl",
                alpha=0.03,
                beta=0.02,
                lambda_u=1.0,
                unsup_warmup=0.0,
                p_cutoff=0.95,
            ),
            model,
            total_steps=total,
        ),
    }
    for obj in objectives.values():
        obj.to(device)
    for _ in range(2):  # warm-up
        for obj in objectives.values():
            _step(obj, model, optimizer, batch)
    times: dict[str, list[float]] = {name: [] for name in objectives}
    for _ in range(args.rounds):
        for name, obj in objectives.items():
            times[name].append(_step(obj, model, optimizer, batch))

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    print(
        f"SSL training step, {args.model}, {args.batch} labelled + {u} unlabelled (x2 views), "
        f"{args.threads} threads, {args.rounds} interleaved rounds ({device})"
    )
    print(f"{'objective':<14}{'median ms':>12}")
    for name in objectives:
        print(f"{name:<14}{1000 * statistics.median(times[name]):>12.1f}")
    print(f"FixMatch GKL / FixMatch CE         = {ratio('fixmatch_gkl', 'fixmatch_ce'):.3f}  (target <= 1.05)")
    print(f"Mean-Teacher GKL / Mean-Teacher MSE = {ratio('mt_gkl', 'mt_mse'):.3f}")


if __name__ == "__main__":
    main()
