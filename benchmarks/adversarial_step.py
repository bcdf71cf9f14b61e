"""Time one adversarial-training step, split into attack, forward/backward and AWP: TRADES vs GKL-AT.

Both methods use the same attack budget (10 PGD steps of 2/255 at eps = 8/255, l-inf,
TRADES start) and AWP from the first step; each uses its own inner loss (TRADES: KL,
GKL-AT: GKL with class-wise weights). Prints median seconds per part and the
GKL-AT / TRADES ratios (target: total step <= 1.05x).

    .venv/bin/python benchmarks/adversarial_step.py --model resnet20 --batch-size 32 --repeats 10

On a CPU shared with other jobs, pass ``--threads 1``: with more intra-op threads than
free cores, OpenMP oversubscription made steps ~40x slower in our measurements.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from _proc import add_device_option, checked_device, clock
from gkl.attacks import pgd
from gkl.models import create_model
from gkl.objectives.adversarial import build_adversarial_objective
from gkl.settings.adversarial import adversarial_settings


def _timed(fn, device: torch.device) -> tuple[float, object]:
    start = clock(device)
    result = fn()
    return clock(device) - start, result


class StepTimer:
    """Times the parts of one AT step of ``method`` on a fixed batch, as the objective runs them."""

    def __init__(
        self, method: str, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int
    ) -> None:
        self.settings = adversarial_settings(
            method,
            eps=8 / 255,
            eps_schedule="fixed",
            attack_budget="fixed",
            attack_steps=10,
            attack_step_size=2 / 255,
            awp_start_epoch=1,
        )
        self.objective = build_adversarial_objective(self.settings, num_classes=num_classes, epochs=1).to(images.device)
        self.model, self.images, self.labels = model, images, labels
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        self.times: dict[str, list[float]] = {"attack": [], "awp": [], "forward_backward": [], "total": []}

    def run_once(self, record: bool) -> None:
        model, images, labels, objective, s = self.model, self.images, self.labels, self.objective, self.settings
        n = images.shape[0]
        model.train()
        t_attack, adversarial = _timed(
            lambda: pgd(
                model,
                images,
                labels,
                eps=s.eps,
                step_size=s.attack_step_size,
                steps=s.attack_steps,
                loss=s.attack_loss,
                random_start=s.random_start,
                **objective.attack_extras(labels),
            ),
            images.device,
        )
        t_awp, _ = _timed(
            lambda: objective.awp.perturb_for_loss(
                model, lambda proxy: sum(objective._views_loss(proxy, images, adversarial, labels, n)[0].values())
            ),
            images.device,
        )

        def forward_backward() -> None:
            losses, clean_logits, _ = objective._views_loss(model, images, adversarial, labels, n)
            objective.observe_clean_logits(clean_logits.detach(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            self.optimizer.step()
            objective.after_optimizer_step()

        t_fb, _ = _timed(forward_backward, images.device)

        def engine_step() -> None:  # the whole step, as the engine calls the objective
            out = objective(model, (images, labels), epoch=1, step=1)
            self.optimizer.zero_grad(set_to_none=True)
            out.total().backward()
            self.optimizer.step()
            objective.after_optimizer_step()

        t_total, _ = _timed(engine_step, images.device)
        if record:
            for key, value in zip(("attack", "awp", "forward_backward", "total"), (t_attack, t_awp, t_fb, t_total)):
                self.times[key].append(value)

    def medians(self) -> dict[str, float]:
        return {key: statistics.median(values) for key, values in self.times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", help="gkl.models name taking 32x32 RGB inputs")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    add_device_option(parser)
    args = parser.parse_args(argv)
    device = checked_device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.rand(args.batch_size, 3, 32, 32).to(device)
    labels = torch.randint(0, args.num_classes, (args.batch_size,)).to(device)
    timers = {}
    for method in ("trades", "gkl"):
        torch.manual_seed(0)
        model = create_model(args.model, args.num_classes).to(device)
        timers[method] = StepTimer(method, model, images, labels, args.num_classes)
    # interleave the two methods (alternating order) so that machine load affects both alike
    for i in range(args.warmup + args.repeats):
        for method in ("trades", "gkl") if i % 2 == 0 else ("gkl", "trades"):
            timers[method].run_once(record=i >= args.warmup)
    results = {method: timer.medians() for method, timer in timers.items()}
    print(
        f"model {args.model}, batch {args.batch_size}, {args.threads} threads, {device}, "
        f"median of {args.repeats} interleaved steps (seconds)"
    )
    print(f"{'part':<18}{'TRADES':>10}{'GKL-AT':>10}{'ratio':>8}")
    for part in ("attack", "awp", "forward_backward", "total"):
        trades, gkl = results["trades"][part], results["gkl"][part]
        print(f"{part:<18}{trades:>10.4f}{gkl:>10.4f}{gkl / trades:>8.3f}")
    ratio = results["gkl"]["total"] / results["trades"]["total"]
    print(f"GKL-AT step / TRADES step = {ratio:.3f} (target <= 1.05): {'ok' if ratio <= 1.05 else 'ABOVE TARGET'}")


if __name__ == "__main__":
    main()
