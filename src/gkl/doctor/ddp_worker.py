"""``gkl doctor``'s DDP check, run by torchrun: every task's demo run inside a process group.

``python -m torch.distributed.run --standalone --nproc_per_node=1 -m gkl.doctor.ddp_worker SPEC``,
SPEC a JSON object (root, data_root, device, steps, eval_batches, recipes {kind: recipe}, overrides,
teachers {recipe: checkpoint} already trained). One process is
enough to exercise DDP: the process group (NCCL on CUDA, gloo on CPU) is set up here and the runs
are told they are distributed, so the model is wrapped in DistributedDataParallel (SyncBN with
``train.sync_bn``) and every all-reduce (gradients, the class prior, the metrics) goes through
the backend. Writes ``ROOT/results.json``: ``{kind: [error or "", run_dir, SyncBatchNorm layers, refusal
or ""]}``, the refusal the one-line :class:`~gkl.utils.errors.ConfigError` of a task that runs in one
process only.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn

from gkl.doctor.runs import DemoRuns
from gkl.utils.distributed import DistInfo, init_distributed
from gkl.utils.errors import ConfigError


@dataclass(frozen=True)
class OneRankJob(DistInfo):
    """A process group of one rank that the engine treats as distributed (DDP, SyncBN, all-reduces)."""

    @property
    def distributed(self) -> bool:
        return True


def _job(device: str) -> DistInfo:
    single = init_distributed(device)  # one process: no group is created there
    if single.device.type == "cuda":
        torch.cuda.set_device(single.device)
    backend = "nccl" if single.device.type == "cuda" else "gloo"
    torch_dist.init_process_group(backend=backend, rank=single.rank, world_size=single.world_size)
    return OneRankJob(
        rank=single.rank, world_size=single.world_size, local_rank=single.local_rank, device=single.device
    )


def main(spec_text: str) -> int:
    spec = json.loads(spec_text)
    dist = _job(spec["device"])
    runs = DemoRuns(
        Path(spec["root"]),
        spec["device"],
        steps=spec["steps"],
        dist=dist,
        data_root=spec["data_root"],
        eval_batches=spec["eval_batches"],
    )
    runs.teachers.update({recipe: Path(path) for recipe, path in spec.get("teachers", {}).items()})
    results: dict[str, Any] = {}
    for kind, recipe in spec["recipes"].items():
        models: list[nn.Module] = []

        def keep_model(parts: Any, models: list[nn.Module] = models) -> Any:
            models.append(parts.model)
            return parts

        try:
            cfg = runs.config(recipe, spec["overrides"])
            runs.train(cfg, adapt_parts=keep_model)
            sync_bn = sum(isinstance(m, nn.SyncBatchNorm) for m in models[0].modules())
            results[kind] = ["", str(cfg.run_dir), sync_bn, ""]
        except ConfigError as err:  # the shipped demo is valid: the task refuses a process group
            results[kind] = ["", "", 0, str(err)]
        except Exception as err:  # reported in the table; the other tasks still run
            results[kind] = [f"{type(err).__name__}: {err}", "", 0, ""]
    torch_dist.barrier()
    torch_dist.destroy_process_group()
    (Path(spec["root"]) / "results.json").write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
