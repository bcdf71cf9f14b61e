"""Optional experiment trackers: Weights & Biases and MLflow (``train.loggers``).

Both have the interface of the run's other loggers: ``.log(record, step)`` and ``.close()``.
A record is the engine's nested dict (``{"lr": 0.1, "eval": {"top1": 71.2, "per_class": [...]}}``);
it is flattened to ``"eval/top1"``-style keys and only real numbers are sent (lists, strings
and ``None`` stay in ``metrics.jsonl``). The engine creates trackers on rank 0 only.

Both keep their files inside the run directory and work without a server:

- :class:`WandbTracker`: ``<run_dir>/wandb``; mode ``offline`` unless ``WANDB_MODE`` or
  ``mode=`` says otherwise (upload later with ``wandb sync <run_dir>/wandb/offline-run-*``).
- :class:`MlflowTracker`: a local file store ``file:<run_dir>/mlruns`` unless ``tracking_uri``
  (or ``MLFLOW_TRACKING_URI``) names a server (view with ``mlflow ui --backend-store-uri ...``).
  For a file store it sets ``MLFLOW_ALLOW_FILE_STORE=true`` in the process environment unless
  already set (MLflow 3.7+ refuses file stores otherwise).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gkl.utils.errors import InputError


def flatten_record(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"eval": {"top1": 1.0}, "lr": 0.1}`` -> ``{"eval/top1": 1.0, "lr": 0.1}`` (numbers only)."""
    flat: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_record(value, prefix=f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
        elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # 0-d tensor / numpy scalar
            flat[name] = float(value.item())
    return flat


def _require(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError:
        raise InputError(
            f"train.loggers: '{extra}' needs the {module} package; install it with: pip install 'gkl[{extra}]'"
        ) from None


class WandbTracker:
    """Logs records to a Weights & Biases run whose files live in ``<run_dir>/wandb``."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        project: str = "gkl",
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        mode: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """``settings``: extra ``wandb.Settings`` fields (e.g. ``{"x_disable_stats": True}``)."""
        wandb = _require("wandb", "wandb")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.mode = mode or os.environ.get("WANDB_MODE") or "offline"
        self.run = wandb.init(
            project=project,
            name=name or self.run_dir.name,
            dir=str(self.run_dir),
            config=dict(config) if config else None,
            mode=self.mode,
            reinit="create_new",
            settings=wandb.Settings(**settings) if settings else None,
        )

    def log(self, record: Mapping[str, Any], step: int) -> None:
        self.run.log(flatten_record(record), step=int(step))

    def close(self) -> None:
        if self.run is not None:
            import wandb

            self.run.finish()
            self.run = None
            # finish() can return before the service has flushed the run's transaction log
            # (observed with wandb 0.31 offline); shutting the service down waits for it.
            # This also ends any other W&B run of the process (gkl opens one per process).
            wandb.teardown()


class MlflowTracker:
    """Logs records as MLflow metrics of one run (local file store ``<run_dir>/mlruns`` by default)."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        experiment: str = "gkl",
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        tracking_uri: str | None = None,
    ) -> None:
        _require("mlflow", "mlflow")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = (
            tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or (self.run_dir / "mlruns").resolve().as_uri()
        )
        if self.tracking_uri.startswith("file:"):
            # MLflow >= 3.7 keeps the file store behind this switch (the database stores need
            # SQLAlchemy, which mlflow-skinny lacks); it only unlocks the store the user chose.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(experiment_id, run_name=name or self.run_dir.name).info.run_id
        if params:
            flat = flatten_record(params)
            self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in flat.items()])
        self._open = True

    def log(self, record: Mapping[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(key, value, now, int(step)) for key, value in flatten_record(record).items() if math.isfinite(value)
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        if self._open:
            self.client.set_terminated(self.run_id)
            self._open = False
