"""Training: masked-autoencoder pretraining (Accelerate, `pretrain`), fine-tuning with `transformers.Trainer`
(`finetune`), dense-prediction metrics (`metrics`) and the fine-tuning data collator (`collator`).

Names are resolved lazily so that importing `degas_hf.training` pulls in neither Trainer nor Accelerate.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    # metrics
    "confusion_matrix": ".metrics",
    "segmentation_metrics": ".metrics",
    "segmentation_metrics_from_confusion": ".metrics",
    "regression_metrics": ".metrics",
    "SegmentationMetric": ".metrics",
    "RegressionMetric": ".metrics",
    "SegmentationMetrics": ".metrics",
    "RegressionMetrics": ".metrics",
    "preprocess_logits_for_segmentation": ".metrics",
    "preprocess_logits_for_regression": ".metrics",
    # fine-tuning
    "SegmentationDataCollator": ".collator",
    "FinetuneConfig": ".finetune",
    "TASKS": ".tasks",
    "TaskSpec": ".tasks",
    "resolve_task": ".tasks",
    "build_task_datasets": ".finetune",
    "load_model_for_task": ".finetune",
    "freeze_encoder": ".finetune",
    "layer_decay_parameter_groups": ".finetune",
    "build_optimizer": ".finetune",
    "apply_lora": ".finetune",
    "WeightedCrossEntropyLoss": ".finetune",
    "build_trainer": ".finetune",
    "finetune": ".finetune",
    "write_results": ".finetune",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name], __name__)
    # Bind every export of that module now: importing the submodule `finetune` sets the package attribute
    # `finetune` to the module, which must not shadow the function of the same name.
    for export, source in _EXPORTS.items():
        if source == _EXPORTS[name]:
            globals()[export] = getattr(module, export)
    return globals()[name]


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
