"""Kind ``lm_distill`` (``gkl lm-distill``): token-level distillation of a causal language model
(``lm:`` section, :mod:`gkl.settings.lm`; docs/llm.md).

``model`` / ``teacher``: ``name`` ``gpt2`` or ``llama`` (transformers configs, built without
download; ``kwargs`` are the config's) with the vocabulary and positions of the ``lm:`` data;
``teacher.checkpoint`` a weights file or a gkl run's checkpoint. Method ``ce`` trains without a
teacher (a teacher is then optional and only measured against). Data: blocks of token ids of
``lm.corpus`` (:mod:`gkl.data.text_blocks`); the held-out tail is the evaluation split. Selection:
validation perplexity, lower is better.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gkl.settings.lm import LMSettings
from gkl.settings.teacher import check_teacher
from gkl.tasks.base import Section, Task
from gkl.utils.errors import ConfigError

__all__ = ["TASK"]

_MODEL_NAMES = ("gpt2", "llama")


def check(cfg: Any) -> None:
    lm = cfg.lm
    for section, model in (("model", cfg.model), ("teacher", cfg.teacher)):
        if model is not None and model.name not in _MODEL_NAMES:
            raise ConfigError(f"{section}.name: expected one of {list(_MODEL_NAMES)}, got {model.name!r}")
    if lm.method != "ce":
        check_teacher(cfg.teacher, f"lm.method {lm.method!r}")
        from gkl.lm.token_loss import check_method

        try:
            check_method(lm.method, lm.loss_params)
        except ValueError as err:
            raise ConfigError(f"lm.loss_params: {err}") from None
    elif lm.hard_weight == 0.0:
        raise ConfigError("lm.hard_weight: expected a value > 0 for method 'ce' (the loss is hard_weight * CE), got 0")


def _build_lm(model_cfg: Any, lm: LMSettings, section: str) -> Any:
    from gkl.lm.models import build_causal_lm
    from gkl.models import load_weights
    from gkl.utils.errors import InputError

    if getattr(model_cfg, "pretrained", None) is not None:
        raise InputError(
            f"{section}.pretrained: expected null for a language model (its weights are {section}.checkpoint)"
        )
    model = build_causal_lm(model_cfg.name, lm.vocab_size, lm.block_size, **model_cfg.kwargs)
    if model_cfg.checkpoint is not None:
        try:
            load_weights(model, model_cfg.checkpoint, key=model_cfg.checkpoint_key)
        except FileNotFoundError:
            raise InputError(f"{section}.checkpoint: file not found: {model_cfg.checkpoint}") from None
    return model


def _teacher(cfg: Any) -> Any:
    if cfg.teacher is None:
        return None
    from gkl.tasks.parts import warn_if_random_teacher

    warn_if_random_teacher(cfg.teacher)
    return _build_lm(cfg.teacher, cfg.lm, "teacher")


def _loaders(cfg: Any) -> tuple[Any, Any]:
    from gkl.data.text_blocks import TokenBlockLoader, tokenize_corpus

    lm = cfg.lm
    train_ids, eval_ids = tokenize_corpus(lm.corpus, lm.vocab_size, lm.eval_fraction)
    train = TokenBlockLoader(train_ids, lm.block_size, cfg.data.batch_size, seed=cfg.train.seed, shuffle=True)
    evaluation = TokenBlockLoader(eval_ids, lm.block_size, cfg.data.eval_batch_size, seed=0, shuffle=False)
    return train, evaluation


def build(cfg: Any, dist: Any) -> Any:
    from gkl.metrics.language_model import LanguageModelEvaluator
    from gkl.objectives.token_distill import TokenDistillObjective
    from gkl.tasks.parts import RunParts

    if dist is not None and getattr(dist, "distributed", False):  # the engine wraps the model in DDP then
        raise ConfigError("train: the language-model task runs in one process (no torchrun) in this version")
    train, evaluation = _loaders(cfg)
    model = _build_lm(cfg.model, cfg.lm, "model")
    teacher = _teacher(cfg)
    objective = TokenDistillObjective(None if cfg.lm.method == "ce" else teacher, cfg.lm)
    if teacher is not None:  # with method ce the teacher is only measured against
        teacher.requires_grad_(False).eval()
    info = SimpleNamespace(name=cfg.lm.corpus, num_classes=cfg.lm.vocab_size, class_groups=None)
    evaluator = LanguageModelEvaluator(teacher)
    return RunParts(model, objective, train, evaluation, info, evaluator=evaluator)


def evaluate(cfg: Any, run_dir: Any, paths: Any, *, weights: str, overrides: Any = (), robust: Any = None) -> Any:
    from gkl.metrics.language_model import LanguageModelEvaluator
    from gkl.models import load_run_weights

    _, evaluation = _loaders(cfg)
    teacher = _teacher(cfg)
    if teacher is not None:
        teacher.requires_grad_(False).eval()
    evaluator = LanguageModelEvaluator(teacher)
    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "kind": cfg.kind,
        "weights": weights,
        "overrides": list(overrides),
        "results": {},
    }
    lines = ["checkpoint   perplexity   kl_to_teacher"]
    for name, path in paths.items():
        model = _build_lm(cfg.model, cfg.lm, "model")
        epoch = load_run_weights(model, path, which=name, weights=weights)
        metrics = evaluator(model, evaluation, device="cpu")
        report["results"][name] = {"epoch": epoch, "clean": metrics}
        kl = metrics.get("kl_to_teacher")
        lines.append(f"{name:<10} {metrics['perplexity']:12.4f}   {'-' if kl is None else f'{kl:.5f}'}")
    return report, "\n".join(lines)


TASK = Task(
    name="lm_distill",
    command="lm-distill",
    help="distill a causal language model token by token (CE, KL, reverse KL, JSD, DKL, IKL, GKL)",
    sections=(Section("lm", LMSettings | None, fill=LMSettings, help="the method, its weights and the token data"),),
    teacher="optional",
    select_metric="perplexity",
    select_mode="min",
    summary_metrics=("kl_to_teacher",),
    registry_names=False,
    check=check,
    build=build,
    evaluate=evaluate,
    evaluation="perplexity / token KL to the teacher",
)
