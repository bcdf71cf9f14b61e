"""End to end: adversarial training through the engine makes a digits model more robust than CE training."""

from __future__ import annotations

import pytest
from torch.utils.data import TensorDataset

from gkl.evaluate.robust import evaluate_robustness
from gkl.objectives.adversarial import build_adversarial_objective
from helpers import AT_EPOCHS, AT_EPS, adversarial_settings, train_digits_cnn


@pytest.fixture(scope="module")
def standard_report(standard_digits_cnn, digits01_splits):
    """PGD-10 at eps 0.1 on the whole test split for the CE-trained model (conftest.py): the baseline."""
    return evaluate_robustness(
        standard_digits_cnn,
        TensorDataset(*digits01_splits[1]),
        eps_list=(AT_EPS,),
        attacks=("pgd10",),
        step_size=AT_EPS / 4,
    )


@pytest.mark.slow
@pytest.mark.xdist_group("standard_digits_cnn")  # trained once per worker (conftest.py)
@pytest.mark.parametrize("method", ["gkl", "trades"])
def test_adversarial_training_beats_standard_training_under_pgd(tmp_path, method, digits01_splits, standard_report):
    # the same model, data, solver and schedule as the CE baseline (helpers.train_digits_cnn)
    objective = build_adversarial_objective(adversarial_settings(method), num_classes=10, epochs=AT_EPOCHS)
    adversarial, summary = train_digits_cnn(objective, tmp_path / method)
    assert "adv_accuracy" in summary["train"]
    report = evaluate_robustness(
        adversarial, TensorDataset(*digits01_splits[1]), eps_list=(AT_EPS,), attacks=("pgd10",), step_size=AT_EPS / 4
    )
    print(
        {
            "standard": (standard_report.clean_accuracy, standard_report.accuracy("pgd10")),
            method: (report.clean_accuracy, report.accuracy("pgd10")),
        }
    )
    # thresholds from the spread over seeds and thread counts (tests/helpers_margins.py)
    assert standard_report.clean_accuracy > 0.9 and report.clean_accuracy > 0.85
    assert report.accuracy("pgd10") > standard_report.accuracy("pgd10") + 0.3
