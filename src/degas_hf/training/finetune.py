"""Fine-tuning ST-SwinUNet on the paper's downstream tasks (and users' own data) with `transformers.Trainer`.

The pieces are usable one by one with a plain `Trainer`:

```python
>>> from transformers import AutoConfig, AutoModelForSemanticSegmentation, Trainer, TrainingArguments
>>> import degas_hf  # registers the Auto classes
>>> from degas_hf.data import Sen1Floods11
>>> from degas_hf.training import SegmentationDataCollator, SegmentationMetrics, preprocess_logits_for_segmentation
>>> config = AutoConfig.from_pretrained("path/to/degas-100m")
>>> train = Sen1Floods11("sen1floods11/v1.1", "train", bands=config.band_names, crop_size=224, random_crop=True)
>>> model = AutoModelForSemanticSegmentation.from_pretrained(
...     "path/to/degas-100m", num_labels=2, id2label=train.id2label, num_frames=train.num_frames)
>>> trainer = Trainer(model, TrainingArguments("out", remove_unused_columns=False, batch_eval_metrics=True),
...     data_collator=SegmentationDataCollator(), train_dataset=train, eval_dataset=...,
...     compute_metrics=SegmentationMetrics(2, train.id2label),
...     preprocess_logits_for_metrics=preprocess_logits_for_segmentation)
```

`finetune(FinetuneConfig(...))` (and `degas-hf finetune`) does all of it: reads the task, maps its bands onto the
model's by name (a band the task cannot supply is an error before training), checks every label file, loads the
model with the task's head and frame count, optionally freezes the encoder, applies layer-wise learning-rate decay,
class weights or LoRA, trains, evaluates on the validation and test splits and writes `results.json`,
`results.md`, a confusion-matrix figure and a predictions-vs-labels figure. docs/finetuning.md documents the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import errno
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.base import CLASSIFICATION, IGNORE_INDEX, REGRESSION, GeoSegmentationDataset, TaskInfo, class_weights_from_counts
from ..hub.folder import check_safetensors_weights
from .collator import SegmentationDataCollator
from .metrics import (
    RegressionMetrics,
    SegmentationMetrics,
    preprocess_logits_for_regression,
    preprocess_logits_for_segmentation,
)
from .tasks import TASKS, TaskSpec, resolve_task  # noqa: F401 (TaskSpec re-exported)

logger = logging.getLogger(__name__)

RESULTS_SCHEMA_VERSION = 1


# ----------------------------------------------------------------------------------------------------------------
# Configuration of a run
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FinetuneConfig:
    """Everything a fine-tuning run needs (the CLI maps its flags onto these fields).

    Args:
        task: a key of `TASKS` (`sen1floods11`, `hls_burn_scars`, `crop_classification`, `phileo_lc`,
            `phileo_building`, `phileo_roads`, `generic`).
        data_dir: dataset folder in the task's on-disk layout.
        model: a pretrained model folder (or Hub id, offline cache) or a preset name (`degas-tiny`, `degas-100m`)
            for a randomly initialised model.
        output_dir: where checkpoints, results and figures go.
        model_name: name of the fine-tuned model in the results (defaults to `<model folder>-<task>`).
        dataset_kwargs: extra reader arguments (e.g. `{"modality": "s1"}`, `{"n_shot": 50}`, or the generic
            folder's `band_names`, `num_classes`, ...).
        bands: input bands; defaults to the model's `config.band_names`. Giving other bands replaces the model's
            patch embedding (newly initialised, `ignore_mismatched_sizes`).
        crop_size: training crop (random) and evaluation crop (centre); None keeps full samples.
        freeze_encoder: train only the decoder and head (`st_swin_mae` frozen).
        layer_decay: layer-wise learning-rate decay factor (e.g. 0.75); None or 1.0 disables it.
        class_weights: None, `"auto"` (inverse square root of the training pixel frequencies), `"inverse"`,
            `"median"`, or one weight per class.
        lora_rank: LoRA rank (needs `peft`); 0 disables LoRA.
        max_train_samples / max_eval_samples: truncate the datasets (quick runs).
        check_labels: read every label file before training and check its values.
        figures: write the confusion-matrix and predictions figures.
        num_figure_samples: samples in the predictions figure.
        overwrite: replace the run (results, model) already in `output_dir`; without it such a folder is refused.
        compile: run the model through `degas_hf.training.compile.compile_model` (torch.compile) before training.
        activation_checkpointing: "none", "full" or "selective" (`degas_hf.training.activation_checkpointing`):
            recompute in the backward to fit a larger batch or a smaller GPU.
        training_args: further `TrainingArguments` fields (override the defaults here).
    """

    task: str
    data_dir: str
    model: str
    output_dir: str
    model_name: str | None = None
    dataset_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    bands: Sequence[str] | None = None
    crop_size: int | None = None
    num_train_epochs: float = 10.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    learning_rate: float = 1e-4
    weight_decay: float = 0.05
    warmup_steps: float = 0.0
    lr_scheduler_type: str = "cosine"
    freeze_encoder: bool = False
    layer_decay: float | None = None
    class_weights: str | Sequence[float] | None = None
    lora_rank: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    eval_split: str | None = None
    test_splits: Sequence[str] | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    seed: int = 42
    dataloader_num_workers: int = 0
    logging_steps: int = 10
    eval_strategy: str = "epoch"
    save_strategy: str = "no"
    check_labels: bool = True
    figures: bool = True
    num_figure_samples: int = 4
    save_model: bool = True
    overwrite: bool = False
    compile: bool = False
    activation_checkpointing: str = "none"
    training_args: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.task = resolve_task(self.task)
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"--layer-decay must be in (0, 1], found {self.layer_decay}")
        if self.lora_rank < 0:
            raise ValueError(f"--lora-rank must be >= 0, found {self.lora_rank}")
        if self.activation_checkpointing not in ("none", "full", "selective"):
            raise ValueError(f"--activation-checkpointing must be none, full or selective, found {self.activation_checkpointing!r}")
        if self.freeze_encoder and self.lora_rank:
            raise ValueError("choose --freeze-encoder or --lora-rank, not both")
        for flag, value in (("--batch-size", self.per_device_train_batch_size),
                            ("--eval-batch-size", self.per_device_eval_batch_size),
                            ("--crop-size", 1 if self.crop_size is None else self.crop_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{flag} must be a positive integer, found {value!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"--lr must be a positive number, found {self.learning_rate!r}")
        if self.max_steps <= 0 and not (self.num_train_epochs > 0 and math.isfinite(self.num_train_epochs)):
            raise ValueError(f"--epochs must be positive (or give --max-steps), found {self.num_train_epochs!r}")


# ----------------------------------------------------------------------------------------------------------------
# Scripts (examples/finetune_<task>.py)
# ----------------------------------------------------------------------------------------------------------------
def finetune_argument_parser(description: str | None = None, output_dir: str = "finetune_output", crop_size: int | None = None) -> argparse.ArgumentParser:
    """A parser with the arguments every fine-tuning script shares: `--data`, `--model`, `--output-dir`,
    `--epochs`, `--max-steps`, `--batch-size`, `--lr`, `--layer-decay`, `--freeze-encoder`, `--crop-size`,
    `--overwrite`.

    Each argument's `dest` is a `FinetuneConfig` field (`--data` -> `data_dir`, `--epochs` -> `num_train_epochs`,
    ...), so `config_from_args(parser.parse_args(), task=...)` maps them. Add the task's own arguments to it.

    Args:
        description: the script's help text (its docstring, shown as written).
        output_dir: default of `--output-dir`.
        crop_size: default of `--crop-size` (None keeps full samples).
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", dest="data_dir", metavar="DIR", required=True, help="dataset folder (layout above)")
    parser.add_argument("--model", required=True, help="pretrained model folder, or a preset name (degas-tiny, degas-100m) for random init")
    parser.add_argument("--output-dir", metavar="DIR", default=output_dir, help="results.json, results.md, figures, model/ (default: %(default)s)")
    parser.add_argument("--epochs", dest="num_train_epochs", metavar="N", type=float, default=20, help="default: %(default)s")
    parser.add_argument("--max-steps", metavar="N", type=int, default=-1, help="stop after this many optimiser steps (overrides --epochs)")
    parser.add_argument("--batch-size", dest="per_device_train_batch_size", metavar="N", type=int, default=8, help="default: %(default)s")
    parser.add_argument("--lr", dest="learning_rate", metavar="LR", type=float, default=1e-4, help="default: %(default)s")
    parser.add_argument("--layer-decay", metavar="FACTOR", type=float, default=None, help="layer-wise LR decay, e.g. 0.75")
    parser.add_argument("--freeze-encoder", action="store_true", help="train the decoder and head only")
    parser.add_argument("--crop-size", metavar="PX", type=int, default=crop_size, help="random training / centre evaluation crops (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace the run (results.json, model/) already in --output-dir")
    return parser


def config_from_args(args: argparse.Namespace, **fields) -> FinetuneConfig:
    """`FinetuneConfig` from parsed arguments whose names are config fields (other arguments are left out),
    updated with `fields`. The evaluation batch size defaults to the training one, and `dataset_kwargs` entries
    that are None are dropped (the reader's default applies)."""
    names = {field.name for field in dataclasses.fields(FinetuneConfig)}
    values = {name: value for name, value in vars(args).items() if name in names}
    if "per_device_train_batch_size" in values:
        values.setdefault("per_device_eval_batch_size", values["per_device_train_batch_size"])
    values.update(fields)
    values["dataset_kwargs"] = {k: v for k, v in values.get("dataset_kwargs", {}).items() if v is not None}
    return FinetuneConfig(**values)


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------
def _presets() -> dict:
    from ..models.st_swin_mae.configuration_st_swin_mae import PRESETS

    return PRESETS


def load_base_config(model: str):
    """The configuration of `model` (a preset name or a saved folder / Hub id)."""
    import degas_hf  # noqa: F401  (registers the Auto classes)
    from transformers import AutoConfig

    from ..models.st_swin_mae.configuration_st_swin_mae import STSwinMAEConfig

    if model in _presets():
        return STSwinMAEConfig.from_preset(model)
    check_model_source(model)
    try:
        return AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"--model {model!r}: cannot load its configuration ({first})") from err


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_model_source(model: str) -> None:
    """Refuse, in one line naming `--model`, a model that is neither a preset, a complete model folder with readable
    safetensors weights, nor a Hub id of the form ORG/NAME: a missing path, a file, a folder without config.json,
    a folder whose weights are missing, truncated or garbled, or one that holds only pickle weights (never loaded:
    unpickling runs code)."""
    path = Path(model)
    if not path.exists():
        if _HUB_ID.match(str(model)) and not str(model).startswith((".", "/")):
            return  # a Hub id: transformers resolves it (from the cache when offline)
        raise ValueError(
            f"--model {model!r}: no such folder (expected a saved model folder, a cached Hub id ORG/NAME, or a "
            f"preset: {', '.join(sorted(_presets()))})"
        )
    if not path.is_dir():
        raise ValueError(f"--model {model!r}: expected a model folder, found a file")
    if not (path / "config.json").is_file():
        raise ValueError(f"--model {model!r}: the folder has no config.json (expected a folder written by save_pretrained)")
    check_safetensors_weights(path, what=f"--model {model!r}")


def task_config_overrides(info: TaskInfo, bands: Sequence[str] | None = None) -> dict[str, Any]:
    """Config fields that make ST-SwinUNet fit a task: head size, labels, loss type, frame count (the concat
    temporal aggregation is sized for the task's frames) and, when given, the input bands."""
    overrides = {
        "num_labels": info.num_labels,
        "id2label": {int(k): v for k, v in info.id2label.items()},
        "label2id": {v: int(k) for k, v in info.id2label.items()},
        "problem_type": REGRESSION if info.is_regression else CLASSIFICATION,
        "num_frames": info.num_frames,
        "semantic_loss_ignore_index": IGNORE_INDEX,
    }
    if bands is not None:
        overrides["band_names"] = list(bands)
    return overrides


def load_model_for_task(model: str, info: TaskInfo, bands: Sequence[str] | None = None, **config_overrides):
    """`STSwinUNetForSemanticSegmentation` for a task.

    A preset name builds a randomly initialised model; a folder (or Hub id) loads the pretrained encoder and
    decoder through `AutoModelForSemanticSegmentation.from_pretrained`, with a new head for the task (and new
    patch embedding when `bands` differ from the pretrained ones).
    """
    import degas_hf  # noqa: F401
    from transformers import AutoConfig, AutoModelForSemanticSegmentation

    from ..models.st_swin_mae.configuration_st_swin_mae import STSwinMAEConfig
    from ..models.st_swin_mae.modeling_st_swin_mae import STSwinUNetForSemanticSegmentation

    overrides = {**task_config_overrides(info, bands), **config_overrides}
    if model in _presets():
        return STSwinUNetForSemanticSegmentation(STSwinMAEConfig.from_preset(model, **overrides))
    loaded = AutoModelForSemanticSegmentation.from_pretrained(model, ignore_mismatched_sizes=True, use_safetensors=True, **overrides)
    pretrained_bands = list(AutoConfig.from_pretrained(model).band_names)
    if bands is not None and list(bands) != pretrained_bands:
        select_patch_embedding_bands(loaded, model, pretrained_bands)
    return loaded


def select_patch_embedding_bands(model: torch.nn.Module, checkpoint: str, pretrained_bands: Sequence[str]) -> list[str]:
    """Give the patch embedding of `model` (built for `model.config.band_names`) the pretrained weights of each band
    by NAME, so a band subset or a new order keeps every known band's filters; bands the checkpoint lacks keep their
    fresh initialisation. Returns the new band names (to keep trainable when the encoder is frozen).

    Without this, a task with the same number of bands under other names would silently load the pretrained filters
    onto the wrong bands, and a different number would re-initialise all of them.
    """
    from safetensors import safe_open
    from transformers.utils import cached_file

    from ..models.st_swin_mae.image_processing_st_swin_mae import canonical_band_name

    key = "st_swin_mae.embeddings.patch_embeddings.projection.weight"
    index_file = cached_file(checkpoint, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False)
    filename = json.loads(Path(index_file).read_text())["weight_map"][key] if index_file else "model.safetensors"
    with safe_open(cached_file(checkpoint, filename), framework="pt") as weights:
        pretrained = weights.get_tensor(key)  # (embed_dim, C_pretrained, pt, ph, pw)
    position = {canonical_band_name(b): i for i, b in enumerate(pretrained_bands)}
    projection = model.st_swin_mae.embeddings.patch_embeddings.projection
    new_bands = []
    with torch.no_grad():
        for channel, band in enumerate(model.config.band_names):
            source = position.get(canonical_band_name(band))
            if source is None:
                new_bands.append(band)
            else:
                projection.weight[:, channel] = pretrained[:, source].to(projection.weight.dtype)
    if new_bands:
        logger.warning("Bands %s are new to the pretrained patch embedding: their filters start untrained", new_bands)
    model.new_patch_embedding_bands = new_bands
    return new_bands


def _encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    base = getattr(model, "base_model", model)
    encoder = getattr(model, "st_swin_mae", None) or getattr(base, "st_swin_mae", None)
    if encoder is None:
        raise ValueError(f"{type(model).__name__} has no `st_swin_mae` encoder to freeze")
    return encoder


def freeze_encoder(model: torch.nn.Module) -> int:
    """Freeze the ST-SwinMAE encoder (patch embedding, Swin stages, final norm); decoder and head stay trainable.

    Returns:
        The number of frozen parameters.
    """
    frozen = 0
    encoder = _encoder_of(model)
    # Filters of bands the pretrained model never saw start untrained: freezing them would train on noise.
    keep = {id(encoder.embeddings.patch_embeddings.projection.weight)} if getattr(model, "new_patch_embedding_bands", None) else set()
    for parameter in encoder.parameters():
        if id(parameter) in keep:
            continue
        parameter.requires_grad_(False)
        frozen += parameter.numel()
    return frozen


_NO_DECAY = re.compile(r"(bias$|norm|layernorm|relative_position_bias_table|mask_token)")


def layer_id_for_parameter(name: str, depths: Sequence[int]) -> int:
    """Depth index of a parameter for layer-wise LR decay: 0 = patch embedding, 1..sum(depths) = encoder blocks (a
    stage's patch merging goes with its first block), sum(depths) = final encoder norm, sum(depths)+1 = decoder
    and heads."""
    num_blocks = sum(depths)
    name = name.replace("base_model.model.", "")
    if name.startswith("st_swin_mae.embeddings"):
        return 0
    match = re.match(r"st_swin_mae\.encoder\.stages\.(\d+)\.(?:downsample|blocks\.layers\.(\d+))", name)
    if match:
        stage = int(match[1])
        return 1 + sum(depths[:stage]) + (int(match[2]) if match[2] is not None else 0)
    if name.startswith("st_swin_mae."):
        return num_blocks
    return num_blocks + 1


def layer_decay_parameter_groups(model: torch.nn.Module, learning_rate: float, weight_decay: float, layer_decay: float | None = None) -> list[dict]:
    """AdamW parameter groups with weight decay off for biases / norms / bias tables, and with layer-wise learning
    rate decay (`lr * layer_decay ** (num_layers - layer_id)`, decoder and head at the full rate) when
    `layer_decay` is given. Only trainable parameters are included."""
    depths = list(model.config.depths)
    num_layers = sum(depths) + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decay = not (parameter.ndim <= 1 or _NO_DECAY.search(name))
        layer = layer_id_for_parameter(name, depths) if layer_decay else num_layers
        scale = layer_decay ** (num_layers - layer) if layer_decay else 1.0
        group = groups.setdefault(
            (layer, decay),
            {"params": [], "weight_decay": weight_decay if decay else 0.0, "lr": learning_rate * scale, "lr_scale": scale, "layer_id": layer},
        )
        group["params"].append(parameter)
    return [groups[key] for key in sorted(groups)]


def build_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float = 0.05, layer_decay: float | None = None, betas=(0.9, 0.999)) -> torch.optim.Optimizer:
    """AdamW over `layer_decay_parameter_groups`; pass it as `Trainer(optimizers=(optimizer, None))`."""
    groups = layer_decay_parameter_groups(model, learning_rate, weight_decay, layer_decay)
    for group in groups:
        group.pop("lr_scale"), group.pop("layer_id")
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)


def apply_lora(model: torch.nn.Module, rank: int = 8, alpha: int = 16, dropout: float = 0.0, target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj")):
    """Wrap `model` with LoRA adapters on the attention projections (encoder and decoder); the final expanding,
    temporal aggregation and head stay fully trainable. Needs `peft` (an optional dependency)."""
    try:
        import peft
    except ImportError as err:
        raise ImportError("LoRA fine-tuning needs the optional dependency `peft` (pip install peft)") from err
    heads = [n for n in ("final_expand", "temporal_aggregation", "segmentation_head") if getattr(model, n, None) is not None]
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), modules_to_save=heads)
    return peft.get_peft_model(model, config)


class WeightedCrossEntropyLoss:
    """`Trainer(compute_loss_func=...)`: pixel cross-entropy with class weights, `ignore_index` and nodata pixels
    (labels already carry `ignore_index` there) left out.

    The sum of weighted pixel losses is divided by `num_items_in_batch` (the Trainer's count of labelled pixels over
    the accumulated batch) when given, else by the sum of the weights of the labelled pixels.
    """

    def __init__(self, class_weights: Sequence[float], ignore_index: int = IGNORE_INDEX):
        self.class_weights = torch.as_tensor(list(class_weights), dtype=torch.float32)
        self.ignore_index = ignore_index

    def __call__(self, outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        weight = self.class_weights.to(logits.device)
        losses = torch.nn.functional.cross_entropy(logits.float(), labels.long(), weight=weight, ignore_index=self.ignore_index, reduction="none")
        if num_items_in_batch is not None:
            return losses.sum() / torch.as_tensor(num_items_in_batch, device=losses.device).clamp(min=1)
        labelled = labels != self.ignore_index
        denominator = weight[labels.long().clamp(min=0)][labelled].sum().clamp(min=1e-12)
        return losses.sum() / denominator


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------
def build_task_datasets(config: FinetuneConfig, bands: Sequence[str]) -> dict[str, GeoSegmentationDataset]:
    """Readers for the training, evaluation and test splits, all with the model's `bands`; raises before any
    training when a band, a file or a label is wrong."""
    spec = TASKS[config.task]
    cls = spec.reader_class()
    kwargs = {**spec.reader_kwargs, **config.dataset_kwargs}
    eval_split = config.eval_split or spec.eval_split
    test_splits = tuple(config.test_splits) if config.test_splits is not None else spec.test_splits
    datasets: dict[str, GeoSegmentationDataset] = {}
    datasets["train"] = cls(config.data_dir, spec.train_split, bands=bands, crop_size=config.crop_size, random_crop=config.crop_size is not None, seed=config.seed, **kwargs)
    for split in dict.fromkeys((eval_split, *test_splits)):
        datasets[split] = cls(config.data_dir, split, bands=bands, crop_size=config.crop_size, **kwargs)
    return datasets


def _subset(dataset: GeoSegmentationDataset, limit: int | None) -> GeoSegmentationDataset:
    if limit is not None and limit < len(dataset):
        dataset.samples = dataset.samples[:limit]
    return dataset


# ----------------------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------------------
def build_trainer(model, info: TaskInfo, train_dataset, eval_dataset, output_dir: str, *, optimizer=None, class_weights=None, **training_args):
    """A plain `transformers.Trainer` wired for dense prediction: collator, metrics (accumulated per batch),
    logits reduced to class maps before gathering, optional custom optimizer and weighted loss."""
    from transformers import Trainer, TrainingArguments

    defaults = dict(
        output_dir=output_dir,
        remove_unused_columns=False,
        label_names=["labels"],
        batch_eval_metrics=True,
        report_to="none",
        save_strategy="no",
        eval_strategy="epoch" if eval_dataset is not None else "no",
        logging_strategy="steps",
        logging_steps=10,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    defaults.update(training_args)
    args = TrainingArguments(**defaults)
    if info.is_regression:
        compute_metrics, preprocess = RegressionMetrics(), preprocess_logits_for_regression
    else:
        compute_metrics = SegmentationMetrics(info.num_labels, info.id2label, IGNORE_INDEX)
        preprocess = preprocess_logits_for_segmentation
    return Trainer(
        model=model,
        args=args,
        data_collator=SegmentationDataCollator(),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=preprocess,
        optimizers=(optimizer, None),
        compute_loss_func=WeightedCrossEntropyLoss(class_weights) if class_weights is not None else None,
    )


def _resolve_class_weights(config: FinetuneConfig, info: TaskInfo, label_stats) -> list[float] | None:
    if config.class_weights is None or info.is_regression:
        if config.class_weights is not None:
            raise ValueError("--class-weights applies to classification tasks only")
        return None
    if isinstance(config.class_weights, str):
        method = {"auto": "inverse_sqrt"}.get(config.class_weights, config.class_weights)
        return class_weights_from_counts(label_stats, method)
    weights = [float(w) for w in config.class_weights]
    if len(weights) != info.num_labels:
        raise ValueError(f"--class-weights: {len(weights)} weights given for {info.num_labels} classes")
    return weights


# ----------------------------------------------------------------------------------------------------------------
# Run
# ----------------------------------------------------------------------------------------------------------------
def check_output_dir(output_dir: str | Path, overwrite: bool = False) -> Path:
    """Create `output_dir` and make sure it can be written; refuse a folder that holds a run (`results.json`,
    `model/`) unless `overwrite`. Raises a one-line ValueError."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output-dir {str(output_dir)!r} is a file, not a folder")
    held = [name for name in ("results.json", "model") if (output_dir / name).exists()]
    if held and not overwrite:
        raise ValueError(
            f"--output-dir {str(output_dir)!r} already holds a fine-tuning run ({', '.join(held)}); pass --overwrite "
            "to replace it, or choose another folder"
        )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".degas-write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--output-dir {str(output_dir)!r} cannot be written: {_os_reason(err)}") from None
    return output_dir


def _os_reason(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return "no space left on device"
    return err.strerror or str(err)


def default_model_name(model: str, task: str) -> str:
    """`<model>-<task>`, where a folder with a generic name (`model`, `final`, `export`, `checkpoint-*`) is named
    after its parent (`degas-demo/model` -> `degas-demo-<task>`)."""
    path = Path(str(model).rstrip("/") or "/")
    name = path.name or path.resolve().name
    if re.fullmatch(r"(model|final|export|pretrained|checkpoint[-_]?\d*)", name, flags=re.I) and path.resolve().parent.name:
        name = path.resolve().parent.name
    return f"{name}-{task}"


def pretrained_processor(model: str):
    """The image processor saved with a model folder (or cached Hub id), or None for a preset or a folder without
    `preprocessor_config.json`."""
    if model in _presets():
        return None
    from transformers.utils import cached_file

    from ..models.st_swin_mae.image_processing_st_swin_mae import STSwinMAEImageProcessor

    found = cached_file(model, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    if not found:
        return None
    try:
        return STSwinMAEImageProcessor.from_pretrained(str(Path(found).parent))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ValueError(f"--model {model!r}: its preprocessor_config.json cannot be read ({err})") from None


def task_processor(train_dataset, bands: Sequence[str], inherited_from=None, source: str = "", log=None):
    """The image processor of a generic fine-tuning run (saved with the model, used by predict).

    Bands the pretrained processor (`inherited_from`) knows keep its statistics, rescale factor and nodata value, so
    the encoder sees inputs normalised as in pretraining; the others get a mean and standard deviation estimated on
    the training split (`train_dataset.estimate_band_stats`). Says which it did through `log`. Returns
    `(processor, summary)`."""
    from ..models.st_swin_mae.image_processing_st_swin_mae import STSwinMAEImageProcessor, canonical_band_name

    log = log or logger.warning
    bands = list(bands)
    user_stats = dict(getattr(train_dataset, "band_stats", {}) or {})
    estimated = train_dataset.estimate_band_stats(bands)
    known = {}
    if inherited_from is not None:
        known = {canonical_band_name(b): (m, s) for b, m, s in
                 zip(inherited_from.band_names, inherited_from.image_mean, inherited_from.image_std)}
    scale = float(inherited_from.rescale_factor) if inherited_from is not None and inherited_from.do_rescale else 1.0
    means, stds, inherited, from_data, given = [], [], [], [], []
    for band in bands:
        key = canonical_band_name(band)
        if band in user_stats:
            mean, std = (float(v) * scale for v in user_stats[band])
            given.append(band)
        elif key in known:
            mean, std = known[key]
            inherited.append(band)
            data_mean = estimated[band][0] * scale
            if abs(data_mean - mean) > 5 * std:
                log(f"warning: band {band}: the training images' mean {estimated[band][0]:.4g} is "
                    f"{abs(data_mean - mean) / std:.0f} pretraining standard deviations from the pretrained mean; "
                    "are the images in the units the model was pretrained on?")
        else:
            mean, std = (v * scale for v in estimated[band])
            from_data.append(band)
        means.append(float(mean)), stds.append(float(std))
    processor = STSwinMAEImageProcessor(
        band_names=bands, image_mean=means, image_std=stds,
        do_rescale=inherited_from.do_rescale if inherited_from is not None else False,
        rescale_factor=inherited_from.rescale_factor if inherited_from is not None else 1.0,
        nodata_value=inherited_from.nodata_value if inherited_from is not None else None,
        fill_value=inherited_from.fill_value if inherited_from is not None else 0.0,
        preset=inherited_from.preset if inherited_from is not None and not from_data and not given else None,
    )
    parts = []
    if inherited:
        parts.append(f"inherited from {source} for {inherited}")
    if from_data:
        parts.append(f"estimated from {len(train_dataset)} training images for {from_data}")
    if given:
        parts.append(f"given (band_stats) for {given}")
    log("normalisation: " + "; ".join(parts) + " (saved in the model's preprocessor_config.json)")
    return processor, {"inherited": inherited, "estimated": from_data, "given": given, "source": source or None}


def _save_model_folder(model, processor, final: Path) -> None:
    """Write the Hub-ready folder (weights, config with `custom_pipelines`, processor, code) to a temporary
    sibling and swap it in, so a failure (disk full) never leaves a half-written model and keeps the previous one."""
    from ..hub.folder import prepare_hub_folder

    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        prepare_hub_folder(model, processor, tmp)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            os.replace(old, final)
        raise ValueError(f"cannot write the model to {final}: {_os_reason(err)}"
                         + ("; the previous model is kept" if final.exists() else "")) from None
    shutil.rmtree(old, ignore_errors=True)


def finetune(config: FinetuneConfig, log=None) -> dict:
    """Fine-tune, evaluate and write results; returns the results dictionary (the content of `results.json`).

    `log` (default: this module's logger, warning level) receives the one-line notes a user should see: the
    normalisation used, an automatic train/held-out split."""
    log = log or logger.warning
    output_dir = check_output_dir(config.output_dir, config.overwrite)
    torch.manual_seed(config.seed)

    base_config = load_base_config(config.model)
    bands = list(config.bands) if config.bands is not None else list(base_config.band_names)
    reader_logger = logging.getLogger("degas_hf.data.generic_segmentation")
    level = reader_logger.level
    reader_logger.setLevel(logging.ERROR)  # the run says it itself below (an automatic split), through `log`
    try:
        datasets = build_task_datasets(config, bands)  # band mapping, files and sizes checked here
    finally:
        reader_logger.setLevel(level)
    train_dataset = _subset(datasets["train"], config.max_train_samples)
    spec = TASKS[config.task]
    eval_split = config.eval_split or spec.eval_split
    for split, dataset in datasets.items():
        if split != "train":
            _subset(dataset, config.max_eval_samples)
    info = train_dataset.info

    normalization = None
    if config.task == "generic":
        source = pretrained_processor(config.model)
        processor, normalization = task_processor(train_dataset, bands, source, str(config.model), log=log)
        for dataset in datasets.values():
            dataset.processor = processor
    automatic_split = getattr(train_dataset, "automatic_split", None)
    if automatic_split:
        log(f"no split files in {config.data_dir}: trained on {automatic_split['train']} images, evaluated on "
            f"{len(automatic_split['held_out'])} held out with seed {automatic_split['seed']} "
            f"({', '.join(automatic_split['held_out'][:5])}{' ...' if len(automatic_split['held_out']) > 5 else ''})")

    label_stats = None
    if config.check_labels:
        for split, dataset in datasets.items():
            stats = dataset.validate_labels()  # raises, naming the file, on a value outside the class range
            if split == "train":
                label_stats = stats
    if config.class_weights is not None and label_stats is None and isinstance(config.class_weights, str):
        label_stats = datasets["train"].validate_labels()
    class_weights = _resolve_class_weights(config, info, label_stats)

    model = load_model_for_task(config.model, info, bands if config.bands is not None else None)
    total_parameters = sum(p.numel() for p in model.parameters())
    if config.activation_checkpointing != "none":
        from .activation_checkpointing import enable_activation_checkpointing

        enable_activation_checkpointing(model, config.activation_checkpointing)
    if config.freeze_encoder:
        freeze_encoder(model)
    if config.lora_rank:
        model = apply_lora(model, config.lora_rank, config.lora_alpha, config.lora_dropout)
    trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = None
    if config.layer_decay not in (None, 1.0) or config.freeze_encoder or config.lora_rank:
        target = model.base_model.model if config.lora_rank else model
        optimizer = build_optimizer(target, config.learning_rate, config.weight_decay, config.layer_decay if config.layer_decay != 1.0 else None)
    trained_model = model
    if config.compile:
        from .compile import compile_model  # lazily: torch.compile is only touched when asked for

        trained_model = compile_model(model)

    training_args = dict(
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_scheduler_type,
        seed=config.seed,
        dataloader_num_workers=config.dataloader_num_workers,
        logging_steps=config.logging_steps,
        eval_strategy=config.eval_strategy,
        save_strategy=config.save_strategy,
    )
    training_args.update(config.training_args)
    trainer = build_trainer(
        trained_model, info, train_dataset, datasets[eval_split], str(output_dir / "checkpoints"),
        optimizer=optimizer, class_weights=class_weights, **training_args,
    )
    start = time.perf_counter()
    train_output = trainer.train()
    train_seconds = time.perf_counter() - start
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    evaluations, confusion = {}, {}
    for split, dataset in datasets.items():
        if split == "train":
            continue
        evaluations[split] = trainer.evaluate(dataset, metric_key_prefix=split)
        if isinstance(trainer.compute_metrics, SegmentationMetrics):
            confusion[split] = trainer.compute_metrics.last_confusion_matrix

    model_name = config.model_name or default_model_name(config.model, config.task)
    figures = {}
    if config.figures:
        figure_split = next((s for s in (spec.test_splits[0] if spec.test_splits else None, eval_split) if s in datasets), eval_split)
        figures = write_figures(trainer.model, datasets[figure_split], info, output_dir, figure_split, confusion.get(figure_split), config.num_figure_samples)

    if config.save_model:
        processor = datasets["train"].processor
        if processor is None or not hasattr(processor, "save_pretrained"):
            raise ValueError("the task's reader has no image processor to save with the model")
        to_save = model.merge_and_unload() if config.lora_rank else model
        _save_model_folder(to_save.eval(), processor, output_dir / "model")

    results = build_results(
        info=info, model_name=model_name, base_model=str(config.model), evaluations=evaluations, confusion=confusion,
        training={
            "epochs": config.num_train_epochs,
            "max_steps": config.max_steps,
            "global_steps": int(train_output.global_step),
            "per_device_train_batch_size": config.per_device_train_batch_size,
            "learning_rate": config.learning_rate,
            "weight_decay": config.weight_decay,
            "lr_scheduler_type": config.lr_scheduler_type,
            "freeze_encoder": config.freeze_encoder,
            "layer_decay": config.layer_decay,
            "lora_rank": config.lora_rank,
            "class_weights": class_weights,
            "crop_size": config.crop_size,
            "seed": config.seed,
            "train_samples": len(train_dataset),
            "train_loss_first": losses[0] if losses else None,
            "train_loss_last": losses[-1] if losses else None,
            "train_loss": float(train_output.training_loss),
            "train_runtime_s": train_seconds,
            "train_samples_per_second": train_output.metrics.get("train_samples_per_second"),
            "total_parameters": int(total_parameters),
            "trainable_parameters": int(trainable_parameters),
            "dataset_kwargs": {k: (v if isinstance(v, (int, float, str, bool, type(None), list)) else str(v)) for k, v in config.dataset_kwargs.items()},
            "normalization": normalization,
            "automatic_split": automatic_split,
            # How each split's samples were chosen, for readers that record it (PhilEO Bench's n-shot protocol).
            "data_protocol": {split: ds.protocol for split, ds in datasets.items() if getattr(ds, "protocol", None)},
        },
        figures=figures,
    )
    write_results(results, output_dir)
    return results


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------
METRIC_NAMES = {
    "mean_iou": "mIoU",
    "overall_accuracy": "Overall accuracy",
    "mean_accuracy": "Mean accuracy",
    "mse": "MSE",
    "rmse": "RMSE",
    "mae": "MAE",
    "loss": "Loss",
}


def build_results(info: TaskInfo, model_name: str, base_model: str, evaluations: dict[str, dict], confusion=None, training=None, figures=None) -> dict:
    """The results dictionary (schema version 1, documented in docs/finetuning.md)."""
    from .. import __version__

    rows, per_class = [], {}
    headline = ("mse", "rmse", "mae") if info.is_regression else ("mean_iou", "overall_accuracy", "mean_accuracy")
    for split, metrics in evaluations.items():
        for metric in headline:
            value = metrics.get(f"{split}_{metric}")
            if value is not None:
                rows.append({"split": split, "metric": metric, "name": METRIC_NAMES[metric], "value": float(value)})
        if not info.is_regression:
            per_class[split] = {
                "iou": {label: _nan_to_none(metrics.get(f"{split}_iou_{_key(label)}")) for label in info.id2label.values()},
                "accuracy": {label: _nan_to_none(metrics.get(f"{split}_accuracy_{_key(label)}")) for label in info.id2label.values()},
            }
            if confusion and confusion.get(split) is not None:
                per_class[split]["confusion_matrix"] = np.asarray(confusion[split]).tolist()
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "degas_hf_version": __version__,
        "task": {
            "name": info.name,
            "type": "image-segmentation",
            "problem_type": info.problem_type,
            "dataset_name": info.dataset_name,
            "dataset_type": info.name,
            "num_labels": info.num_labels,
            "id2label": {str(k): v for k, v in info.id2label.items()},
            "band_names": list(info.band_names),
            "num_frames": info.num_frames,
        },
        "model": {"name": model_name, "base_model": base_model},
        "results": [{**row, "value": _nan_to_none(row["value"])} for row in rows],
        "per_class": per_class,
        "raw_metrics": {split: {k: _nan_to_none(v) if isinstance(v, float) else v for k, v in m.items()} for split, m in evaluations.items()},
        "training": training or {},
        "figures": figures or {},
    }


def _key(label: str) -> str:
    from .metrics import _metric_key

    return _metric_key(label)


def _nan_to_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def markdown_rows(results: dict, header: bool = True) -> str:
    """The results as Markdown table rows `| task | model | split | metric | value |`."""
    lines = ["| task | model | split | metric | value |", "| --- | --- | --- | --- | --- |"] if header else []
    for row in results["results"]:
        value = "n/a" if row["value"] is None else f"{row['value']:.4f}"
        lines.append(f"| {results['task']['name']} | {results['model']['name']} | {row['split']} | {row['name']} | {value} |")
    return "\n".join(lines) + "\n"


def write_results(results: dict, output_dir: str | Path) -> tuple[Path, Path]:
    """Write `results.json` and `results.md` into `output_dir` (each to a temporary name, then renamed); returns
    both paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / "results.json", output_dir / "results.md"
    for path, text in ((json_path, json.dumps(results, indent=2, allow_nan=False) + "\n"), (md_path, markdown_rows(results))):
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise ValueError(f"cannot write {path}: {_os_reason(err)}") from None
    return json_path, md_path


# ----------------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------------
def _rgb(pixel_values: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """A display image `(H, W, 3)` from normalised `(C, T, H, W)`: B04/B03/B02 of the last frame (else the first
    three channels), 2-98 % stretched."""
    names = [b.upper() for b in bands]
    want = [("B04", "B4"), ("B03", "B3"), ("B02", "B2")]
    indices = []
    for options in want:
        index = next((names.index(o) for o in options if o in names), None)
        indices.append(index)
    if None in indices:
        indices = [min(i, len(names) - 1) for i in range(3)]
    rgb = pixel_values[indices, -1].transpose(1, 2, 0).astype(np.float64)
    low, high = np.percentile(rgb, 2), np.percentile(rgb, 98)
    return np.clip((rgb - low) / max(high - low, 1e-6), 0, 1)


def write_figures(model, dataset: GeoSegmentationDataset, info: TaskInfo, output_dir: Path, split: str, confusion=None, num_samples: int = 4) -> dict[str, str]:
    """`confusion_matrix_<split>.png` (classification) and `predictions_<split>.png` (input, label, prediction for
    a few samples). Returns figure names relative to `output_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {}
    if confusion is not None and not info.is_regression:
        matrix = np.asarray(confusion, dtype=np.float64)
        normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        labels = [info.id2label[i] for i in range(info.num_labels)]
        size = max(4.0, 0.5 * len(labels) + 2)
        fig, ax = plt.subplots(figsize=(size, size))
        image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        ax.set_title(f"{info.dataset_name} ({split}): row-normalised confusion matrix")
        if len(labels) <= 15:
            for r in range(len(labels)):
                for c in range(len(labels)):
                    ax.text(c, r, f"{normalised[r, c]:.2f}", ha="center", va="center", fontsize=7, color="white" if normalised[r, c] > 0.5 else "black")
        fig.colorbar(image, ax=ax, fraction=0.046)
        fig.tight_layout()
        name = f"confusion_matrix_{split}.png"
        fig.savefig(output_dir / name, dpi=100)
        plt.close(fig)
        figures["confusion_matrix"] = name

    count = min(num_samples, len(dataset))
    if count == 0:
        return figures
    collator = SegmentationDataCollator()
    items = [dataset[i] for i in range(count)]
    batch = collator(items)
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(pixel_values=batch["pixel_values"].to(device), valid_mask=batch["valid_mask"].to(device)).logits.cpu()
    predictions = logits[:, 0].numpy() if info.is_regression else logits.argmax(1).numpy()
    fig, axes = plt.subplots(count, 3, figsize=(9, 3 * count), squeeze=False)
    for row, item in enumerate(items):
        label = item["labels"].numpy().astype(np.float64)
        prediction = predictions[row].astype(np.float64)
        if info.is_regression:
            finite = label[np.isfinite(label)]
            vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            kwargs = dict(cmap="viridis", vmin=vmin, vmax=max(vmax, vmin + 1e-6))
        else:
            label = np.where(label == IGNORE_INDEX, np.nan, label)
            kwargs = dict(cmap="tab20" if info.num_labels > 10 else "tab10", vmin=0, vmax=(20 if info.num_labels > 10 else 10) - 1, interpolation="nearest")
        axes[row, 0].imshow(_rgb(item["pixel_values"].numpy(), info.band_names))
        axes[row, 1].imshow(label, **kwargs)
        axes[row, 2].imshow(prediction, **kwargs)
        key = dataset.samples[row].key
        for col, title in enumerate(("input (RGB, last frame)", "label", "prediction")):
            axes[row, col].set_title(f"{title}\n{key}" if col == 0 else title, fontsize=8)
            axes[row, col].axis("off")
    fig.suptitle(f"{info.dataset_name} ({split})")
    fig.tight_layout()
    name = f"predictions_{split}.png"
    fig.savefig(output_dir / name, dpi=80)
    plt.close(fig)
    figures["predictions"] = name
    return figures


__all__ = [
    "TASKS",
    "TaskSpec",
    "FinetuneConfig",
    "finetune_argument_parser",
    "config_from_args",
    "resolve_task",
    "load_base_config",
    "load_model_for_task",
    "task_config_overrides",
    "freeze_encoder",
    "layer_id_for_parameter",
    "layer_decay_parameter_groups",
    "build_optimizer",
    "apply_lora",
    "WeightedCrossEntropyLoss",
    "build_task_datasets",
    "build_trainer",
    "finetune",
    "check_output_dir",
    "check_model_source",
    "check_safetensors_weights",
    "default_model_name",
    "pretrained_processor",
    "task_processor",
    "build_results",
    "markdown_rows",
    "write_results",
    "write_figures",
]
