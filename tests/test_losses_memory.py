"""O(C) memory of ``gkl_loss`` (README: "O(C) memory"; docs/losses.md: the centred form builds no N×C×C
tensor): forward + backward at N = 64, C = 50 000, where the pairwise form would hold C×C = 2.5e9 entries
per example (10 GB in float32, 640 GB for the batch), grows the process's peak memory by a few N×C
tensors. Measured in a fresh interpreter with the peak resident set size (``getrusage``), which sees
torch's allocations (tracemalloc does not)."""

from __future__ import annotations

import subprocess
import sys

N, C = 64, 50_000
FLOAT = 4  # bytes
MEASURE = """
import resource, sys, torch
torch.set_num_threads(1)
from gkl.losses.functional import gkl_loss

def inputs(n, c):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, c, generator=g).requires_grad_(), torch.randn(n, c, generator=g)

logits, target = inputs(4, 50)  # first call: lazy initialisation of torch's kernels and pools
gkl_loss(logits, target, temperature=4.0).backward()
logits, target = inputs(int(sys.argv[1]), int(sys.argv[2]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
gkl_loss(logits, target, temperature=4.0, weight_temperature=4.0).backward()
assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)  # KiB on Linux
"""


def peak_growth_bytes(n: int, c: int) -> int:
    """Peak resident memory added by one forward + backward of gkl_loss on (n, c) logits, in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(n), str(c)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1]) * 1024


def test_gkl_loss_forward_backward_memory_grows_with_n_times_c_not_c_squared() -> None:
    growth = peak_growth_bytes(N, C)
    one_tensor = N * C * FLOAT  # 12.8 MB: one N×C float32 tensor (the logits)
    pairwise_one_example = C * C * FLOAT  # 10 GB: one C×C matrix of the pairwise form
    # measured: about 6 N×C tensors (the softmaxes, the centred differences, the gradient)
    assert growth < 16 * one_tensor, f"peak grew by {growth / 2**20:.0f} MiB = {growth / one_tensor:.1f} N×C tensors"
    assert growth < pairwise_one_example / 40
