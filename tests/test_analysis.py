"""gkl.study.analysis: class-mean scores, margins (Eq. 14), penultimate features, t-SNE, ``analyze`` outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gkl.attacks import pgd
from gkl.study.analysis import (
    class_margins,
    class_mean_scores,
    collect_outputs,
    feature_statistics,
    find_classifier,
    tsne_embedding,
)
from gkl.utils.errors import InputError


class Tiny(nn.Module):
    def __init__(self, head_name: str = "fc") -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU())
        setattr(self, head_name, nn.Linear(6, 3))
        self.head_name = head_name

    def forward(self, x):
        return getattr(self, self.head_name)(self.body(x))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = Tiny()
    model.train()
    model(torch.randn(64, 4))  # give BatchNorm non-trivial running statistics
    x = torch.rand(90, 4)
    y = torch.arange(90) % 3
    return model, TensorDataset(x, y), x, y


def test_class_mean_scores_equal_a_direct_computation(setup):
    model, data, x, y = setup
    model.train()
    got = class_mean_scores(model, data)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        p = torch.softmax(model(x).double(), dim=1)
    for c in range(3):
        rows = [p[i, c].item() for i in range(len(y)) if y[i] == c]
        assert got[c].item() == pytest.approx(sum(rows) / len(rows), abs=1e-6)
    # a loader gives the same
    torch.testing.assert_close(class_mean_scores(model, DataLoader(data, batch_size=7)), got)


def test_class_margins_equal_a_direct_computation_natural_and_pgd(setup):
    model, data, x, y = setup
    model.eval()

    def direct(inputs):
        with torch.no_grad():
            z = model(inputs).double()
        out = []
        for c in range(3):
            vals = [
                z[i, c].item() - max(z[i, j].item() for j in range(3) if j != c) for i in range(len(y)) if y[i] == c
            ]
            out.append(sum(vals) / len(vals))
        return torch.tensor(out, dtype=torch.float64)

    torch.testing.assert_close(class_margins(model, data), direct(x), atol=1e-6, rtol=0)

    def attack(images, labels):
        return pgd(model, images, labels, eps=0.1, step_size=0.025, steps=5, random_start=None)

    adv = attack(x, y)
    got_adv = class_margins(model, DataLoader(data, batch_size=90), attack=attack)
    torch.testing.assert_close(got_adv, direct(adv), atol=1e-6, rtol=0)
    assert (got_adv < class_margins(model, data)).all()  # the attack lowers every class's margin


@pytest.mark.parametrize("head", ["fc", "classifier", "linear", "out"])
def test_penultimate_features_come_from_the_classifier_input(setup, head):
    model = Tiny(head)
    model.eval()
    _, data, x, _ = setup
    assert find_classifier(model) is getattr(model, head)
    out = collect_outputs(model, data, features=True)
    with torch.no_grad():
        torch.testing.assert_close(out.features, model.body(x))
        torch.testing.assert_close(out.logits, model(x))
    assert not find_classifier(model)._forward_pre_hooks  # hook removed
    stats = feature_statistics(model, data)
    with torch.no_grad():
        r, z = model.body(x).double(), model(x).double()
    assert stats["feature_norm"] == pytest.approx(r.norm(dim=1).mean().item(), rel=1e-6)
    assert stats["logit_sum"] == pytest.approx(z.sum(dim=1).mean().item(), rel=1e-5, abs=1e-6)
    assert stats["logit_norm"] == pytest.approx(z.norm(dim=1).mean().item(), rel=1e-6)


def test_tsne_embeds_the_chosen_classes_natural_and_adversarial(setup):
    model, data, x, y = setup
    model.eval()

    def attack(images, labels):
        return pgd(model, images, labels, eps=0.1, step_size=0.05, steps=2, random_start=None)

    result = tsne_embedding(model, data, classes=2, attack=attack, seed=1, perplexity=5, max_iter=250)
    n = int(torch.isin(y, torch.tensor(result["classes"])).sum())
    assert len(result["points"]) == 2 * n and sum(result["adversarial"]) == n
    assert set(result["labels"]) == set(result["classes"]) and len(result["classes"]) == 2
    with pytest.raises(ValueError, match="classes"):
        tsne_embedding(model, data, classes=4)


# ----------------------------------------------------------------------------- on a real run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from gkl.config import load_config
    from gkl.runner import run_experiment

    out = tmp_path_factory.mktemp("analysis_runs")
    base = [
        "out_dir=" + str(out),
        "data.name=digits",
        "data.in_memory=true",
        "data.normalize=false",
        "data.batch_size=64",
        "data.eval_batch_size=450",
        "train.epochs=2",
        "train.device=cpu",
        "train.progress=false",
        "model.name=digits_mlp_small",
    ]
    for name in ("a", "b"):
        cfg = load_config(None, [*base, f"name={name}", f"train.seed={ord(name)}"], defaults={"kind": "train"})
        run_experiment(cfg)
    return out


def test_analyze_commands_write_png_and_json(run_dir: Path, tmp_path: Path):
    from gkl.study.analysis.run_analyses import analyze_margins, analyze_scores, analyze_tsne

    out = tmp_path / "analysis"
    paths = analyze_scores([run_dir / "a", run_dir / "b" / "checkpoint.pt"], out)
    scores = json.loads(paths["json"].read_text())
    assert set(scores) == {"a", "b"} and len(scores["a"]["per_class"]) == 10
    paths.update(
        {f"m_{k}": v for k, v in analyze_margins(run_dir / "a", run_dir / "b", out, adversarial=True, eps=0.1).items()}
    )
    margins = json.loads((out / "margins_adv.json").read_text())
    assert len(margins["difference_b_minus_a"]) == 10
    tsne = analyze_tsne(run_dir / "a", out, classes=3, max_per_class=20, max_iter=250)
    paths.update({f"t_{k}": v for k, v in tsne.items()})
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0
    assert (out / "scores.png").read_bytes()[:4] == b"\x89PNG"


def test_analyze_errors_are_one_line_input_errors(run_dir: Path, tmp_path: Path):
    from gkl.study.analysis.run_analyses import analyze_features, analyze_scores, load_run

    empty = tmp_path / "norun"
    empty.mkdir()
    with pytest.raises(InputError, match="not a run directory"):
        load_run(empty)
    (run_dir / "a" / "best.pt").rename(run_dir / "a" / "best.pt.moved")
    try:
        with pytest.raises(InputError, match="no checkpoint to analyse"):
            analyze_scores([run_dir / "a"], tmp_path)
    finally:
        (run_dir / "a" / "best.pt.moved").rename(run_dir / "a" / "best.pt")
    with pytest.raises(InputError, match="log_feature_stats"):
        analyze_features([run_dir / "a"], tmp_path)


def test_a_kind_without_analyses_is_refused_in_one_line(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A task that gives no ``analysis`` (nor feature statistics): every verb exits 2 with one line, before
    reading a weight, and writes nothing."""
    import dataclasses

    import gkl.tasks
    from gkl.cli import main

    real = gkl.tasks.get_task

    def without_analyses(kind: str):
        return dataclasses.replace(real(kind), analysis=None, feature_statistics=False)

    monkeypatch.setattr(gkl.tasks, "get_task", without_analyses)
    out = tmp_path / "out"
    run = str(run_dir / "a")
    for argv in (["scores", run], ["margins", run, str(run_dir / "b")], ["tsne", run], ["features", run]):
        capsys.readouterr()
        assert main(["analyze", *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("gkl analyze: error: "), err
        assert ("cannot log it" if argv[0] == "features" else "has nothing to read") in err[0]
    assert not out.exists()
