"""Build a CLIP run (kinds ``clip_train`` and ``clip_distill``) for the one engine; export and evaluate it.

* models by OpenCLIP name (``model.name``, ``teacher.name``), weights only from local files
  (``model.checkpoint`` optional initial weights, ``teacher.checkpoint`` the teacher); the
  teacher is frozen in eval mode by its objective;
* OpenCLIP's tokenizer and image transforms of the student;
* image-text pairs from a caption CSV/TSV, webdataset shards or the bundled digits
  (``clip_data``), an optional stratified validation split of the digits (``data.val_fraction``);
* objective: OpenCLIP's contrastive loss (``clip_train``) or :class:`ClipDistillObjective`;
* evaluation: zero-shot top-1/top-5 and/or retrieval recall@K (``clip_eval``).

A finished run writes ``openclip.pt`` (the weights of ``best.pt``, else of the last
checkpoint), which ``open_clip.create_model(name, pretrained=PATH)`` loads.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader, Subset

from gkl.data import build_loader
from gkl.data.sharding import derive_seed
from gkl.metrics.clip import ClipEvalSet, ClipEvaluator
from gkl.tasks.parts import RunParts, warn_if_random_teacher
from gkl.utils.distributed import DistInfo
from gkl.utils.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "build_clip_parts",
    "build_clip_model",
    "clip_analysis",
    "export_openclip",
    "evaluate_clip_run",
    "OPENCLIP_FILE",
    "ZeroShotHead",
]

OPENCLIP_FILE = "openclip.pt"


def build_clip_model(cfg: Any, what: str, *, weights_follow: bool = False) -> nn.Module:
    """An OpenCLIP model by name with ``checkpoint`` loaded (a plain OpenCLIP file, or ``checkpoint_key``'s entry);
    ``weights_follow``: the caller loads weights next (OpenCLIP's "initialized randomly" warning is silenced)."""
    if getattr(cfg, "pretrained", None) is not None:
        raise InputError(f"{what}.pretrained: expected null for an OpenCLIP model (its weights are {what}.checkpoint)")
    from gkl.models.clip import create_clip

    if cfg.checkpoint is not None and cfg.checkpoint_key is not None:
        from gkl.models import load_weights

        model = create_clip(cfg.name, what=what, weights_follow=True, **cfg.kwargs)
        try:
            load_weights(model, cfg.checkpoint, key=cfg.checkpoint_key)
        except FileNotFoundError:
            raise InputError(f"{what}.checkpoint: weight file {cfg.checkpoint!r} does not exist") from None
        return model
    return create_clip(cfg.name, pretrained=cfg.checkpoint, what=what, weights_follow=weights_follow, **cfg.kwargs)


def _check_same_inputs(student: nn.Module, teacher: nn.Module, cfg: Any) -> None:
    """Student and teacher see one batch: same image preprocessing and caption context length."""
    import open_clip

    s_pre, t_pre = open_clip.get_model_preprocess_cfg(student), open_clip.get_model_preprocess_cfg(teacher)
    keys = ("size", "mean", "std", "interpolation", "resize_mode")
    differs = [k for k in keys if s_pre.get(k) != t_pre.get(k)]
    s_ctx, t_ctx = getattr(student, "context_length", None), getattr(teacher, "context_length", None)
    if s_ctx != t_ctx:
        differs.append(f"context_length ({s_ctx} vs {t_ctx})")
    if differs:
        raise InputError(
            f"teacher.name: {cfg.teacher.name!r} and model.name {cfg.model.name!r} need different "
            f"inputs ({', '.join(map(str, differs))}); the runner feeds both the student's batch, "
            "so choose a teacher with the student's image preprocessing and tokenizer"
        )


def _zeroshot_parts(cfg: Any, transform: Any, tokenizer: Any):
    """(ZeroShotEvaluator, test set) of ``clip_eval.zeroshot`` ('digits' or an ImageFolder folder)."""
    from gkl.data.image_text import DIGIT_NAMES, DIGIT_TEMPLATES, LabelledDigits
    from gkl.metrics.zeroshot import ZeroShotEvaluator, folder_classnames, imagenet_templates

    ev = cfg.clip_eval
    assert ev is not None and ev.zeroshot is not None
    if ev.zeroshot == "digits":
        dataset: Any = LabelledDigits(False, transform=transform)
        names = list(DIGIT_NAMES)
    else:
        from torchvision.datasets import ImageFolder

        folder = Path(ev.zeroshot)
        if not folder.is_dir():
            raise InputError(
                f"clip_eval.zeroshot: {str(folder)!r} is not a folder of class folders (ImageFolder layout)"
            )
        try:
            dataset = ImageFolder(str(folder), transform=transform)
        except (FileNotFoundError, RuntimeError) as err:
            raise InputError(f"clip_eval.zeroshot: {str(folder)!r}: {err}") from None
        names = folder_classnames(dataset.classes)
    if ev.classnames is not None:
        path = Path(ev.classnames)
        if not path.is_file():
            raise InputError(f"clip_eval.classnames: file {str(path)!r} does not exist")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        count = len(getattr(dataset, "classes", DIGIT_NAMES))
        if len(names) != count:
            raise InputError(
                f"clip_eval.classnames: {str(path)!r} has {len(names)} names, the zero-shot set "
                f"{ev.zeroshot!r} has {count} classes"
            )
    templates: Sequence[Any] = DIGIT_TEMPLATES if ev.templates == "digits" else imagenet_templates(ev.templates)
    return ZeroShotEvaluator(names, templates, tokenizer), dataset


class _WebdatasetLoader:
    """Batches of a resampled webdataset stream: ``len`` = samples_per_epoch // global batch; ``set_epoch`` reseeds."""

    def __init__(self, cfg: Any, transform: Any, tokenizer: Any, dist: DistInfo) -> None:
        from gkl.data.image_text import expand_shards

        self.cfg, self.transform, self.tokenizer, self.dist = cfg, transform, tokenizer, dist
        expand_shards(cfg.clip_data.train)  # a missing local shard is an error now, not in a worker
        self.batch_size = cfg.data.batch_size
        self.steps = max(1, cfg.clip_data.samples_per_epoch // (self.batch_size * dist.world_size))
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        from gkl.data.image_text import webdataset_pairs

        seed = derive_seed(self.cfg.train.seed, epoch, self.dist.rank, "workers") % (2**31)
        pipeline = webdataset_pairs(
            self.cfg.clip_data.train,
            transform=self.transform,
            tokenizer=self.tokenizer,
            shuffle=self.cfg.clip_data.shuffle_buffer,
            seed=seed,
            resampled=True,
        )
        self.loader = DataLoader(
            pipeline,
            batch_size=self.batch_size,
            num_workers=self.cfg.data.num_workers,
            drop_last=True,
            pin_memory=self.dist.device.type == "cuda",
        )

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i >= self.steps:
                return
            yield batch


def _train_pairs(cfg: Any, transform: Any, tokenizer: Any):
    """(training pairs, validation zero-shot set or None) of ``clip_data``."""
    from gkl.data.image_text import CaptionCsv, CaptionedDigits

    data = cfg.clip_data
    assert data is not None
    if data.format == "csv":
        return CaptionCsv(
            data.train,
            transform=transform,
            tokenizer=tokenizer,
            image_key=data.image_key,
            caption_key=data.caption_key,
            separator=data.separator,
        ), None
    pairs = CaptionedDigits(True, transform=transform, tokenizer=tokenizer)
    split = digits_validation_split(cfg, pairs.labels)
    if split is None:
        return pairs, None
    train_idx, val_idx = split
    return Subset(pairs, train_idx.tolist()), val_idx


def digits_validation_split(cfg: Any, labels: Any) -> tuple[Any, Any] | None:
    """(training indices, validation indices) of the bundled digits' training ``labels`` under
    ``data.val_fraction`` (stratified, ``data.val_seed``), or None without a validation split."""
    if cfg.data.val_fraction <= 0:
        return None
    from gkl.data.splits import stratified_split

    return stratified_split(labels, cfg.data.val_fraction, cfg.data.val_seed, num_classes=10)


def _check_files(cfg: Any) -> None:
    """Every named input file exists (before any model is built: a ViT-L takes a while)."""
    named = [("model.checkpoint", cfg.model.checkpoint), ("teacher.checkpoint", cfg.teacher and cfg.teacher.checkpoint)]
    if cfg.clip_data.format == "csv":
        named.append(("clip_data.train", cfg.clip_data.train))
    if cfg.clip_eval is not None:
        named.append(("clip_eval.retrieval", cfg.clip_eval.retrieval))
    for key, path in named:
        if path is not None and not Path(path).is_file():
            raise InputError(f"{key}: file {str(path)!r} does not exist")


def build_clip_parts(cfg: Any, dist: DistInfo) -> RunParts:
    """Model, loaders, objective and evaluator of a CLIP run on this process: the contrastive loss, or
    distillation from ``teacher`` with the ``clip_distill`` settings when the config has a teacher."""
    from gkl.models.clip import create_tokenizer, image_transform
    from gkl.objectives.clip_distill import ClipContrastiveObjective, ClipDistillObjective

    _check_files(cfg)
    model = build_clip_model(cfg.model, "model")
    tokenizer = create_tokenizer(cfg.model.name)
    train_tf, eval_tf = image_transform(model, train=True), image_transform(model, train=False)
    if cfg.teacher is not None:  # the distilling CLIP task requires one, the other refuses one (their checks)
        assert cfg.clip_distill is not None  # filled in by the config
        warn_if_random_teacher(cfg.teacher)
        teacher = build_clip_model(cfg.teacher, "teacher")
        _check_same_inputs(model, teacher, cfg)
        objective: Any = ClipDistillObjective(teacher, cfg.clip_distill, rank=dist.rank, world_size=dist.world_size)
    else:
        objective = ClipContrastiveObjective(rank=dist.rank, world_size=dist.world_size)

    data = cfg.data
    common = dict(
        device=dist.device,
        num_workers=data.num_workers,
        seed=cfg.train.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    val_idx = None
    if cfg.clip_data.format == "webdataset":
        train_loader: Any = _WebdatasetLoader(cfg, train_tf, tokenizer, dist)
    else:
        pairs, val_idx = _train_pairs(cfg, train_tf, tokenizer)
        if len(pairs) < data.batch_size * dist.world_size:
            raise InputError(
                f"data.batch_size: {data.batch_size} per process x {dist.world_size} processes is more "
                f"than the {len(pairs)} training pairs"
            )
        train_loader = build_loader(pairs, batch_size=data.batch_size, train=True, **common)

    evaluator, eval_set, val_set = _evaluation(cfg, eval_tf, tokenizer, val_idx, common)
    return RunParts(
        model,
        objective,
        train_loader,
        eval_set,
        evaluator=evaluator,
        val_loader=val_set,
        after_fit=lambda summary: export_openclip(cfg.run_dir),
    )


def _evaluation(cfg: Any, eval_tf: Any, tokenizer: Any, val_idx: Any, common: dict[str, Any]):
    """(ClipEvaluator, eval split, val split) of ``clip_eval``; (None, None, None) without one."""
    ev = cfg.clip_eval
    if ev is None or (ev.zeroshot is None and ev.retrieval is None):
        return None, None, None
    batch = cfg.data.eval_batch_size
    zeroshot = retrieval = None
    eval_set, val_set = ClipEvalSet(), None
    if ev.zeroshot is not None:
        zeroshot, test = _zeroshot_parts(cfg, eval_tf, tokenizer)
        eval_set.zeroshot = build_loader(test, batch_size=batch, train=False, **common)
        if val_idx is not None:
            from gkl.data.image_text import LabelledDigits

            held_out = Subset(LabelledDigits(True, transform=eval_tf), val_idx.tolist())
            val_set = ClipEvalSet(zeroshot=build_loader(held_out, batch_size=batch, train=False, **common))
    if ev.retrieval is not None:
        from gkl.data.image_text import CaptionCsv
        from gkl.metrics.retrieval import RetrievalEvaluator

        data = cfg.clip_data
        captions = CaptionCsv(
            ev.retrieval,
            transform=eval_tf,
            tokenizer=tokenizer,
            image_key=data.image_key,
            caption_key=data.caption_key,
            separator=data.separator,
        )
        retrieval = RetrievalEvaluator()
        eval_set.retrieval = DataLoader(captions, batch_size=batch, shuffle=False, num_workers=cfg.data.num_workers)
    return ClipEvaluator(zeroshot, retrieval), eval_set, val_set


def export_openclip(run_dir: Path) -> Path | None:
    """Write ``run_dir/openclip.pt`` from best.pt (else checkpoint.pt) for ``open_clip.create_model``."""
    from gkl.models.clip import export_run_checkpoint

    run_dir = Path(run_dir)
    for name in ("best.pt", "checkpoint.pt"):
        if (run_dir / name).is_file():
            out = export_run_checkpoint(run_dir / name, run_dir / OPENCLIP_FILE)
            log.info("OpenCLIP weights (%s) written to %s", name, out)
            return out
    return None


def evaluate_clip_run(
    cfg: Any, run_dir: Path, paths: dict[str, Path], *, weights: str, overrides: Sequence[str] = (), robust: Any = None
) -> tuple[dict[str, Any], str]:
    """``gkl evaluate`` of a CLIP run: zero-shot (and retrieval) metrics of each checkpoint in ``paths``
    (existing files: :func:`gkl.evaluate.run_eval.evaluate_run` checks them)."""
    from gkl.models import load_run_weights
    from gkl.models.clip import create_tokenizer, image_transform
    from gkl.utils.distributed import resolve_device

    if cfg.clip_eval is None or (cfg.clip_eval.zeroshot is None and cfg.clip_eval.retrieval is None):
        raise InputError(
            f"{run_dir}: the run has no clip_eval.zeroshot or clip_eval.retrieval to evaluate "
            "(set one as an override, e.g. clip_eval.zeroshot=/data/imagenet/val)"
        )
    device = resolve_device(cfg.train.device)
    # the run's weights are loaded below: OpenCLIP's "initialized randomly" would be a false warning
    model = build_clip_model(
        dataclasses.replace(cfg.model, checkpoint=None, checkpoint_key=None), "model", weights_follow=True
    )
    tokenizer = create_tokenizer(cfg.model.name)
    common = dict(device=device, num_workers=cfg.data.num_workers, seed=cfg.train.seed, rank=0, world_size=1)
    evaluator, eval_set, _ = _evaluation(cfg, image_transform(model, train=False), tokenizer, None, common)
    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "kind": "clip",
        "model": cfg.model.name,
        "weights": weights,
        "overrides": list(overrides),
        "results": {},
    }
    keys = cfg.clip_eval.metrics()
    lines = [f"{'checkpoint':<10} {'epoch':>5} " + " ".join(f"{k:>13}" for k in keys)]
    for name, path in paths.items():
        epoch = load_run_weights(model, path, which=name, weights=weights)
        model.to(device)
        metrics = evaluator(model, eval_set, device=device, dist=None)
        entry = {"epoch": epoch, "clean": metrics}
        report["results"][name] = entry
        lines.append(
            f"{name:<10} {entry['epoch'] if entry['epoch'] is not None else '-':>5} "
            + " ".join(f"{metrics[k]:>13.2f}" if k in metrics else f"{'-':>13}" for k in keys)
        )
    return report, "\n".join(lines)


class ZeroShotHead(nn.Module):
    """Images -> CLIP's image-text logits over the class prompts: ``logit_scale`` times the cosine
    similarity of the image embedding to each class's mean prompt embedding (OpenCLIP's zero-shot
    classifier, :func:`gkl.metrics.zeroshot.zero_shot_classifier`)."""

    def __init__(self, clip: nn.Module, classifier: Any) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("classifier", classifier.float())

    def embed(self, images: Any) -> Any:
        return self.clip.encode_image(images, normalize=True).float()  # type: ignore[operator]

    def logits(self, embeddings: Any) -> Any:
        return self.clip.logit_scale.exp().float() * embeddings @ self.classifier  # type: ignore[operator]

    def forward(self, images: Any) -> Any:
        return self.logits(self.embed(images))


def clip_analysis(cfg: Any, checkpoint: Path, device: Any, *, attack: bool = False) -> Any:
    """``gkl analyze``'s view of a CLIP run (:class:`gkl.tasks.analysis.AnalysisView`): the zero-shot set of
    ``clip_eval.zeroshot``, class scores = the image-text logits over its class prompts
    (:class:`ZeroShotHead`), features = the normalised image embeddings. PGD does not apply: OpenCLIP's
    transform normalises the images."""
    import torch

    from gkl.metrics.zeroshot import zero_shot_classifier
    from gkl.models import load_weights
    from gkl.models.clip import create_tokenizer, image_transform
    from gkl.tasks.analysis import AnalysisView

    if attack:
        raise InputError(
            f"{Path(checkpoint).parent}: --adversarial needs inputs in [0, 1]; OpenCLIP's transform "
            "normalises this run's images"
        )
    if cfg.clip_eval is None or cfg.clip_eval.zeroshot is None:
        raise InputError(
            f"{Path(checkpoint).parent}: gkl analyze needs class prompts, and the run has no clip_eval.zeroshot "
            "(its evaluation is retrieval only)"
        )
    # the run's weights are loaded next: OpenCLIP's "initialized randomly" would be a false warning
    clip = build_clip_model(
        dataclasses.replace(cfg.model, checkpoint=None, checkpoint_key=None), "model", weights_follow=True
    )
    load_weights(clip, checkpoint)
    clip.to(device).eval()
    tokenizer = create_tokenizer(cfg.model.name)
    zeroshot, dataset = _zeroshot_parts(cfg, image_transform(clip, train=False), tokenizer)
    with torch.no_grad():
        classifier = zero_shot_classifier(clip, tokenizer, zeroshot.classnames, zeroshot.templates, device=device)
    head = ZeroShotHead(clip, classifier).to(device).eval()
    loader = build_loader(
        dataset,
        batch_size=cfg.data.eval_batch_size,
        train=False,
        device=device,
        num_workers=cfg.data.num_workers,
        seed=cfg.train.seed,
    )

    def outputs(images: Any, labels: Any, features: bool) -> Any:
        embeddings = head.embed(images)
        return head.logits(embeddings), labels, embeddings if features else None

    return AnalysisView(
        model=head,
        data=loader,
        outputs=outputs,
        num_classes=len(zeroshot.classnames),
        class_names=list(zeroshot.classnames),
        scores="softmax of the image-text logits over the class prompts",
        features="normalised image embeddings",
    )
