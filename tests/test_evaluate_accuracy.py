"""evaluate_classifier against direct counting on real digits data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gkl.metrics.classification import evaluate_classifier
from test_engine_support import digits_loader, digits_split_tensors


def trained_linear_model() -> nn.Module:
    images, labels = digits_split_tensors(True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(15):  # a partly trained model: neither all right nor all wrong
        opt.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        opt.step()
    return model


def test_matches_direct_count_and_restores_mode():
    model = trained_linear_model().train()
    images, labels = digits_split_tensors(False)
    loader = digits_loader(37, train_split=False, shuffle=False)  # 450 = 12 x 37 + 6: a partial last batch
    groups = {"many": [0, 1, 2, 3], "medium": [4, 5, 6], "few": [7, 8, 9]}
    result = evaluate_classifier(model, loader, num_classes=10, device="cpu", class_groups=groups)
    assert model.training
    with torch.no_grad():
        logits = model(images)
    pred = logits.argmax(1)
    top5 = logits.topk(5, dim=1).indices
    assert result["count"] == len(labels)
    assert result["top1"] == pytest.approx(100.0 * (pred == labels).float().mean().item())
    assert result["top5"] == pytest.approx(100.0 * (top5 == labels[:, None]).any(1).float().mean().item())
    assert 0 < result["top1"] < 100 and result["top5"] >= result["top1"]
    for c in range(10):
        mask = labels == c
        assert result["per_class"][c] == pytest.approx(100.0 * (pred[mask] == c).float().mean().item())
    for name, members in groups.items():
        mask = torch.isin(labels, torch.tensor(members))
        assert result["groups"][name] == pytest.approx(100.0 * (pred[mask] == labels[mask]).float().mean().item())


def test_eval_mode_during_evaluation_and_eval_mode_kept():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(64, 10))
    loader = digits_loader(100, train_split=False, shuffle=False)
    first = evaluate_classifier(model.train(), loader, num_classes=10, device="cpu")
    second = evaluate_classifier(model.eval(), loader, num_classes=10, device="cpu")
    assert first["top1"] == second["top1"]  # dropout off in both calls
    assert not model.training


def test_few_classes_have_no_top5_and_absent_classes_are_nan():
    _, labels = digits_split_tensors(False)
    keep = torch.nonzero(labels < 3).flatten()  # classes 0-2 only
    loader = digits_loader(64, train_split=False, shuffle=False, indices=keep)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    result = evaluate_classifier(model, loader, num_classes=4, device="cpu")
    assert "top5" not in result and len(result["per_class"]) == 4
    assert result["per_class"][3] != result["per_class"][3]  # NaN: class 3 absent


def test_bad_arguments_are_named():
    loader = digits_loader(64, train_split=False, shuffle=False)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ValueError, match="num_classes"):
        evaluate_classifier(model, loader, num_classes=1, device="cpu")
    with pytest.raises(ValueError, match="num_classes"):
        evaluate_classifier(model, loader, num_classes=7, device="cpu")
    with pytest.raises(ValueError, match="class_groups"):
        evaluate_classifier(model, loader, num_classes=10, device="cpu", class_groups={"few": [12]})
