"""The study file of ``gkl sweep``: a base config, named settings (overrides) × seeds, teacher chains.

Format (YAML; paths relative to the study file, ``out_dir`` relative to the working directory)::

    out_dir: runs/studies/kl_vs_mse      # default runs/studies/<file stem>
    config: ../demo/student_kd.yaml      # base config of every setting (a setting may name its own)
    overrides: {train.epochs: 30}        # applied to every run (mapping or list of "key=value")
    seeds: 10                            # an int n (seeds 0..n-1) or a list of seeds
    baseline: ce                         # setting the paired differences are taken against
    settings:
      teacher: {config: ../demo/teacher.yaml, seeds: [0]}
      ce:      {config: ../demo/student_ce.yaml}
      kd_t4:   {teacher: teacher, overrides: {distill.temperature: 4}}
      mse:     {config: ../demo/student_mse.yaml, teacher: teacher}   # another method: its demo config
      chain2:  {teacher: kd_t4}          # sequential distillation: kd_t4's student teaches

A setting's ``teacher`` names another setting whose trained run (``teacher_checkpoint``,
default ``best.pt``) becomes the teacher: ``teacher.checkpoint``, and ``teacher.name`` /
``teacher.kwargs`` set to the model that run trained (so a chain's student may be a different
architecture from the config's teacher); the teacher's only seed, or the teacher run of the
same seed (per-seed chains). Every run is ``<out_dir>/<setting>_seed<S>``.
Everything is checked (study keys, every run's resolved config) before anything runs.

Published numbers: ``source: "..."`` (where they come from) at the top, and in a setting
``paper: {<metric>: <number>}`` with a metric its task's evaluator writes (:mod:`gkl.study.paper`),
or a robust accuracy of the ``evaluate:`` block (the study's, or the setting's own; ``null`` for
none): a ``gkl evaluate RUN --robust ...`` the sweep runs after each run (:mod:`gkl.study.evaluation`).
``load_study(..., only=, seeds=, overrides=)`` shrinks the study as ``gkl sweep --only --seeds
key=value`` does (:mod:`gkl.study.subset`).
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gkl.recipes import resolve_recipe
from gkl.study.evaluation import StudyEvaluation, parse_evaluation
from gkl.study.paper import check_paper
from gkl.study.subset import check_extra_overrides, select_settings, subset_out_dir, subset_record
from gkl.utils.errors import InputError

__all__ = ["RunSpec", "Study", "load_study", "format_override"]

STUDY_KEYS = ("config", "overrides", "seeds", "baseline", "settings", "out_dir", "description", "source", "evaluate")
SETTING_KEYS = ("config", "overrides", "seeds", "teacher", "teacher_checkpoint", "description", "paper", "evaluate")
CHECKPOINT_FILES = ("best.pt", "checkpoint.pt")


def teacher_kinds() -> tuple[str, ...]:
    """Kinds whose config takes a trained run as ``teacher`` (a study setting's ``teacher:``)."""
    from gkl.tasks import list_tasks

    return tuple(t.name for t in list_tasks() if t.teacher != "none")


@dataclass
class RunSpec:
    """One run of a study: its setting, seed, run directory, CLI arguments and prerequisites."""

    setting: str
    seed: int
    name: str
    run_dir: Path
    command: str  #: the gkl command that runs it: the verb of the config's task (an alias of ``gkl fit``)
    config: Path
    overrides: list[str]
    depends_on: list[str] = field(default_factory=list)  #: names of runs that must finish first
    resolved: Any = field(default=None, repr=False, compare=False)  #: the resolved ExperimentConfig

    def cli_args(self) -> list[str]:
        """Arguments of ``python -m gkl.cli`` (``--resume`` last: it continues or starts fresh)."""
        return [self.command, str(self.config), *self.overrides, "--resume"]


@dataclass
class Study:
    """A validated study: where it writes, its baseline and its runs in dependency order."""

    path: Path
    name: str
    out_dir: Path
    baseline: str | None
    settings: list[str]
    runs: list[RunSpec]
    source: str | None = None  #: where the study's published numbers come from (``source:``)
    paper: dict[str, dict[str, float]] = field(default_factory=dict)  #: setting -> {metric: published number}
    #: setting -> the robust evaluation its runs get after training (``evaluate:``)
    evaluations: dict[str, StudyEvaluation] = field(default_factory=dict)
    subset: dict[str, Any] = field(default_factory=dict)  #: the command line's --only / --seeds / overrides


def format_override(key: str, value: Any) -> str:
    """``key=value`` with the value written so the config loader reads it back unchanged (YAML)."""
    if isinstance(value, str) and "=" not in key:
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float) and math.isinf(value):
        text = ".inf" if value > 0 else "-.inf"
    elif isinstance(value, (int, float)):
        text = repr(value)
    else:
        text = json.dumps(value)
    return f"{key}={text}"


def _overrides(where: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [format_override(str(k), v) for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value):
        return list(value)
    raise InputError(f"{where}: expected a mapping {{key: value}} or a list of 'key=value' strings, got {value!r}")


def _seeds(where: str, value: Any) -> list[int]:
    if isinstance(value, bool):
        raise InputError(f"{where}: expected a number of seeds or a list of seeds, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise InputError(f"{where}: the number of seeds must be >= 1, got {value}")
        return list(range(value))
    if (
        isinstance(value, list)
        and value
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
    ):
        if len(set(value)) != len(value):
            raise InputError(f"{where}: seeds must not repeat, got {value}")
        return list(value)
    raise InputError(f"{where}: expected a number of seeds or a non-empty list of integers >= 0, got {value!r}")


def _check_keys(where: str, data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(allowed)}"
            raise InputError(f"{where}: unknown key '{key}'{hint}")


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path}: study file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a study file is a mapping with at least 'settings'")
    return data


def _order(settings: dict[str, dict[str, Any]], path: Path) -> list[str]:
    """Settings with every teacher before its students; a cycle or unknown teacher is an error."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise InputError(f"{path}: settings form a teacher cycle: {' -> '.join(chain + [name])}")
        state[name] = 1
        teacher = settings[name].get("teacher")
        if teacher is not None:
            if teacher not in settings:
                close = difflib.get_close_matches(str(teacher), list(settings), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise InputError(f"{path}: settings.{name}.teacher: no setting named {teacher!r}{hint}")
            visit(teacher, chain + [name])
        state[name] = 2
        order.append(name)

    for name in settings:
        visit(name, [])
    return order


def load_study(
    study_path: str | Path,
    *,
    out_dir: str | Path | None = None,
    only: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
) -> Study:
    """Read and validate a study file, resolving every run's config (nothing runs, nothing is written).

    ``only`` / ``seeds`` / ``overrides`` shrink or change the study as ``gkl sweep --only --seeds
    key=value`` does (:mod:`gkl.study.subset`); the runs then go to a folder of their own unless
    ``out_dir`` is given.
    """
    from gkl.config import load_config
    from gkl.config_schema import apply_overrides, load_yaml
    from gkl.tasks import get_task

    path = resolve_recipe(study_path, under="studies")  # a local file, or a recipe name (with or without studies/)
    data = _read(path)
    _check_keys(str(path), data, STUDY_KEYS)
    settings = data.get("settings")
    if not isinstance(settings, dict) or not settings:
        raise InputError(f"{path}: settings: a study needs at least one named setting (a mapping name -> setting)")
    study_seeds = _seeds(f"{path}: seeds", data.get("seeds", 1)) if seeds is None else list(seeds)
    extra = check_extra_overrides(overrides)
    common = _overrides(f"{path}: overrides", data.get("overrides")) + extra
    base_config = data.get("config")
    source = data.get("source")
    if source is not None and not isinstance(source, str):
        raise InputError(f"{path}: source: expected a string (where the published numbers come from), got {source!r}")
    subset = subset_record(only, seeds, extra)
    study_evaluation = parse_evaluation(f"{path}: evaluate", data.get("evaluate"))
    target = Path(data.get("out_dir") or f"runs/studies/{path.stem}")
    target = Path(out_dir) if out_dir is not None else subset_out_dir(target, subset)
    for name, setting in settings.items():
        where = f"{path}: settings.{name}"
        if not isinstance(name, str) or not name or any(c in name for c in "/\\ ="):
            raise InputError(f"{where}: a setting name is a non-empty string without '/', '=' or spaces")
        if setting is None:
            settings[name] = setting = {}
        if not isinstance(setting, dict):
            raise InputError(f"{where}: expected a mapping (config, overrides, seeds, teacher), got {setting!r}")
        _check_keys(where, setting, SETTING_KEYS)
        if setting.get("config", base_config) is None:
            raise InputError(f"{where}: no config (give 'config' in the setting or at the top of the study)")
        ckpt = setting.get("teacher_checkpoint", "best.pt")
        if ckpt not in CHECKPOINT_FILES:
            raise InputError(f"{where}.teacher_checkpoint: expected one of {', '.join(CHECKPOINT_FILES)}, got {ckpt!r}")
    baseline = data.get("baseline")
    if baseline is not None and baseline not in settings:
        close = difflib.get_close_matches(str(baseline), list(settings), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise InputError(f"{path}: baseline: no setting named {baseline!r}{hint}")
    chosen = select_settings(settings, only, str(path))
    if baseline not in chosen:
        baseline = None  # --only left it out: no paired differences

    runs: list[RunSpec] = []
    by_setting: dict[str, dict[int, RunSpec]] = {}
    model_of: dict[str, tuple[str, dict[str, Any]]] = {}  # run name -> its model (name, kwargs)
    paper: dict[str, dict[str, float]] = {}
    evaluations: dict[str, StudyEvaluation] = {}
    for name in [n for n in _order(settings, path) if n in chosen]:
        setting = settings[name]
        where = f"{path}: settings.{name}"
        config = (path.parent / str(setting.get("config", base_config))).resolve()
        if not config.is_file():
            raise InputError(f"{where}.config: file not found: {config}")
        own = _overrides(f"{where}.overrides", setting.get("overrides"))
        own_seeds = _seeds(f"{where}.seeds", setting["seeds"]) if "seeds" in setting else study_seeds
        teacher = setting.get("teacher")
        by_setting[name] = {}
        for seed in own_seeds:
            run_name = f"{name}_seed{seed}"
            overrides = [*common, *own, f"train.seed={seed}", f"name={run_name}", f"out_dir={target}"]
            depends: list[str] = []
            if teacher is not None:
                teacher_runs = by_setting[teacher]
                if len(teacher_runs) == 1:
                    teacher_run = next(iter(teacher_runs.values()))
                elif seed in teacher_runs:
                    teacher_run = teacher_runs[seed]
                else:
                    raise InputError(
                        f"{where}.teacher: teacher setting {teacher!r} has seeds "
                        f"{sorted(teacher_runs)}, none for seed {seed} (give it one seed or these seeds)"
                    )
                ckpt = setting.get("teacher_checkpoint", "best.pt")
                # the teacher is the model that run trained (a student of a chain may differ from teacher.name)
                teacher_model, teacher_kwargs = model_of[teacher_run.name]
                overrides += [
                    f"teacher.name={teacher_model}",
                    format_override("teacher.kwargs", teacher_kwargs),
                    f"teacher.checkpoint={teacher_run.run_dir / ckpt}",
                ]
                depends.append(teacher_run.name)
            try:
                if teacher is not None:
                    kind = apply_overrides(load_yaml(config), overrides[:-1]).get("kind")
                    if kind not in teacher_kinds():
                        raise InputError(
                            f"teacher: the setting's config is a '{kind}' run; "
                            f"only {', '.join(repr(k) for k in teacher_kinds())} runs take a teacher"
                        )
                    key = get_task(kind).teacher_checkpoint_key
                    if key is not None:  # where the task reads a teacher run's gkl checkpoint (e.g. 'model')
                        overrides.append(f"teacher.checkpoint_key={key}")
                cfg = load_config(config, overrides)
            except (InputError, ValueError, FileNotFoundError) as err:
                raise InputError(f"{where}: {err}") from None
            if name not in paper:
                evaluation = _evaluation(where, setting, study_evaluation, cfg)
                if evaluation is not None:
                    evaluations[name] = evaluation
                paper[name] = check_paper(where, setting.get("paper"), get_task(cfg.kind), evaluation)
            spec = RunSpec(
                setting=name,
                seed=seed,
                name=run_name,
                run_dir=target / run_name,
                command=get_task(cfg.kind).command,
                config=config,
                overrides=overrides,
                depends_on=depends,
                resolved=cfg,
            )
            by_setting[name][seed] = spec
            model_of[run_name] = (cfg.model.name, dict(cfg.model.kwargs))
            runs.append(spec)
    return Study(
        path=path,
        name=path.stem,
        out_dir=target,
        baseline=baseline,
        settings=[n for n in settings if n in chosen],
        runs=runs,
        source=source,
        paper={k: v for k, v in paper.items() if v},
        evaluations=evaluations,
        subset=subset,
    )


def _evaluation(where: str, setting: dict[str, Any], study: StudyEvaluation | None, cfg: Any) -> StudyEvaluation | None:
    """The setting's ``evaluate:`` (its own, ``null`` for none, else the study's), checked against its run."""
    from gkl.tasks import get_task

    evaluation = parse_evaluation(f"{where}.evaluate", setting["evaluate"]) if "evaluate" in setting else study
    if evaluation is None:
        return None
    owner = f"{where}.evaluate" if "evaluate" in setting else f"{where} (the study's evaluate)"
    task = get_task(cfg.kind)
    if not task.robust_evaluation:
        raise InputError(
            f"{owner}: a '{cfg.kind}' run has no robust evaluation (gkl evaluate --robust attacks classifier runs); "
            "give this setting 'evaluate: null'"
        )
    if cfg.data.normalize:
        raise InputError(
            f"{owner}: robust evaluation needs inputs in [0, 1] with normalisation inside the model; "
            "this setting's runs use data.normalize=true"
        )
    return evaluation
