"""The process-wide state a run may change, saved before a run in this process and restored after it
(:class:`gkl.study.inline.InlineLauncher`), so that each run of an inline sweep starts from the sweep's
own state and leaves it as it was.

What a gkl run changes (the engine, the runner, ``gkl.cli.main``): torch's intra-op threads (the
in-memory loaders switch to one thread and back), deterministic algorithms and cuDNN flags
(``train.deterministic``), the python / numpy / torch RNGs (``seed_everything``), the SIGTERM handler
(``gkl.cli.main``), loggers (``gkl.train``'s handlers, ``logging.basicConfig``) and ``os.environ``
(``CUBLAS_WORKSPACE_CONFIG``, ``MLFLOW_ALLOW_FILE_STORE``). Besides these, the rest of what a run could
set for the whole process is covered too: interop threads, float32 matmul precision, the default
dtype, grad mode, the CUDA RNGs, the SIGINT handler, warnings filters and the working directory.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["ProcessState"]

#: the signals a run handles itself (it stops, keeping its last checkpoint)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class _LoggerState:
    level: int
    handlers: list[logging.Handler]
    filters: list[Any]
    propagate: bool
    disabled: bool


def _loggers() -> dict[str, logging.Logger]:
    """Every logger that exists now, the root logger under the name ``""``."""
    found = {name: lg for name, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    return {"": logging.getLogger(), **found}


@dataclass
class ProcessState:
    """A snapshot of the process-wide settings and RNGs; :meth:`restore` and :meth:`restore_handlers`
    put them back."""

    threads: int
    interop_threads: int
    deterministic: tuple[bool, bool]  # use_deterministic_algorithms, warn_only
    cudnn: tuple[bool, bool, bool]  # benchmark, deterministic, allow_tf32
    matmul_precision: str
    default_dtype: torch.dtype
    grad_enabled: bool
    rng: tuple[Any, Any, torch.Tensor, list[torch.Tensor] | None]  # python, numpy, torch, CUDA (when initialised)
    handlers: dict[int, Any]
    loggers: dict[str, _LoggerState]
    logging_disable: int
    environ: dict[str, str]
    cwd: str
    warnings: Any = field(repr=False)  # an entered warnings.catch_warnings (its exit restores the filters)

    @classmethod
    def capture(cls) -> ProcessState:
        catcher = warnings.catch_warnings()
        catcher.__enter__()  # saves warnings.filters and warnings.showwarning
        return cls(
            threads=torch.get_num_threads(),
            interop_threads=torch.get_num_interop_threads(),
            deterministic=(
                torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
            ),
            cudnn=(
                torch.backends.cudnn.benchmark,
                torch.backends.cudnn.deterministic,
                torch.backends.cudnn.allow_tf32,
            ),
            matmul_precision=torch.get_float32_matmul_precision(),
            default_dtype=torch.get_default_dtype(),
            grad_enabled=torch.is_grad_enabled(),
            rng=(
                random.getstate(),
                np.random.get_state(),
                torch.get_rng_state(),
                torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            ),
            handlers={sig: signal.getsignal(sig) for sig in SIGNALS},
            loggers={
                name: _LoggerState(lg.level, list(lg.handlers), list(lg.filters), lg.propagate, lg.disabled)
                for name, lg in _loggers().items()
            },
            logging_disable=logging.root.manager.disable,
            environ=dict(os.environ),
            cwd=os.getcwd(),
            warnings=catcher,
        )

    def restore(self) -> None:
        """Put every saved setting back but the signal handlers (:meth:`restore_handlers`: the inline
        launcher puts them back last); handlers and files the run's loggers opened are closed."""
        os.chdir(self.cwd)
        for key in [k for k in os.environ if k not in self.environ]:
            del os.environ[key]
        for key, value in self.environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        self._restore_logging()
        self.warnings.__exit__(None, None, None)
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        if torch.get_num_interop_threads() != self.interop_threads:
            try:
                torch.set_num_interop_threads(self.interop_threads)
            except RuntimeError:  # settable once, before any parallel work: then the run's value stays
                pass
        torch.use_deterministic_algorithms(self.deterministic[0], warn_only=self.deterministic[1])
        cudnn = torch.backends.cudnn
        cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32 = self.cudnn
        torch.set_float32_matmul_precision(self.matmul_precision)
        torch.set_default_dtype(self.default_dtype)
        torch.set_grad_enabled(self.grad_enabled)
        python, numpy_state, torch_state, cuda = self.rng
        random.setstate(python)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

    def restore_handlers(self) -> None:
        """Put the SIGINT / SIGTERM handlers back (in the main thread: elsewhere a run cannot change them)."""
        if threading.current_thread() is threading.main_thread():
            for sig, handler in self.handlers.items():
                if handler is not None:  # None: a handler not installed from Python, which a run cannot change
                    signal.signal(sig, handler)

    def _restore_logging(self) -> None:
        logging.disable(self.logging_disable)
        for name, lg in _loggers().items():
            saved = self.loggers.get(name)
            if saved is None:  # created by the run: a library's own set-up stays, a log file of the run is closed
                for log_file in [h for h in lg.handlers if isinstance(h, logging.FileHandler)]:
                    lg.removeHandler(log_file)
                    log_file.close()
                continue
            for handler in lg.handlers:
                if handler not in saved.handlers:
                    handler.close()
            lg.handlers[:] = saved.handlers
            lg.filters[:] = saved.filters
            lg.setLevel(saved.level)
            lg.propagate, lg.disabled = saved.propagate, saved.disabled
