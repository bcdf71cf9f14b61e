"""Robustness evaluation: clean accuracy, PGD, CW and AutoAttack, per-example worst case.

Protocol (avoiding the usual pitfalls): the model is put in eval mode (restored
afterwards), inputs stay in [0, 1] (normalisation belongs inside the model), the
random generators are seeded (and the caller's RNG state is left untouched), the
full dataset is used unless ``num_examples`` is given, every adversarial example
is checked to lie in the eps-ball and in [0, 1], and an example counts as robust
only if it is classified correctly clean and under every attack.

Attack names: ``"pgd<k>"`` (k steps of l-inf/l2 PGD on cross-entropy, uniform random
start), ``"cw<k>"`` (the same on the CW margin loss), ``"autoattack"`` (pyautoattack;
``autoattack_version="standard"`` = APGD-CE, APGD-T, FAB-T, Square, or ``"fast"`` =
APGD-CE + APGD-T, see :mod:`gkl.attacks.autoattack`).

Warnings recorded in the report (signs of gradient masking or a weak evaluation):
a cheaper attack succeeds on an example where AutoAttack failed, or reaches lower
accuracy; the input gradient of the loss is exactly zero for a fraction of the
examples; the evaluation used only part of the dataset.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gkl.attacks.autoattack import AUTOATTACK_VERSIONS, autoattack
from gkl.attacks.pgd import NORMS, attack_mode, pgd
from gkl.utils.modules import unwrap_model

_ATTACK_PATTERN = re.compile(r"^(pgd|cw)(\d+)$")
#: Slack allowed when checking the eps-ball and [0, 1] (float32 rounding).
BALL_TOLERANCE = 1e-5
#: Fraction of examples with an exactly zero input gradient above which a warning is recorded.
ZERO_GRADIENT_WARN_FRACTION = 0.01


@dataclass
class EpsilonResult:
    """Accuracies at one eps: per attack, and the per-example worst case over all attacks."""

    eps: float
    accuracy: dict[str, float]
    worst_case: float


@dataclass
class RobustReport:
    """Result of :func:`evaluate_robustness` (accuracies are fractions in [0, 1])."""

    num_examples: int
    dataset_size: int
    norm: str
    attacks: list[str]
    clean_accuracy: float
    results: list[EpsilonResult]
    zero_gradient_fraction: float
    warnings: list[str] = field(default_factory=list)
    settings: dict[str, object] = field(default_factory=dict)

    def accuracy(self, attack: str, eps: float | None = None) -> float:
        """Accuracy under ``attack`` at ``eps`` (the first eps when None)."""
        result = self._result(eps)
        if attack not in result.accuracy:
            raise ValueError(f"attack must be one of {sorted(result.accuracy)}, got {attack!r}")
        return result.accuracy[attack]

    def worst_case(self, eps: float | None = None) -> float:
        """Per-example worst-case accuracy over all attacks at ``eps`` (the first eps when None)."""
        return self._result(eps).worst_case

    def _result(self, eps: float | None) -> EpsilonResult:
        if eps is None:
            return self.results[0]
        for result in self.results:
            if abs(result.eps - eps) <= 1e-12:
                return result
        raise ValueError(f"eps must be one of {[r.eps for r in self.results]}, got {eps!r}")

    def to_json(self) -> str:
        """The report as a JSON document."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def format_table(self) -> str:
        """A plain-text table: one row per eps, one column per attack, plus the worst case."""
        header = ["eps", "clean"] + list(self.attacks) + ["worst case"]
        rows = []
        for result in self.results:
            eps_text = f"{result.eps * 255:.2f}/255" if self.norm == "linf" else f"{result.eps:.4g}"
            rows.append(
                [eps_text, f"{100 * self.clean_accuracy:.2f}"]
                + [f"{100 * result.accuracy[a]:.2f}" for a in self.attacks]
                + [f"{100 * result.worst_case:.2f}"]
            )
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
        lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
        lines.append(f"{self.num_examples} of {self.dataset_size} examples, norm {self.norm}, accuracy in %")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _check_attack_names(attacks: Sequence[str]) -> list[str]:
    if isinstance(attacks, str) or not attacks:
        raise ValueError(f"attacks must be a non-empty sequence of names, got {attacks!r}")
    for name in attacks:
        if name != "autoattack" and not (isinstance(name, str) and _ATTACK_PATTERN.match(name)):
            raise ValueError(f"attacks: unknown attack {name!r}; expected 'pgd<steps>', 'cw<steps>' or 'autoattack'")
    if len(set(attacks)) != len(attacks):
        raise ValueError(f"attacks must not repeat names, got {list(attacks)}")
    return list(attacks)


def check_options(
    *,
    eps_list: Sequence[float],
    attacks: Sequence[str],
    batch_size: int = 256,
    num_examples: int | None = None,
    norm: str = "linf",
    autoattack_version: str = "standard",
) -> tuple[list[str], list[float]]:
    """Validate the options of :func:`evaluate_robustness` (ValueError naming the option) before any work."""
    attacks = _check_attack_names(attacks)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if autoattack_version not in AUTOATTACK_VERSIONS:
        raise ValueError(f"autoattack_version must be one of {AUTOATTACK_VERSIONS}, got {autoattack_version!r}")
    eps_list = [float(e) for e in eps_list]
    if not eps_list or any(not 0 <= e < float("inf") for e in eps_list):
        raise ValueError(f"eps_list must be a non-empty sequence of finite numbers >= 0, got {eps_list!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if num_examples is not None and (
        isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1
    ):
        raise ValueError(f"num_examples must be None (full dataset) or an integer >= 1, got {num_examples!r}")
    return attacks, eps_list


def _batches(
    data: Dataset | DataLoader, batch_size: int, num_examples: int | None
) -> tuple[Iterable[tuple[torch.Tensor, torch.Tensor]], int, int]:
    """Batches of the first ``num_examples`` examples, the number used and the dataset size."""
    dataset = data.dataset if isinstance(data, DataLoader) else data
    try:
        size = len(dataset)  # type: ignore[arg-type]  # an unsized dataset raises TypeError, handled below
    except TypeError as error:
        raise ValueError("dataset_or_loader must be a sized Dataset or a DataLoader over one") from error
    used = size if num_examples is None else min(num_examples, size)
    if isinstance(data, DataLoader) and num_examples is None and not _is_shuffled(data):
        return data, used, size
    subset = torch.utils.data.Subset(dataset, range(used))
    return DataLoader(subset, batch_size=batch_size, shuffle=False), used, size


def _is_shuffled(loader: DataLoader) -> bool:
    return isinstance(loader.sampler, torch.utils.data.RandomSampler)


def _check_in_ball(adv: torch.Tensor, images: torch.Tensor, eps: float, norm: str, attack: str) -> None:
    delta = (adv - images).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    if (size > eps + BALL_TOLERANCE).any():
        raise RuntimeError(
            f"{attack} produced an example outside the {norm} ball of radius {eps:.6g} "
            f"(largest perturbation {size.max().item():.6g})"
        )
    if adv.min() < -BALL_TOLERANCE or adv.max() > 1 + BALL_TOLERANCE or not torch.isfinite(adv).all():
        raise RuntimeError(f"{attack} produced an example outside [0, 1]")


def _zero_gradient_mask(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """True for examples whose cross-entropy input gradient is exactly zero."""
    x = images.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x).float(), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad.flatten(1).abs().amax(dim=1) == 0


def evaluate_robustness(
    model: nn.Module,
    dataset_or_loader: Dataset | DataLoader,
    *,
    eps_list: Sequence[float] = (8 / 255,),
    attacks: Sequence[str] = ("pgd10", "pgd20", "cw10", "cw20", "autoattack"),
    step_size: float = 2 / 255,
    batch_size: int = 256,
    num_examples: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    norm: str = "linf",
    autoattack_version: str = "standard",
) -> RobustReport:
    """Evaluate ``model`` on ``dataset_or_loader`` (examples ((C, H, W) in [0, 1], label)).

    ``num_examples=None`` uses the whole dataset (in order); otherwise its first
    ``num_examples``. PGD/CW use ``step_size`` and a uniform random start.
    """
    attacks, eps_list = check_options(
        eps_list=eps_list,
        attacks=attacks,
        batch_size=batch_size,
        num_examples=num_examples,
        norm=norm,
        autoattack_version=autoattack_version,
    )
    net = unwrap_model(model)
    if device is None:
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
    device = torch.device(device)
    batches, used, size = _batches(dataset_or_loader, batch_size, num_examples)

    clean_correct: list[torch.Tensor] = []
    zero_grad: list[torch.Tensor] = []
    robust: dict[tuple[float, str], list[torch.Tensor]] = {(e, a): [] for e in eps_list for a in attacks}
    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices), attack_mode(net):
        torch.manual_seed(seed)
        generator = torch.Generator(device=device).manual_seed(seed)
        for images, labels in batches:
            images = images.to(device).float()
            labels = labels.to(device).long()
            with torch.no_grad():
                clean_correct.append((net(images).argmax(dim=1) == labels).cpu())
            zero_grad.append(_zero_gradient_mask(net, images, labels).cpu())
            for eps in eps_list:
                for attack in attacks:
                    if attack == "autoattack":
                        result = autoattack(
                            net,
                            images,
                            labels,
                            eps=eps,
                            norm=norm,
                            version=autoattack_version,
                            seed=seed,
                            batch_size=batch_size,
                        )
                        adv = result.adversarial
                    else:
                        match = _ATTACK_PATTERN.match(attack)
                        assert match is not None  # the names were checked before any attack ran
                        kind, steps = match.groups()
                        adv = pgd(
                            net,
                            images,
                            labels,
                            eps=eps,
                            step_size=step_size,
                            steps=int(steps),
                            loss="ce" if kind == "pgd" else "cw",
                            norm=norm,
                            random_start="uniform",
                            generator=generator,
                        )
                    _check_in_ball(adv, images, eps, norm, attack)
                    with torch.no_grad():
                        robust[(eps, attack)].append((net(adv).argmax(dim=1) == labels).cpu())
    if not clean_correct:
        raise ValueError("dataset_or_loader yielded no examples")

    clean = torch.cat(clean_correct)
    flags = {key: torch.cat(value) for key, value in robust.items()}
    zero_fraction = torch.cat(zero_grad).double().mean().item()
    warnings = _warnings(flags, clean, eps_list, attacks, zero_fraction, used, size)
    results = []
    for eps in eps_list:
        worst = clean.clone()
        for attack in attacks:
            worst &= flags[(eps, attack)]
        results.append(
            EpsilonResult(
                eps=eps,
                accuracy={a: flags[(eps, a)].double().mean().item() for a in attacks},
                worst_case=worst.double().mean().item(),
            )
        )
    settings = {
        "step_size": step_size,
        "seed": seed,
        "autoattack_version": autoattack_version,
        "batch_size": batch_size,
    }
    return RobustReport(
        num_examples=int(clean.numel()),
        dataset_size=size,
        norm=norm,
        attacks=attacks,
        clean_accuracy=clean.double().mean().item(),
        results=results,
        zero_gradient_fraction=zero_fraction,
        warnings=warnings,
        settings=settings,
    )


def _warnings(
    flags: dict[tuple[float, str], torch.Tensor],
    clean: torch.Tensor,
    eps_list: list[float],
    attacks: list[str],
    zero_fraction: float,
    used: int,
    size: int,
) -> list[str]:
    messages = []
    if used < size:
        messages.append(f"evaluated on the first {used} of {size} examples, not the full set")
    if zero_fraction > ZERO_GRADIENT_WARN_FRACTION:
        messages.append(
            f"input gradient is exactly zero for {100 * zero_fraction:.1f}% of the examples (possible gradient masking)"
        )
    if "autoattack" not in attacks:
        return messages
    for eps in eps_list:
        aa = flags[(eps, "autoattack")] & clean
        for attack in attacks:
            if attack == "autoattack":
                continue
            beaten = (aa & ~flags[(eps, attack)]).sum().item()
            if beaten:
                messages.append(
                    f"eps {eps:.6g}: {attack} succeeds on {beaten} example(s) where AutoAttack fails "
                    "(possible gradient masking or a weak AutoAttack run)"
                )
            if flags[(eps, attack)].double().mean() < flags[(eps, "autoattack")].double().mean():
                messages.append(f"eps {eps:.6g}: {attack} accuracy is below AutoAttack accuracy")
    return messages


__all__ = ["EpsilonResult", "RobustReport", "check_options", "evaluate_robustness"]
