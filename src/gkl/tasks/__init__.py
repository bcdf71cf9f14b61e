"""Per-task run builders (the runner layer): one module per task that turns an
:class:`~gkl.config.ExperimentConfig` of its kind into the model, loaders, objective and
evaluator the one engine trains (:class:`gkl.runner.RunParts`)."""
