"""gkl.study.analysis.equivalence.equivalence_report: numbers consistent with the losses."""

import re

import pytest
import torch

from gkl.losses import gkl_loss
from gkl.study.analysis.equivalence import equivalence_report


def test_report_shows_tiny_gradient_differences_and_gkl_terms():
    text = equivalence_report(num_classes=7, batch=5, seed=3)
    diffs = [float(x) for x in re.findall(r"\| = ([0-9.e+-]+)", text)]
    assert len(diffs) == 2 and max(diffs) < 1e-10
    assert "OK" in text
    rows = [line.split() for line in text.splitlines() if re.match(r"\s+[01]\.\d\d\s", line)]
    assert [float(r[0]) for r in rows] == [0.0, 0.5, 1.0]
    for _, wmse, ce, total in rows:
        assert abs(float(wmse) + float(ce) - float(total)) < 2e-6
    # the gamma = 1 row equals gkl_loss on the same random logits
    g = torch.Generator().manual_seed(3)
    o_n = 2.0 * torch.randn(5, 7, generator=g, dtype=torch.float64)
    o_m = 2.0 * torch.randn(5, 7, generator=g, dtype=torch.float64)
    assert abs(float(rows[2][3]) - gkl_loss(o_n, o_m).item()) < 1e-6


def test_report_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        equivalence_report(num_classes=1)
    with pytest.raises(ValueError, match="batch"):
        equivalence_report(batch=0)
