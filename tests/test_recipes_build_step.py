"""Every recipe under configs/ (and every setting of every study) built and stepped at a tiny size.

For each YAML file (found by walking configs/, so recipes added later are covered) the test loads
it as the command would, points it at small files written here in the real layout (CIFAR pickles,
ImageNet / ImageNet-LT folders, ADE20K / Cityscapes folders, a webdataset shard and a zero-shot
folder) and at tiny weight files for the teacher, the backbone or the pretrained model it names,
builds the run's parts with the runner (model, loaders, objective, evaluator: ``task.build``),
takes one optimizer step on one training batch and evaluates once (the run's evaluator, end to end, on
the first batch of its evaluation loader). A study contributes each of its settings (first seed). The
step must be finite and change the weights; the evaluation must return the run's
``train.select_metric``, finite.

A model whose weights a strict checkpoint load then replaces (a teacher) skips its random
initialisation here (``_no_init_before_strict_load``); the first build of each architecture is
compared with the normal build, every parameter, buffer and tensor attribute.

Tiny size: batch 2, crops of 64 px for segmentation; models too large for a 2-core test are
replaced by a smaller one of the same input kind and head (``SMALLER``; the architectures
themselves are checked elsewhere, e.g. tests/test_models_reference_logits.py): the step and
evaluation code of the recipe is what runs.
"""

from __future__ import annotations

import contextlib
import io
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gkl.config import load_config
from gkl.doctor.runs import first_batches
from gkl.utils.distributed import DistInfo
from optional_skips import skip_if_optional_missing

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

#: models replaced by a cheaper one with the same input kind and output (name -> (name, kwargs))
SMALLER: dict[str, tuple[str, dict]] = {
    "wrn34_10": ("wrn16_4_robust", {}),
    "wrn28_10": ("wrn16_4_robust", {}),
    "pspnet_resnet101": ("pspnet_resnet18", {"stem": "deep"}),
    "imagenet_resnext101_32x8d": ("imagenet_resnet18", {}),
    "imagenet_resnext101_32x4d": ("imagenet_resnet18", {}),
    "imagenet_resnet152": ("imagenet_resnet18", {}),
    "imagenet_resnet50": ("imagenet_resnet18", {}),
    "imagenet_resnet34": ("imagenet_resnet18", {}),
    "ViT-L-14": ("gkl-tiny-clip-teacher", {}),
    "ViT-B-16": ("gkl-tiny-clip-student", {}),
    "vit_small_patch2_32": ("vit_tiny_patch2_32", {}),
    "wrn_28_8": ("wrn_16_1", {}),
    "wrn_40_6": ("wrn_16_2", {}),
}


def _recipe_files() -> list[Path]:
    return sorted(p for p in CONFIGS.rglob("*.yaml") if not p.name.startswith("_"))


def _cases() -> list[tuple[str, Path]]:
    """(id, file): every recipe and every study file (a study's settings are stepped in its case)."""
    return [(p.relative_to(CONFIGS).with_suffix("").as_posix(), p) for p in _recipe_files()]


#: the keys whose value selects code (a method, an algorithm, a loss): study settings that differ
#: only in other values (a finite temperature, a weight, a seed, the run name) run the same code and
#: are stepped once; an infinite temperature selects its own code (the T -> inf limit)
_TAGS = ("method", "algorithm", "consistency", "kd_term", "kind", "noise", "label_noise", "name")


def _study_runs(path: Path) -> list[tuple[str, Path, tuple[str, ...]]]:
    """The settings of the study at ``path`` that select code of their own: a setting whose config is a
    recipe under configs/ (a case of its own) and whose overrides select nothing (no tag, no τ = ∞) runs
    the code of that recipe's case and is not stepped again."""
    from gkl.study.study_file import load_study

    specs = load_study(path, out_dir="/nonexistent-study-out").runs
    assert specs, path
    runs, seen, bases = [], set(_recipe_files()), {}
    for spec in specs:
        if spec.config not in bases:  # the settings of a study share a few configs: each is loaded once
            bases[spec.config] = load_config(spec.config)
        base = bases[spec.config]
        tagged = tuple(
            sorted(
                o
                for o in spec.overrides
                if "." in o.split("=", 1)[0]
                and (o.split("=", 1)[0].split(".")[-1] in _TAGS or o.endswith("=.inf"))
                and not _same_as(base, o)
            )
        )
        key = Path(spec.config).resolve() if not tagged else (spec.config, tagged)
        if key not in seen:
            seen.add(key)
            runs.append((spec.setting, spec.config, tuple(spec.overrides)))
    return runs


def _same_as(cfg, override: str) -> bool:
    """Whether ``key=value`` sets what the config already holds (a teacher chain naming the recipe's own
    teacher architecture selects no new code)."""
    key, value = override.split("=", 1)
    node = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
    return node is not None and str(node) == str(yaml.safe_load(value))


CASES = _cases()


# ----------------------------------------------------------------------------- data in the real layouts


def _jpeg(path: Path, shade: int, size: tuple[int, int] = (40, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(shade)
    pixels = np.clip(shade + rng.integers(-30, 30, (*size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)


def _png(path: Path, array: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode).save(path)


WNIDS = ["n01440764", "n01443537", "n01484850"]


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from test_data_cifar import write_cifar10, write_cifar100

    base = tmp_path_factory.mktemp("recipe_data")
    _WEIGHTS_DIR[:] = [tmp_path_factory.mktemp("recipe_weights")]
    rng = np.random.default_rng(0)

    def images(n: int) -> np.ndarray:
        return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)

    cifar = base / "cifar"
    # 3 training images per CIFAR-100 class: the SSL recipes take 2 labelled images per class
    write_cifar100(str(cifar), images(300), np.arange(300) % 100, images(6), np.arange(6))
    write_cifar10(str(cifar), images(20), np.arange(20) % 10, images(6), np.arange(6))

    generated = base / "generated.npz"  # generated images in the layout the AT recipes read
    np.savez(generated, image=images(8), label=np.arange(8) % 10)

    imagenet = base / "imagenet"
    for split, count in (("train", 2), ("val", 1)):
        for c, wnid in enumerate(WNIDS):
            for k in range(count):
                _jpeg(imagenet / split / wnid / f"{wnid}_{k}.JPEG", 40 + 80 * c)

    lt = base / "imagenet_lt"
    for split, count in (("train", 2), ("val", 1), ("test", 1)):
        rows = []
        for c, wnid in enumerate(WNIDS):
            for k in range(count):
                rel = f"{split}/{wnid}/{wnid}_{split}{k}.JPEG"
                _jpeg(lt / rel, 40 + 80 * c)
                rows.append(f"{rel} {c}")
        (lt / f"ImageNet_LT_{split}.txt").write_text("\n".join(rows) + "\n")

    ade = base / "ade20k" / "ADEChallengeData2016"
    for split, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        for k in range(2):
            _png(ade / "images" / split / f"{prefix}_{k:08d}.jpg", rng.integers(0, 256, (70, 80, 3)), "RGB")
            _png(ade / "annotations" / split / f"{prefix}_{k:08d}.png", rng.integers(0, 151, (70, 80)), "L")

    city = base / "cityscapes"
    for split, town in (("train", "aachen"), ("val", "lindau")):
        for k in range(2):
            stem = f"{town}_{k:06d}_000019"
            _png(
                city / "leftImg8bit" / split / town / f"{stem}_leftImg8bit.png",
                rng.integers(0, 256, (64, 128, 3)),
                "RGB",
            )
            _png(
                city / "gtFine" / split / town / f"{stem}_gtFine_labelTrainIds.png", rng.integers(0, 19, (64, 128)), "L"
            )

    shards = base / "shards"
    shards.mkdir()
    with tarfile.open(shards / "shard-000.tar", "w") as tar:
        for i in range(6):
            buffer = io.BytesIO()
            Image.new("RGB", (20, 20), (40 * i, 10, 200 - 30 * i)).save(buffer, format="PNG")
            for ext, payload in (("png", buffer.getvalue()), ("txt", f"a photo of thing {i}".encode())):
                info = tarfile.TarInfo(f"{i:04d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    zeroshot = base / "zeroshot"
    for c, wnid in enumerate(WNIDS):
        _jpeg(zeroshot / wnid / f"{wnid}_0.JPEG", 40 + 80 * c)
    return {"base": base, "cifar": cifar, "imagenet": imagenet, "imagenet_lt": lt, "ade20k": base / "ade20k",
            "cityscapes": city, "shards": shards, "zeroshot": zeroshot, "generated": generated}  # fmt: skip


# ----------------------------------------------------------------------------- overrides and weight files


def _data_overrides(cfg, roots: dict[str, Path]) -> list[str]:
    data = cfg.data.name
    out = ["data.batch_size=2", "data.num_workers=0"]
    if data in ("cifar10", "cifar100"):
        out += [f"data.root={roots['cifar']}", "data.eval_batch_size=2"]
    elif data in ("imagenet", "imagenet_lt"):
        out += [f"data.root={roots[data]}", "data.eval_batch_size=2"]
    elif data in ("ade20k", "cityscapes"):
        out += [
            f"data.root={roots[data]}",
            "data.eval_batch_size=1",
            "segmentation.augment.crop_size=64",
            "segmentation.eval={mode: slide, crop_size: 64, base_size: 64, flip: false}",
        ]
    elif getattr(cfg, "lm", None) is not None:  # the corpus ships with Python; evaluation blocks of 2 too
        out += ["data.eval_batch_size=2"]
    elif not cfg.kind.startswith("clip"):  # bundled sets (digits, mnist1d, digit scenes); CLIP reads clip_data
        out += [f"data.root={roots['base'] / 'bundled'}"]
    if cfg.data.name == "digit_scenes":  # the bundled task generates just these scenes
        out += ["segmentation.train_size=10", "segmentation.eval_size=2"]
    if getattr(cfg.data, "generated_path", None):
        out += [f"data.generated_path={roots['generated']}"]
    if cfg.kind.startswith("clip") and getattr(cfg, "clip_data", None) is not None:
        if cfg.clip_data.format == "webdataset":
            out += [
                f"clip_data.train={roots['shards'] / 'shard-{000..000}.tar'}",
                "clip_data.samples_per_epoch=4",
                "clip_data.shuffle_buffer=2",
                "data.val_fraction=0",
            ]
        if cfg.clip_eval is not None and cfg.clip_eval.zeroshot not in (None, "digits"):
            out += [f"clip_eval.zeroshot={roots['zeroshot']}", "clip_eval.templates=simple"]
    return out


def _model_overrides(cfg, section: str) -> list[str]:
    model = getattr(cfg, section, None)
    if model is None or model.name not in SMALLER:
        return []
    name, kwargs = SMALLER[model.name]
    kept = {k: v for k, v in model.kwargs.items() if k == "backbone_checkpoint"}
    return [
        f"{section}.name={name}",
        f"{section}.kwargs={yaml.safe_dump({**kept, **kwargs}, default_flow_style=True).strip()}",
    ]


_WEIGHT_FILES: dict[tuple, Path] = {}


def _weights_file(cfg, section: str, num_classes: int) -> list[str]:
    """Tiny weight files for what the recipe loads: ``<section>.checkpoint`` in the layout its loader
    reads (a community ``{"model": ...}`` file, a plain OpenCLIP state_dict, or a run's
    ``{checkpoint_key: ...}``), ``<section>.pretrained`` in USB's layout (1000-class head), and a
    PSPNet's ``backbone_checkpoint`` (a ResNet state_dict with the deep stem's conv1..3 / bn1..3
    names). Written once per model and reused (module cache)."""
    model = getattr(cfg, section, None)
    if model is None:
        return []
    name, kwargs = SMALLER.get(model.name, (model.name, {k: v for k, v in model.kwargs.items()}))
    kwargs = {k: v for k, v in kwargs.items() if k != "backbone_checkpoint"}
    out = []
    if model.kwargs.get("backbone_checkpoint") is not None:
        backbone = _cached(("backbone", name, repr(kwargs)), _backbone_file, name, kwargs)
        out.append(f"{section}.kwargs.backbone_checkpoint={backbone}")
    if getattr(model, "pretrained", None) is not None:
        pretrained = _cached(("pretrained", name, repr(kwargs)), _usb_pretrained_file, name, kwargs)
        out.append(f"{section}.pretrained={pretrained}")
    if model.checkpoint is not None:
        key = ("weights", cfg.kind, name, repr(kwargs), num_classes, model.checkpoint_key)
        out.append(
            f"{section}.checkpoint={_cached(key, _model_file, cfg, name, kwargs, num_classes, model.checkpoint_key)}"
        )
    return out


def _cached(key: tuple, write, *args) -> Path:
    if key not in _WEIGHT_FILES or not _WEIGHT_FILES[key].is_file():
        path = Path(_WEIGHTS_DIR[0]) / f"w{len(_WEIGHT_FILES)}.pth"
        write(path, *args)
        _WEIGHT_FILES[key] = path
    return _WEIGHT_FILES[key]


_WEIGHTS_DIR: list[Path] = []


def _model_file(path: Path, cfg, name: str, kwargs: dict, num_classes: int, checkpoint_key: str | None) -> None:
    from gkl.models import create_model

    if getattr(cfg, "lm", None) is not None:  # a causal language model (the lm section sets its sizes)
        from gkl.lm.models import build_causal_lm

        net = build_causal_lm(name, cfg.lm.vocab_size, cfg.lm.block_size, **kwargs)
        torch.save({checkpoint_key or "model": net.state_dict()}, path)
    elif cfg.kind.startswith("clip"):
        from gkl.models.clip import create_clip

        state = {k: v.detach() for k, v in create_clip(name, **kwargs).state_dict().items()}
        torch.save({checkpoint_key: state} if checkpoint_key is not None else state, path)
    else:
        torch.save({checkpoint_key or "model": create_model(name, num_classes, **kwargs).state_dict()}, path)


def _usb_pretrained_file(path: Path, name: str, kwargs: dict) -> None:
    """USB's pretrained ViT layout: ``{"model": state_dict}`` with a 1000-class ImageNet head."""
    from gkl.models import create_model

    torch.save({"model": create_model(name, 1000, **kwargs).state_dict()}, path)


def _backbone_file(path: Path, name: str, kwargs: dict) -> None:
    from gkl.models import create_model

    net = create_model(name, 2, **kwargs)
    inverse = {"layer0.0.": "conv1.", "layer0.1.": "bn1."}
    if kwargs.get("stem") == "deep":
        inverse.update({"layer0.3.": "conv2.", "layer0.4.": "bn2.", "layer0.6.": "conv3.", "layer0.7.": "bn3."})
    state = {}
    for key, value in net.state_dict().items():
        key = key.removeprefix("backbone.")
        if key.split(".", 1)[0] not in ("layer0", "layer1", "layer2", "layer3", "layer4"):
            continue
        for new, old in inverse.items():
            if key.startswith(new):
                key = old + key[len(new) :]
                break
        state[key] = value
    torch.save({"state_dict": state}, path)


def _num_classes(cfg) -> int:
    from gkl.data import dataset_info

    if cfg.data.name in ("imagenet", "imagenet_lt"):
        return len(WNIDS)  # the classes found on disk
    return dataset_info(cfg.data.name).num_classes


# ----------------------------------------------------------------------------- cheaper builds and evaluations

#: the torch.nn.init functions models initialise with (module constructors call them as ``init.<name>``)
_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
)  # fmt: skip

#: architectures (name, kwargs, classes) whose build without initialisation has been compared with the normal one
_COMPARED: set[str] = set()


@contextlib.contextmanager
def _init_skipped():
    """torch.nn.init's functions leave their tensor as it is (uninitialised memory, for what a load overwrites)."""
    import torch.nn.init as init

    saved = {name: getattr(init, name) for name in _INIT_FUNCTIONS}
    try:
        for name in _INIT_FUNCTIONS:
            setattr(init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, function in saved.items():
            setattr(init, name, function)


def _every_tensor(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, str]]:
    """Every parameter, buffer (persistent or not) and plain tensor attribute of every submodule, by name,
    with the first name of the tensor it shares its memory with (tied weights)."""
    found: dict[str, torch.Tensor] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for name, value in vars(module).items():
            if isinstance(value, torch.Tensor):
                found[f"{prefix}.{name}"] = value
        for group in ("_parameters", "_buffers"):
            for name, value in getattr(module, group).items():
                if value is not None:
                    found[f"{prefix}.{group}.{name}"] = value
    first: dict[tuple, str] = {}
    for name, value in found.items():
        first.setdefault((value.untyped_storage().data_ptr(), value.storage_offset(), value.shape), name)
    return {n: (v, first[(v.untyped_storage().data_ptr(), v.storage_offset(), v.shape)]) for n, v in found.items()}


def _no_init_before_strict_load(build_model):
    """``gkl.tasks.parts.build_model`` for a model with a ``checkpoint``, whose strict load (every key of its
    state_dict, or an error) follows the construction: built without random initialisation. The first
    build of each architecture is compared with the normal build (the same model, to the bit, as loaded
    from the same file): a tensor the load does not write (a non-persistent buffer, a plain attribute,
    a tie) would differ."""

    def build(cfg, num_classes: int, section: str = "model"):
        if cfg.checkpoint is None:
            return build_model(cfg, num_classes, section)
        with _init_skipped():
            model = build_model(cfg, num_classes, section)
        key = repr((cfg.name, sorted(cfg.kwargs.items()), num_classes))
        if key not in _COMPARED:
            fast, normal = _every_tensor(model), _every_tensor(build_model(cfg, num_classes, section))
            assert fast.keys() == normal.keys(), key
            for name, (value, tied) in normal.items():
                assert fast[name][1] == tied, (key, name)
                assert fast[name][0].dtype == value.dtype and torch.equal(fast[name][0], value), (key, name)
            _COMPARED.add(key)
        return model

    return build


# ----------------------------------------------------------------------------- the test


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.mark.parametrize(("case", "path"), CASES, ids=[c[0] for c in CASES])
def test_recipe_builds_steps_and_evaluates(
    case: str, path: Path, roots: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recipe of an optional feature (CLIP, language models, webdataset shards, the bundled data sets)
    skips when its extra is not installed (tests/optional_skips.py: CI, which installs gkl[all], fails then)."""
    import gkl.tasks.parts

    monkeypatch.setattr(gkl.tasks.parts, "build_model", _no_init_before_strict_load(gkl.tasks.parts.build_model))
    with skip_if_optional_missing():
        if "settings" in (yaml.safe_load(path.read_text()) or {}):
            runs = _study_runs(path)  # may be empty: every setting is the code of a recipe case
            for setting, config, overrides in runs:
                _build_step_evaluate(config, overrides, roots, tmp_path / setting)
        else:
            _build_step_evaluate(path, (), roots, tmp_path)


def _build_step_evaluate(path: Path, overrides: tuple[str, ...], roots: dict[str, Path], tmp_path: Path) -> None:
    from gkl.engine.batches import move_to_device
    from gkl.runner import build_parts

    torch.manual_seed(0)
    common = [*overrides, f"out_dir={tmp_path / 'runs'}", "train.device=cpu", "train.progress=false"]
    first = load_config(path, common)
    sized = (
        common + _data_overrides(first, roots) + _model_overrides(first, "model") + _model_overrides(first, "teacher")
    )
    files = _weights_file(first, "model", _num_classes(first)) + _weights_file(first, "teacher", _num_classes(first))
    cfg = load_config(path, sized + files)

    parts = build_parts(cfg, DistInfo(device=torch.device("cpu")))
    model, objective = parts.model.train(), parts.objective
    if hasattr(parts.train_loader, "set_epoch"):
        parts.train_loader.set_epoch(1)
    params = [p for p in model.parameters() if p.requires_grad]
    params += [p for group in objective.trainable_param_groups() for p in group["params"]]
    optimizer = torch.optim.SGD(params, lr=1e-2)
    before = [p.detach().clone() for p in params]
    batch = move_to_device(next(iter(parts.train_loader)), torch.device("cpu"))
    # the step of the run's last epoch: every warm-up (KD weight, epsilon ramp) is over
    last = cfg.train.epochs if isinstance(cfg.train.epochs, int) and cfg.train.epochs > 0 else 1
    out = objective(model, batch, epoch=last, step=1)
    total = sum(out.losses.values())
    assert torch.isfinite(total), (path, {k: float(v) for k, v in out.losses.items()})
    total.backward()
    optimizer.step()
    objective.after_optimizer_step()
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, params)), f"{path}: the step changed no weight"

    loader = parts.eval_loader if parts.eval_loader is not None else parts.val_loader
    assert loader is not None, path
    first = first_batches(loader, 1)  # the evaluator end to end, on one batch (of each loader of a CLIP split)
    metrics = parts.evaluator(model.eval(), first, device=torch.device("cpu"), dist=None)
    assert _finite(metrics[cfg.train.select_metric]), (path, metrics)


def test_every_yaml_under_configs_is_a_case() -> None:
    assert {p for _, p in CASES} == {p for p in CONFIGS.rglob("*.yaml") if not p.name.startswith("_")}
    assert len(CASES) >= 120
