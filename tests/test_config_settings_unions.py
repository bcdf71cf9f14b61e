"""One shape for settings: every section that selects a method is a tagged union, the KL-family
terms share one settings block with one set of defaults, and settings errors have one format."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from gkl.config import load_config, recorded_config_from_dict, to_dict
from gkl.settings.adversarial import GKLATSettings
from gkl.settings.clip import CLIP_DISTILL_SETTINGS, ClipDistillSettings, ClipLogitLossSettings
from gkl.settings.distill import DISTILL_SETTINGS, LogitLossSettings
from gkl.settings.kl_family import KL_FAMILY_DEFAULTS, ClassWiseWeights, DKLTerm
from gkl.settings.segmentation import SegmentationSettings
from gkl.settings.ssl import SSL_ALGORITHMS, SSL_CONSISTENCIES, SSLSettings, ssl_settings_class
from gkl.utils.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _leaves() -> list[type]:
    ssl = [ssl_settings_class(a, c) for a in SSL_ALGORITHMS for c in (*SSL_CONSISTENCIES, "toy")]
    seg = [type(SegmentationSettings(method=m, kd_term=t)) for m in ("kd", "apd") for t in ("kl", "gkl", "toy")]
    seg += [type(SegmentationSettings(method=m)) for m in ("ce", "cwd")]
    return [
        *DISTILL_SETTINGS.values(),
        LogitLossSettings,
        GKLATSettings,
        *ssl,
        *seg,
        *CLIP_DISTILL_SETTINGS.values(),
        ClipLogitLossSettings,
    ]


def test_every_kl_family_term_has_the_one_set_of_defaults() -> None:
    seen = set()
    for cls in _leaves():
        if not issubclass(cls, (DKLTerm, ClassWiseWeights)):
            continue
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.name in KL_FAMILY_DEFAULTS}
        assert defaults == {k: KL_FAMILY_DEFAULTS[k] for k in defaults}, cls.__name__
        seen.add(cls.__name__)
    assert {
        "GKLSettings",
        "IKLSettings",
        "DKLSettings",
        "GKLATSettings",
        "FixMatchGklSettings",
        "MeanTeacherIklSettings",
        "SegKDGKLSettings",
        "SegAPDGKLSettings",
        "ClipGKLSettings",
    } <= seen


def test_each_union_class_holds_exactly_what_its_choice_uses() -> None:
    fields = lambda obj: {f.name for f in dataclasses.fields(obj)}  # noqa: E731
    assert fields(SSLSettings(consistency="hard_ce")) & set(KL_FAMILY_DEFAULTS) == set()
    assert {"alpha", "gamma", "normalize", "detach_weak"} <= fields(SSLSettings(consistency="gkl"))
    assert "gamma" not in fields(SSLSettings(consistency="ikl")) and "ema_decay" in fields(
        SSLSettings(algorithm="meanteacher")
    )
    assert (
        fields(SegmentationSettings(method="kd")) & {"alpha", "class_wise", "cwd_temperature", "apd_temperature"}
        == set()
    )
    assert fields(ClipDistillSettings(method="kl")) & set(KL_FAMILY_DEFAULTS) == {"temperature"}
    assert "class_wise" not in fields(ClipDistillSettings(method="gkl"))  # CLIP weights are sample-wise


@pytest.mark.parametrize(
    "path",
    sorted((CONFIGS / "ssl").rglob("[!_]*.yaml"))
    + sorted((CONFIGS / "segmentation").rglob("[!_]*.yaml"))
    + sorted((CONFIGS / "clip").rglob("[!_]*.yaml")),
    ids=lambda p: str(p.relative_to(CONFIGS)),
)
def test_recipes_record_exactly_what_runs_and_load_again(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    section = {"ssl": "ssl", "segmentation": "segmentation", "clip_distill": "clip_distill"}.get(cfg.kind)
    if section is None or getattr(cfg, section) is None:
        return
    dumped = to_dict(cfg)
    assert set(dumped[section]) == {f.name for f in dataclasses.fields(getattr(cfg, section))}
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(dumped))
    assert to_dict(load_config(saved)) == dumped
    assert to_dict(recorded_config_from_dict(dumped)) == dumped


def test_configs_recorded_before_the_unions_still_load() -> None:
    """Earlier versions recorded every key of ssl / segmentation / clip_distill (unused ones null or default)."""
    ssl = to_dict(load_config(CONFIGS / "ssl" / "demo" / "meanteacher_mse.yaml"))
    old = yaml.safe_load(yaml.safe_dump(ssl))
    old["ssl"].update(
        consistency="mse", alpha=None, beta=None, gamma=None, weight_temperature=None, normalize=None, detach_weak=None
    )
    with pytest.raises(ConfigError, match=r"^ssl.consistency: 'mse' is now called 'softmax_mse'$"):
        load_config(None, defaults=old)
    assert to_dict(recorded_config_from_dict(old)) == ssl
    seg = to_dict(load_config(CONFIGS / "segmentation" / "demo" / "student_kd_kl.yaml"))
    old = yaml.safe_load(yaml.safe_dump(seg))
    old["segmentation"].update(
        alpha=1.0,
        beta=1.0,
        gamma=1.0,
        weight_temperature=1.0,
        class_wise=True,
        normalize="weights",
        prior_momentum=None,
        cwd_temperature=4.0,
        apd_pred_weight=10.0,
        apd_align_weight=10.0,
        apd_temperature=10.0,
        apd_adapter_dim=512,
        apd_teacher_lr=1e-5,
    )
    with pytest.raises(ConfigError, match=r"^segmentation.alpha: not a setting of segmentation.kd_term 'kl'"):
        load_config(None, defaults=old)
    assert to_dict(recorded_config_from_dict(old)) == seg
    clip = to_dict(load_config(CONFIGS / "clip" / "demo" / "student_kl.yaml"))
    old = yaml.safe_load(yaml.safe_dump(clip))
    old["clip_distill"].update(alpha=1.0, beta=1.0, gamma=1.0, weight_temperature=1.0, normalize="weights")
    assert to_dict(recorded_config_from_dict(old)) == clip


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.optim.momentum=1.5", r"train.optim.momentum: expected a value in [0, 1), got 1.5"),
        ("train.schedule.gamma=0", r"train.schedule.gamma: expected a value > 0.0, got 0.0"),
        ("train.ema={decay: 2.0}", r"train.ema.decay: expected a value in [0, 1) or null, got 2.0"),
        (
            "distill.prior_momentum=0.5",
            r"distill.prior_momentum: expected null unless distill.class_wise is true (it only affects class-wise "
            r"weights), got 0.5",
        ),
    ],
)
def test_settings_errors_have_one_prefix_on_classification_configs(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "demo" / "student_ikl.yaml", ["distill.class_wise=false", override])
    assert str(err.value) == message


@pytest.mark.parametrize(
    "path, override, message",
    [
        (
            "segmentation/demo/student_kd_gkl.yaml",
            "segmentation.eval={mode: slide}",
            "segmentation.eval.crop_size: expected an integer for mode 'slide', got None",
        ),
        (
            "segmentation/demo/student_kd_gkl.yaml",
            "segmentation.augment.rotate=-1",
            "segmentation.augment.rotate: expected a value >= 0.0, got -1.0",
        ),
        (
            "segmentation/demo/student_kd_gkl.yaml",
            "segmentation.prior_momentum=1.5",
            "segmentation.prior_momentum: expected a value in (0, 1] or null, got 1.5",
        ),
        (
            "clip/demo/student_gkl.yaml",
            "clip_data.train=pairs.csv",
            "clip_data.train: expected null with clip_data.format 'digits' (the bundled set), got 'pairs.csv'",
        ),
        (
            "clip/demo/student_gkl.yaml",
            "clip_distill.weight_temperature=0",
            "clip_distill.weight_temperature: expected a value > 0.0, got 0.0",
        ),
        ("ssl/demo/fixmatch_gkl.yaml", "ssl.uratio=0", "ssl.uratio: expected a value >= 1, got 0"),
    ],
)
def test_task_settings_errors_have_one_prefix(path: str, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / path, [override])
    assert str(err.value) == message
