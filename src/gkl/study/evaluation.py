"""A study's robust evaluation after training (``evaluate:``) and the ``paper:`` columns it produces.

A study (for every setting) or a setting (for its own runs; ``evaluate: null`` for none) may ask
for ``gkl evaluate RUN --robust`` after each run has trained::

    evaluate:
      attacks: [autoattack]          # autoattack, pgd<k> (CE), cw<k> (CW margin); default [autoattack]
      eps: [8/255]                   # radii: numbers or fractions; default [8/255]
      norm: linf                     # linf or l2
      autoattack_version: standard   # standard or fast (APGD-CE + APGD-T)
      num_examples: null             # the first N test examples; null: the whole test set
      checkpoint: last               # last (checkpoint.pt) or best (best.pt)

``gkl sweep`` runs it as ``gkl evaluate RUN --robust --eps ... --attacks ... --norm ...
--autoattack-version ... --which <checkpoint> [--num-examples N]`` once the run has finished,
unless ``RUN/evaluations.jsonl`` already holds an evaluation with exactly these options (and no
config overrides, of the weights the run evaluates). Its robust accuracies, in %, are ``paper:``
columns: ``aa`` (AutoAttack), ``pgd<k>``, ``cw<k>`` and ``worst`` (per example, correct clean
and under every attack of the evaluation), written ``<name>@<eps>`` (``aa@8/255``) when the
evaluation has several radii.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gkl.settings.adversarial import NORMS
from gkl.utils.errors import ConfigError
from gkl.utils.validation import check_choice, check_int, fail

__all__ = [
    "EvaluationJob",
    "StudyEvaluation",
    "parse_evaluation",
    "robust_column",
    "recorded_values",
    "is_recorded",
]

#: the file ``gkl evaluate`` appends its evaluations to (gkl.evaluate.run_eval.EVALUATIONS_FILE)
EVALUATIONS_FILE = "evaluations.jsonl"
EVALUATE_KEYS = ("attacks", "eps", "norm", "autoattack_version", "num_examples", "checkpoint")
CHECKPOINTS = ("last", "best")
_ATTACK = re.compile(r"^(pgd|cw)([1-9]\d*)$")
#: a paper column of a robust evaluation: aa, pgd<k>, cw<k> or worst, optionally @<eps>
_COLUMN = re.compile(r"^(aa|worst|(?:pgd|cw)[1-9]\d*)(?:@(.+))?$")
ROBUST_COLUMNS = "aa, pgd<k>, cw<k>, worst (or <name>@<eps>, e.g. aa@8/255)"


def parse_eps(owner: str, value: Any) -> float:
    """A radius: a number >= 0 or a fraction such as ``8/255`` (computed as ``float(8) / float(255)``,
    as ``gkl evaluate --eps`` does)."""
    number: Any = value
    if isinstance(value, str):
        num, _, den = value.strip().partition("/")
        try:
            number = float(num) / float(den) if den else float(num)
        except (ValueError, ZeroDivisionError):
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 <= number < math.inf:
        raise fail(owner, "eps", "radii >= 0: numbers or fractions like 8/255", value, error=ConfigError)
    return float(number)


@dataclass(frozen=True)
class StudyEvaluation:
    """The robust evaluation a setting's runs get after training (the ``evaluate:`` block)."""

    attacks: tuple[str, ...] = ("autoattack",)
    eps: tuple[float, ...] = (8 / 255,)
    eps_text: tuple[str, ...] = ("8/255",)  #: the radii as the study wrote them (for messages)
    norm: str = "linf"
    autoattack_version: str = "standard"
    num_examples: int | None = None
    checkpoint: str = "last"

    def options(self) -> dict[str, Any]:
        """The ``robust_options`` ``gkl evaluate`` records for this evaluation."""
        return {
            "eps_list": list(self.eps),
            "attacks": list(self.attacks),
            "autoattack_version": self.autoattack_version,
            "num_examples": self.num_examples,
            "norm": self.norm,
        }

    def cli_args(self, run_dir: Path) -> list[str]:
        """Arguments of ``python -m gkl.cli`` (each radius as ``repr``: read back as the same float)."""
        args = ["evaluate", str(run_dir), "--robust", "--eps", ",".join(repr(e) for e in self.eps)]
        args += ["--attacks", ",".join(self.attacks), "--norm", self.norm]
        args += ["--autoattack-version", self.autoattack_version, "--which", self.checkpoint]
        return args + ([] if self.num_examples is None else ["--num-examples", str(self.num_examples)])

    def to_json(self) -> dict[str, Any]:
        return {
            "attacks": list(self.attacks),
            "eps": list(self.eps),
            "eps_text": list(self.eps_text),
            "norm": self.norm,
            "autoattack_version": self.autoattack_version,
            "num_examples": self.num_examples,
            "checkpoint": self.checkpoint,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudyEvaluation:
        return cls(
            attacks=tuple(data["attacks"]),
            eps=tuple(float(e) for e in data["eps"]),
            eps_text=tuple(str(e) for e in data.get("eps_text", data["eps"])),
            norm=str(data["norm"]),
            autoattack_version=str(data["autoattack_version"]),
            num_examples=data.get("num_examples"),
            checkpoint=str(data["checkpoint"]),
        )

    def column_problem(self, column: tuple[str, float | None]) -> str | None:
        """Why this evaluation does not produce ``column`` (from :func:`robust_column`), or None."""
        attack, eps = column
        if attack != "worst" and attack not in self.attacks:
            return f"the setting's evaluation runs {', '.join(self.attacks)}; add {attack!r} to evaluate.attacks"
        if eps is None and len(self.eps) > 1:
            example = f"{_name(attack)}@{self.eps_text[0]}"
            return f"the evaluation has several radii ({', '.join(self.eps_text)}): name one, e.g. {example}"
        if eps is not None and not any(abs(eps - e) <= 1e-12 for e in self.eps):
            return f"the evaluation's radii are {', '.join(self.eps_text)}"
        return None


def _name(attack: str) -> str:
    return "aa" if attack == "autoattack" else attack


def _listed(owner: str, key: str, value: Any) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise fail(owner, key, "a non-empty list", value, error=ConfigError)
    return items


def parse_evaluation(owner: str, value: Any) -> StudyEvaluation | None:
    """The ``evaluate:`` block ``owner`` (``<study>: evaluate`` or ``<study>: settings.<name>.evaluate``) as a
    StudyEvaluation; None for ``null``. A bad key or value is a one-line ConfigError naming it."""
    from gkl.attacks.autoattack import AUTOATTACK_VERSIONS

    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{owner}: expected a mapping ({', '.join(EVALUATE_KEYS)}) or null, got {value!r}")
    for key in value:
        if key not in EVALUATE_KEYS:
            raise ConfigError(f"{owner}: unknown key {key!r}; known keys: {', '.join(EVALUATE_KEYS)}")
    attacks = _listed(owner, "attacks", value.get("attacks", ["autoattack"]))
    for name in attacks:
        if name != "autoattack" and not (isinstance(name, str) and _ATTACK.match(name)):
            raise fail(owner, "attacks", "names autoattack, pgd<steps> or cw<steps>", name, error=ConfigError)
    if len(set(attacks)) != len(attacks):
        raise fail(owner, "attacks", "names without repeats", attacks, error=ConfigError)
    raw_eps = _listed(owner, "eps", value.get("eps", ["8/255"]))
    eps = [parse_eps(owner, e) for e in raw_eps]
    if len(set(eps)) != len(eps):
        raise fail(owner, "eps", "radii without repeats", raw_eps, error=ConfigError)
    num_examples = value.get("num_examples")
    if num_examples is not None:
        check_int(owner, "num_examples", num_examples, minimum=1, error=ConfigError)
    return StudyEvaluation(
        attacks=tuple(attacks),
        eps=tuple(eps),
        eps_text=tuple(str(e).strip() for e in raw_eps),
        norm=check_choice(owner, "norm", value.get("norm", "linf"), NORMS, error=ConfigError),
        autoattack_version=check_choice(
            owner,
            "autoattack_version",
            value.get("autoattack_version", "standard"),
            AUTOATTACK_VERSIONS,
            error=ConfigError,
        ),
        num_examples=num_examples,
        checkpoint=check_choice(owner, "checkpoint", value.get("checkpoint", "last"), CHECKPOINTS, error=ConfigError),
    )


def robust_column(metric: str) -> tuple[str, float | None] | None:
    """``aa@8/255`` -> ("autoattack", 8/255); ``pgd20`` -> ("pgd20", None); None for a name that is not a
    robust column (a bad ``@<eps>`` included)."""
    match = _COLUMN.match(metric)
    if match is None:
        return None
    name, eps_text = match.groups()
    eps = None
    if eps_text is not None:
        try:
            eps = parse_eps("", eps_text)
        except ConfigError:
            return None
    return ("autoattack" if name == "aa" else name), eps


# ----------------------------------------------------------------------------- the recorded evaluations


def _records(run_dir: Path) -> list[dict[str, Any]]:
    """The evaluations in ``run_dir/evaluations.jsonl``, oldest first (a torn line is skipped)."""
    path = Path(run_dir) / EVALUATIONS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _robust_report(record: Mapping[str, Any], evaluation: StudyEvaluation, weights: str) -> dict[str, Any] | None:
    """The checkpoint's robust report when ``record`` is this exact evaluation of the run, else None."""
    if record.get("kind") != "robust" or record.get("overrides") or record.get("weights") != weights:
        return None
    options = record.get("robust_options")
    if not isinstance(options, dict) or {"norm": "linf", **options} != evaluation.options():
        return None  # records written before --norm existed are l-inf ones
    entry = (record.get("results") or {}).get(evaluation.checkpoint)
    robust = entry.get("robust") if isinstance(entry, dict) else None
    return robust if isinstance(robust, dict) else None


def _latest_report(run_dir: Path, evaluation: StudyEvaluation, weights: str) -> dict[str, Any] | None:
    for record in reversed(_records(run_dir)):
        report = _robust_report(record, evaluation, weights)
        if report is not None:
            return report
    return None


def is_recorded(run_dir: Path, evaluation: StudyEvaluation, weights: str) -> bool:
    """Whether ``run_dir/evaluations.jsonl`` holds this evaluation of the weights the run evaluates."""
    return _latest_report(run_dir, evaluation, weights) is not None


def recorded_values(run_dir: Path, evaluation: StudyEvaluation, weights: str, metrics: list[str]) -> dict[str, float]:
    """The robust accuracies (in %) of the columns ``metrics`` in the run's latest matching evaluation
    (columns it does not hold, or every column when there is none, are left out)."""
    report = _latest_report(run_dir, evaluation, weights)
    if report is None:
        return {}
    values: dict[str, float] = {}
    for metric in metrics:
        column = robust_column(metric)
        if column is None or evaluation.column_problem(column) is not None:
            continue
        attack, eps = column
        target = evaluation.eps[0] if eps is None else eps
        for result in report.get("results") or []:
            if abs(float(result["eps"]) - target) <= 1e-12:
                value = result["worst_case"] if attack == "worst" else result["accuracy"].get(attack)
                if value is not None:
                    values[metric] = 100.0 * float(value)
    return values


@dataclass
class EvaluationJob:
    """A robust evaluation of one finished run, started by a sweep's launcher like a run."""

    name: str  #: ``<run>.evaluate``
    run: str
    run_dir: Path
    evaluation: StudyEvaluation

    def cli_args(self) -> list[str]:
        return self.evaluation.cli_args(self.run_dir)
