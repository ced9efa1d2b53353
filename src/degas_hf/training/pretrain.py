"""Masked-autoencoder pretraining of ST-SwinMAE with Accelerate: DDP by default, FSDP / DeepSpeed by accelerate
config, resumable, exactly reproducible on CPU.

Run it as any of::

    degas-hf pretrain CONFIG.yaml train.max_steps=1000 data.root=/data/ssl4eo-s12 [--resume]
    accelerate launch [--config_file configs/accelerate_fsdp.yaml] -m degas_hf.training.pretrain CONFIG.yaml ...
    torchrun --nproc_per_node 8 -m degas_hf.training.pretrain CONFIG.yaml ...
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m degas_hf.training.pretrain CONFIG.yaml ...   # CPU, gloo

The configuration (YAML; every key documented in `PretrainConfig` and in docs/pretraining.md) is checked before
anything is built: an unknown key is an error naming it. Overrides on the command line are `dotted.key=value`
with YAML values (`optim.betas=[0.9,0.95]`).

Determinism and resumption. Every sample (crop, dates, mask) is a function of `(seed, epoch, index)` only; the
:class:`ShardedBatchSampler` gives rank r the r-th slice of each global batch of a seeded permutation; the data
position is one integer (micro-batches consumed). A checkpoint holds model, optimizer, scheduler, RNG states of
every rank and that position, so a resumed run repeats the uninterrupted one exactly (bit for bit on CPU with the
same number of processes and threads).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import errno
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

logger = logging.getLogger("degas_hf.pretrain")

__all__ = [
    "ConfigError",
    "PretrainConfig",
    "load_config",
    "ShardedBatchSampler",
    "build_dataset",
    "build_processor",
    "build_model",
    "param_groups",
    "cosine_with_warmup",
    "train",
    "main",
]


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key (and the file)."""


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ModelSection:
    preset: str = "degas-100m"  # STSwinMAEConfig preset: "degas-100m" or "degas-tiny"
    config: dict = field(default_factory=dict)  # STSwinMAEConfig fields overriding the preset (mask_ratio, ...)
    init_from: str | None = None  # a saved STSwinMAEForPreTraining folder to start from (else random init)
    # none, full (or true) or selective: recompute in the backward for less memory per sample
    # (degas_hf.training.activation_checkpointing)
    activation_checkpointing: str = "none"


@dataclass
class DataSection:
    format: str = "ssl4eo_s12"  # ssl4eo_s12 (raw GeoTIFF), prepared (degas-hf prepare-ssl4eo), ssl4eo_s12_zarr, timeseries_folder
    root: str | None = None  # dataset folder (zarr: folder or file)
    split: str | None = None  # ssl4eo_s12_zarr: train or val, when data.root holds both
    modality: str = "s2a"  # SSL4EO-S12: s2a (L2A), s2c (L1C), s1
    normalization: str | None = None  # image-processor preset; default from modality (ssl4eo-s12-l2a, ...)
    band_names: list | None = None  # default: the model's band_names
    crop_size: int | None = None  # default: the model's image_size
    num_frames: int | None = None  # timeseries_folder: dates per sample (default: the model's num_frames)
    frame_sampling: str = "random"  # timeseries_folder: random, consecutive, first, all
    samples_per_item: int = 1  # samples (crops / date subsets) per location or series per epoch
    in_memory: bool = False  # timeseries_folder: cache the files in memory (small datasets)
    file_band_names: list | None = None  # timeseries_folder: band names of files without band descriptions
    nodata: float | None = None  # override the files' nodata value
    dn_offset: int | None = None  # ssl4eo_s12_zarr: subtracted from S2 values (default 1000, the zarr offset)
    grid_size: int | None = None  # ssl4eo_s12: sample grid in pixels (default: the 10 m grid, 264 px)
    shuffle_shards: int = 8  # prepared: shards whose samples are shuffled together (read locality)
    validate: str = "auto"  # ssl4eo_s12: auto, full, quick, none (checks the tree before training); prepared: full = SHA-256
    num_workers: int = 4
    prefetch_factor: int = 4
    shuffle: bool = True


@dataclass
class OptimSection:
    lr: float = 1.5e-4  # peak learning rate (MAE: 1.5e-4 x global_batch / 256)
    min_lr: float = 0.0  # floor of the cosine
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.05  # not applied to biases, norms, bias tables, mask token
    eps: float = 1e-8
    warmup_steps: int = 0  # linear warm-up (optimizer steps)
    warmup_ratio: float = 0.0  # used when warmup_steps is 0
    max_grad_norm: float | None = 1.0  # clipping; null disables it


@dataclass
class TrainSection:
    max_steps: int = 1000  # optimizer steps
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no, bf16, fp16
    seed: int = 0
    find_unused_parameters: bool = False  # DDP
    static_graph: bool = False  # DDP
    compile: bool = False  # torch.compile the model (degas_hf.training.compile.compile_model)
    threads: int | None = None  # torch.set_num_threads on CPU
    max_minutes: float | None = None  # also stop (checkpoint + export) once training ran this long; checked at log steps


@dataclass
class LoggingSection:
    log_every: int = 10  # steps between log lines / TensorBoard points
    figure_every: int = 500  # steps between reconstruction figures (0: never)
    tensorboard: bool = True
    progress_bar: bool = True


@dataclass
class CheckpointSection:
    save_every: int = 1000  # steps between checkpoints (0: only at the end)
    keep_last: int = 3  # complete checkpoints kept (0: all)
    checksums: bool = True  # SHA-256 of every file in the manifest (verified on resume)
    save_final: bool = True  # also checkpoint the last step


@dataclass
class PretrainConfig:
    output_dir: str = "runs/pretrain"
    export_dir: str | None = None  # Hub-ready folder at the end (default: OUTPUT_DIR/final)
    overwrite: bool = False  # replace an existing export_dir model / a finished run in output_dir
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {f.name: f for f in fields(PretrainConfig)}
DATA_FORMATS = ("ssl4eo_s12", "prepared", "ssl4eo_s12_zarr", "timeseries_folder")
_FREE_FORM = {("model", "config")}  # dicts whose keys are checked later (against STSwinMAEConfig)


def _all_keys(cls, prefix="") -> list[str]:
    out = []
    for f in fields(cls):
        t = f.default_factory if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if dataclasses.is_dataclass(t):
            out += _all_keys(t, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def _unknown(key: str, source: str) -> ConfigError:
    keys = _all_keys(PretrainConfig)
    hint = difflib.get_close_matches(key, keys, n=1)
    return ConfigError(f"unknown config key {key!r} in {source}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                       + f"; valid keys: {', '.join(keys)}")


def _coerce(value, default, key: str, source: str):
    """Light type check against the default's type (YAML already typed the value)."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} in {source} must be true/false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"config key {key!r} in {source} must be an integer, got {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                return float(value)  # YAML reads "1e-4" (no dot) as a string
            except (TypeError, ValueError):
                raise ConfigError(f"config key {key!r} in {source} must be a number, got {value!r}") from None
        return float(value)
    if isinstance(default, str) and isinstance(value, bool):
        return "yes" if value else "no"  # YAML 1.1 reads a bare `no` (mixed_precision: no) as false
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"config key {key!r} in {source} must be a string, got {value!r}")
    if isinstance(default, (list, dict)) and not isinstance(value, type(default)):
        raise ConfigError(f"config key {key!r} in {source} must be a {type(default).__name__}, got {value!r}")
    return value


def _apply(cfg: PretrainConfig, data: dict, source: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the configuration must be a mapping of sections, got {type(data).__name__}")
    for key, value in data.items():
        if key not in _SECTIONS:
            raise _unknown(key, source)
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"config section {key!r} in {source} must be a mapping, got {value!r}")
            names = {f.name for f in fields(current)}
            for sub, sub_value in value.items():
                if sub not in names:
                    raise _unknown(f"{key}.{sub}", source)
                if (key, sub) in _FREE_FORM:
                    merged = dict(getattr(current, sub))
                    merged.update(sub_value or {})
                    setattr(current, sub, merged)
                else:
                    setattr(current, sub, _coerce(sub_value, getattr(current, sub), f"{key}.{sub}", source))
        else:
            setattr(cfg, key, _coerce(value, current, key, source))


def parse_override(text: str) -> tuple[list[str], Any]:
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r} is not KEY=VALUE (e.g. train.max_steps=100)")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {err}") from None
    return key.split("."), value


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                base: dict | None = None) -> PretrainConfig:
    """Defaults <- `base` dict <- YAML file <- `key=value` overrides. Unknown keys raise :class:`ConfigError`."""
    import yaml

    cfg = PretrainConfig()
    if base:
        _apply(cfg, base, "the built-in configuration")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        _apply(cfg, data, str(path))
    for text in overrides:
        parts, value = parse_override(text)
        nested: Any = value
        for part in reversed(parts[1:]):
            nested = {part: nested}
        if len(parts) > 1 and (parts[0], parts[1]) in _FREE_FORM and len(parts) == 2:
            raise ConfigError(f"override {text!r}: set single fields, e.g. {parts[0]}.{parts[1]}.mask_ratio=0.9")
        if len(parts) > 3 or (len(parts) == 3 and (parts[0], parts[1]) not in _FREE_FORM):
            raise _unknown(".".join(parts), "the command line")
        _apply(cfg, {parts[0]: nested}, "the command line")
    _check(cfg)
    return cfg


def _check(cfg: PretrainConfig) -> None:
    if cfg.train.max_steps < 1:
        raise ConfigError("train.max_steps must be >= 1")
    if cfg.train.per_device_batch_size < 1 or cfg.train.gradient_accumulation_steps < 1:
        raise ConfigError("train.per_device_batch_size and train.gradient_accumulation_steps must be >= 1")
    if cfg.train.mixed_precision not in ("no", "bf16", "fp16"):
        raise ConfigError(f"train.mixed_precision must be no, bf16 or fp16, got {cfg.train.mixed_precision!r}")
    # true/false (read as yes/no, see _coerce) keep their former meaning: full / none
    mode = {"yes": "full", "no": "none"}.get(cfg.model.activation_checkpointing, cfg.model.activation_checkpointing)
    if mode not in ("none", "full", "selective"):
        raise ConfigError(f"model.activation_checkpointing must be none, full or selective, got {mode!r}")
    cfg.model.activation_checkpointing = mode
    if cfg.data.format not in DATA_FORMATS:
        raise ConfigError(f"data.format must be one of {', '.join(DATA_FORMATS)}, got {cfg.data.format!r}")
    for key in ("crop_size", "grid_size", "num_frames"):
        value = getattr(cfg.data, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"data.{key} must be a positive number of pixels/dates (or null for the default), "
                              f"got {value}")
    for section, key, low in (("data", "samples_per_item", 1), ("data", "num_workers", 0), ("data", "shuffle_shards", 1),
                              ("data", "prefetch_factor", 1), ("checkpoint", "save_every", 0),
                              ("checkpoint", "keep_last", 0), ("logging", "figure_every", 0)):
        value = getattr(getattr(cfg, section), key)
        if value is None and key in ("save_every", "keep_last", "figure_every", "prefetch_factor"):
            continue  # null: off / keep all / DataLoader's default, as before these checks
        if value is None or value < low:
            extra = " (0 keeps every checkpoint)" if key == "keep_last" else ""
            raise ConfigError(f"{section}.{key} must be >= {low}{extra}, got {value}")
    if not cfg.data.root:
        raise ConfigError("data.root is not set (the dataset folder)")
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"optim.betas must be two numbers, got {cfg.optim.betas!r}")
    if cfg.optim.lr <= 0:
        raise ConfigError("optim.lr must be > 0")
    for key in ("log_every",):
        if getattr(cfg.logging, key) < 1:
            raise ConfigError(f"logging.{key} must be >= 1")


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and all(isinstance(x, str) for x in v):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------


def build_model_config(cfg: PretrainConfig):
    from degas_hf.models.st_swin_mae.configuration_st_swin_mae import STSwinMAEConfig

    import inspect

    allowed = set(inspect.signature(STSwinMAEConfig.__init__).parameters) - {"self", "kwargs"}
    bad = [k for k in cfg.model.config if k not in allowed]
    if bad:
        hint = difflib.get_close_matches(bad[0], sorted(allowed), n=1)
        raise ConfigError(f"unknown config key 'model.config.{bad[0]}' (not an STSwinMAEConfig field"
                          + (f"; did you mean {hint[0]!r}?)" if hint else ")"))
    try:
        if cfg.model.init_from:
            conf = STSwinMAEConfig.from_pretrained(cfg.model.init_from, **cfg.model.config)
        else:
            conf = STSwinMAEConfig.from_preset(cfg.model.preset, **cfg.model.config)
    except (ValueError, OSError) as err:
        raise ConfigError(f"model: {err}") from err
    return conf


_DEFAULT_NORMALIZATION = {"s2a": "ssl4eo-s12-l2a", "s2c": "ssl4eo-s12-l1c", "s1": "ssl4eo-s12-s1"}


def build_processor(cfg: PretrainConfig, model_config):
    from degas_hf.data.ssl4eo import _modality
    from degas_hf.models.st_swin_mae.image_processing_st_swin_mae import STSwinMAEImageProcessor

    preset = cfg.data.normalization
    if preset is None and cfg.data.format == "prepared":
        from degas_hf.data.prepared import read_manifest

        preset = read_manifest(cfg.data.root).get("normalization")  # written by prepare-ssl4eo for its source
    if preset is None:
        modality = _modality(cfg.data.modality)
        if cfg.data.format == "ssl4eo_s12_zarr" and modality != "s1":
            preset = {"s2a": "ssl4eo-s12-v1.1-l2a", "s2c": "ssl4eo-s12-v1.1-l1c"}[modality]
        else:
            preset = _DEFAULT_NORMALIZATION[modality]
    try:
        return STSwinMAEImageProcessor.from_preset(preset, band_names=list(model_config.band_names))
    except ValueError as err:
        raise ConfigError(f"data.normalization: {err}") from err


def build_dataset(cfg: PretrainConfig, model_config, processor):
    """The training dataset, validated (missing bands / seasons, corrupt or empty folders raise DataError)."""
    from degas_hf.data.ssl4eo import SSL4EOS12Dataset, SSL4EOS12ZarrDataset
    from degas_hf.data.timeseries_folder import TimeSeriesFolderDataset, canonical_band_name

    d = cfg.data
    bands = list(d.band_names or model_config.band_names)
    missing = [b for b in model_config.band_names if canonical_band_name(b) not in {canonical_band_name(x) for x in bands}]
    if missing:
        raise ConfigError(f"data.band_names {bands} lack the model's band(s) {missing} (model bands: "
                          f"{list(model_config.band_names)})")
    crop = d.crop_size if d.crop_size is not None else int(model_config.image_size[0])
    seed = cfg.train.seed
    # readers that can give raw values do: workers only decode and slice, normalisation runs in the training step
    # on the accelerator (DeviceNormalizer), bit for bit the processor's arithmetic
    if d.format == "ssl4eo_s12":
        return SSL4EOS12Dataset(d.root, modality=d.modality, band_names=bands, crop_size=crop, processor=processor,
                                seed=seed, validate=d.validate, nodata=d.nodata,
                                samples_per_location=d.samples_per_item, grid_size=d.grid_size, output="raw")
    if d.format == "prepared":
        from degas_hf.data.prepared import PreparedDataset

        return PreparedDataset(d.root, band_names=bands, crop_size=crop, processor=processor, seed=seed,
                               samples_per_item=d.samples_per_item, validate=d.validate, output="raw")
    if d.format == "ssl4eo_s12_zarr":
        return SSL4EOS12ZarrDataset(d.root, band_names=bands, modality=d.modality, crop_size=crop,
                                    processor=processor, seed=seed, dn_offset=d.dn_offset, split=d.split,
                                    samples_per_item=d.samples_per_item, output="raw")
    return TimeSeriesFolderDataset(d.root, band_names=bands, num_frames=d.num_frames or model_config.num_frames,
                                   frame_sampling=d.frame_sampling, crop_size=crop, processor=processor, seed=seed,
                                   samples_per_series=d.samples_per_item, file_band_names=d.file_band_names,
                                   nodata=d.nodata, in_memory=d.in_memory)


class ShardedBatchSampler(torch.utils.data.Sampler):
    """Endless batches of `(epoch, index)` keys for one rank.

    Epoch e is a permutation of the dataset seeded by `(seed, e)`, cut into global batches of
    `batch_size * num_replicas` (the incomplete tail is dropped); rank r takes the r-th `batch_size` slice of each.
    So 2 ranks x batch b see exactly the samples of 1 rank x batch 2b. Iteration starts at global micro-batch
    `start` (the resume position) and never ends: the training loop stops it.

    With `groups` (the `[start, stop)` index ranges of a prepared dataset's shards) the permutation keeps read
    locality: the shard order is shuffled, then the samples of each run of `shuffle_groups` consecutive shards are
    shuffled together, so at any time the readers of every rank and worker touch only a few shards (sequential
    reads of large files, a warm page cache) while batches still mix `shuffle_groups` shards.
    """

    def __init__(self, num_samples: int, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True, start: int = 0, groups: Sequence[tuple[int, int]] | None = None,
                 shuffle_groups: int = 8):
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.start = int(start)
        self.groups = None if groups is None else [(int(a), int(b)) for a, b in groups]
        self.shuffle_groups = max(1, int(shuffle_groups))
        if self.groups is not None and sum(b - a for a, b in self.groups) != self.num_samples:
            raise ValueError(f"groups cover {sum(b - a for a, b in self.groups)} samples, the dataset has "
                             f"{self.num_samples}")
        self.global_batch = self.batch_size * self.num_replicas
        self.batches_per_epoch = self.num_samples // self.global_batch
        if self.batches_per_epoch < 1:
            raise ConfigError(f"the dataset has {self.num_samples} samples, fewer than one global batch "
                              f"({self.batch_size} per device x {self.num_replicas} processes); lower "
                              "train.per_device_batch_size or raise data.samples_per_item")

    def permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_samples)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed & 0xFFFFFFFF, 7919, int(epoch)]))
        if self.groups is None:
            return rng.permutation(self.num_samples)
        order = rng.permutation(len(self.groups))
        runs = []
        for i in range(0, len(order), self.shuffle_groups):
            members = np.concatenate([np.arange(*self.groups[g]) for g in order[i:i + self.shuffle_groups]])
            runs.append(rng.permutation(members))
        return np.concatenate(runs)

    def __iter__(self):
        position = self.start
        while True:
            epoch, b = divmod(position, self.batches_per_epoch)
            perm = self.permutation(epoch)
            for b in range(b, self.batches_per_epoch):
                lo = b * self.global_batch + self.rank * self.batch_size
                yield [(epoch, int(i)) for i in perm[lo:lo + self.batch_size]]
            position = (epoch + 1) * self.batches_per_epoch


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay for biases, norm weights, relative-position bias tables and the mask token."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or "relative_position_bias_table" in name or "mask_token" in name \
                or "norm" in name.lower():
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
    """LambdaLR: linear warm-up from 0 to the peak over `warmup_steps`, then cosine to `min_lr_ratio` x peak."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_model(cfg: PretrainConfig, model_config):
    from degas_hf.models.st_swin_mae.modeling_st_swin_mae import STSwinMAEForPreTraining

    torch.manual_seed(cfg.train.seed)  # same initial weights on every rank and in every run
    if cfg.model.init_from:
        model = STSwinMAEForPreTraining.from_pretrained(cfg.model.init_from, config=model_config)
    else:
        model = STSwinMAEForPreTraining(model_config)
    if cfg.model.activation_checkpointing != "none":
        from degas_hf.training.activation_checkpointing import enable_activation_checkpointing

        # (non-reentrant checkpointing: the reentrant kind breaks DDP, "mark a variable ready only once")
        enable_activation_checkpointing(model, cfg.model.activation_checkpointing)
    return model


def sample_noise(mask_seeds: torch.Tensor, num_units: int) -> torch.Tensor:
    """Per-sample mask noise from per-sample seeds: the mask of a sample does not depend on its batch or rank."""
    return torch.stack([torch.rand(num_units, generator=torch.Generator().manual_seed(int(s))) for s in mask_seeds])


def _setup_logging(is_main: bool, output_dir: Path) -> None:
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    if is_main:
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        logger.addHandler(stream)
        output_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(output_dir / "train.log")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    ck = logging.getLogger("degas_hf.training.checkpointing")
    ck.handlers = logger.handlers[:]
    ck.setLevel(logger.level)
    ck.propagate = False


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


def _resume_path(cfg: PretrainConfig, resume, output_dir: Path, ck) -> Path | None:
    """The checkpoint to resume from (None: a fresh start); refuses a fresh start over existing checkpoints."""
    if not resume:
        if ck.list_checkpoints(output_dir):
            raise ConfigError(f"{output_dir} already holds checkpoints; pass --resume to continue that run, or choose "
                              "another output_dir")
        return None
    if resume is True or resume == "latest":
        return ck.find_latest_checkpoint(output_dir, checksums=cfg.checkpoint.checksums)
    path = Path(resume)
    if not path.exists():
        raise ConfigError(f"--resume {path}: no such checkpoint folder")
    if not path.is_dir():
        raise ConfigError(f"--resume {path}: not a folder (expected a checkpoint-<step> folder or a run's output_dir)")
    if not (path / ck.COMPLETE_MARKER).exists() and ck.list_checkpoints(path):
        latest = ck.find_latest_checkpoint(path, checksums=cfg.checkpoint.checksums)  # a run's output_dir
        if latest is None:
            raise ConfigError(f"--resume {path}: none of its checkpoints is complete")
        return latest
    ok, why = ck.verify_checkpoint(path, checksums=cfg.checkpoint.checksums)
    if not ok:
        raise ConfigError(f"cannot resume from {path}: {why}")
    return path


def _check_outputs(cfg: PretrainConfig, output_dir: Path, export_dir: Path, resuming: bool, ck) -> None:
    """Refuse to replace a model or a finished run without `overwrite`, and check that the folders are writable,
    before anything is built (one clear line instead of a traceback after the first steps)."""
    if output_dir.is_file():
        raise ConfigError(f"output_dir {output_dir} is a file, not a folder")
    if not resuming and not cfg.overwrite and output_dir.is_dir() and not ck.list_checkpoints(output_dir):
        earlier = [n for n in ("log.jsonl", "final", "config.yaml") if (output_dir / n).exists()]
        if earlier:
            raise ConfigError(f"output_dir {output_dir} holds an earlier run ({', '.join(earlier)}); pass --overwrite "
                              "(overwrite=true) to start again there (its log is kept as log.previous-*.jsonl), or "
                              "choose another output_dir")
    if export_dir.is_file():
        raise ConfigError(f"export_dir {export_dir} is a file, not a folder")
    if export_dir.is_dir() and any(export_dir.iterdir()) and not cfg.overwrite:
        if not (resuming and export_dir.resolve() == (output_dir / "final").resolve()):
            raise ConfigError(f"export_dir {export_dir} already holds files (a saved model?); pass --overwrite "
                              "(overwrite=true) to replace them, or choose another export_dir")
    import tempfile

    for name, folder in (("output_dir", output_dir), ("export_dir", export_dir)):
        probe = folder
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        try:
            fd, tmp = tempfile.mkstemp(prefix=".degas-write-test-", dir=probe)
            os.close(fd)
            os.unlink(tmp)
        except OSError as err:
            raise ConfigError(f"{name} {folder} cannot be written ({probe}: {err.strerror or err})") from None


def _prepare_log(log_path: Path, step: int, resumed: bool) -> None:
    """Never truncate a log: a fresh start (overwrite) keeps the old one as `log.previous-<n>.jsonl`; a resume keeps
    the lines up to the resume step (no step logged twice) and appends the lines past it, from the abandoned part
    of the run, to `log.abandoned.jsonl`."""
    if not log_path.exists():
        return
    if not resumed:
        n = 1
        while (aside := log_path.with_name(f"log.previous-{n}.jsonl")).exists():
            n += 1
        os.replace(log_path, aside)
        return
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if _log_step(line) is not None and _log_step(line) <= step]
    dropped = [line for line in lines if line not in kept]
    if dropped:
        with open(log_path.with_name("log.abandoned.jsonl"), "a") as f:
            f.write("".join(line + "\n" for line in dropped))
    tmp = log_path.with_name(log_path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, log_path)


def _json_safe(obj):
    return json.loads(json.dumps(obj, default=float))


@contextlib.contextmanager
def inputs_known_finite(model):
    """Leaves out the model's per-forward NaN/Inf check of `pixel_values` (a host sync every step on a GPU) for the
    training forward: the batches of `degas-hf pretrain` are finite by construction (uint16 DN normalised on the
    device, or the image processor's output, which fills NaN/Inf and marks them invalid). Only for the duration
    of the forward, so the saved and exported configs keep the user's `check_finite_inputs`."""
    config = model.config
    setting = config.check_finite_inputs
    config.check_finite_inputs = False
    try:
        yield
    finally:
        config.check_finite_inputs = setting


def train(cfg: PretrainConfig, resume: str | bool | None = None, return_model: bool = False) -> dict[str, Any]:
    """Run (or continue) pretraining. `resume`: False/None = fresh start (refuses to overwrite existing
    checkpoints), True/"latest" = the newest complete checkpoint in `output_dir` (fresh start if there is none),
    or a checkpoint path. Returns a summary dict (final step, last loss, paths; with `return_model` also the
    trained, unwrapped model under "model"). Call on every process."""
    from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import ProjectConfiguration, set_seed

    from degas_hf.training import checkpointing as ck
    from degas_hf.training.figures import loss_curve_png, save_reconstruction_png

    output_dir = Path(cfg.output_dir)
    export_dir = Path(cfg.export_dir) if cfg.export_dir else output_dir / "final"
    t0 = time.time()

    # ---- everything that can fail on bad input, before any process group or model exists ----
    model_config = build_model_config(cfg)
    processor = build_processor(cfg, model_config)
    dataset = build_dataset(cfg, model_config, processor)
    normalizer = dataset.device_normalizer() if getattr(dataset, "output", "normalized") == "raw" else None
    resume_path = _resume_path(cfg, resume, output_dir, ck)
    _check_outputs(cfg, output_dir, export_dir, resuming=resume_path is not None, ck=ck)

    # ---- accelerator ----
    AcceleratorState._reset_state()  # allow several runs in one Python process (tests, demo)
    GradientState._reset_state()
    if cfg.train.threads:
        torch.set_num_threads(int(cfg.train.threads))
    ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.train.find_unused_parameters,
                                        static_graph=cfg.train.static_graph)
    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        log_with="tensorboard" if cfg.logging.tensorboard else None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "tensorboard")),
        kwargs_handlers=[ddp],
        dataloader_config=DataLoaderConfiguration(split_batches=False),
        step_scheduler_with_optimizer=False,
    )
    is_main = accelerator.is_main_process
    _setup_logging(is_main, output_dir)
    set_seed(cfg.train.seed)
    if resume and resume_path is None:
        logger.warning("--resume: no complete checkpoint in %s; starting from scratch", output_dir)
    if is_main:
        ck.clean_temporary(output_dir)

    # ---- model, optimizer, scheduler ----
    model = build_model(cfg, model_config)
    n_params = sum(p.numel() for p in model.parameters())
    # fused AdamW on CUDA: one kernel for the whole update instead of a few per parameter tensor
    fused = {"fused": True} if accelerator.device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                  betas=tuple(cfg.optim.betas), eps=cfg.optim.eps, **fused)
    warmup = cfg.optim.warmup_steps or int(round(cfg.optim.warmup_ratio * cfg.train.max_steps))
    scheduler = cosine_with_warmup(optimizer, warmup, cfg.train.max_steps, cfg.optim.min_lr / cfg.optim.lr)
    if cfg.train.compile:
        from degas_hf.training.compile import compile_model

        model = compile_model(model) or model
    model, optimizer = accelerator.prepare(model, optimizer)
    # The scheduler steps once per optimizer step whatever the number of processes (not prepared, so Accelerate
    # does not step it num_processes times); its state is saved in trainer_state.json (never pickled).
    unwrapped = accelerator.unwrap_model(model)

    step, micro_done = 0, 0
    if resume_path is not None:
        state = ck.load_checkpoint(accelerator, model, optimizer, scheduler, resume_path)
        step, micro_done = int(state["step"]), int(state["micro_batches_done"])
        world = accelerator.num_processes * cfg.train.per_device_batch_size
        if state.get("global_micro_batch") != world or state.get("seed") != cfg.train.seed:
            logger.warning("Resuming with a different global batch or seed than the checkpoint (%s vs %s): "
                           "the data order will differ from an uninterrupted run", state.get("global_micro_batch"),
                           world)
        logger.info("Resumed from %s at step %d", resume_path, step)

    groups = dataset.shard_ranges() if hasattr(dataset, "shard_ranges") else None
    sampler = ShardedBatchSampler(len(dataset), cfg.train.per_device_batch_size, accelerator.num_processes,
                                  accelerator.process_index, cfg.train.seed, cfg.data.shuffle, start=micro_done,
                                  groups=groups, shuffle_groups=cfg.data.shuffle_shards)
    from degas_hf.data.timeseries_folder import collate_pretraining

    workers = int(cfg.data.num_workers)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_pretraining, num_workers=workers,
        pin_memory=accelerator.device.type == "cuda", persistent_workers=False,
        prefetch_factor=cfg.data.prefetch_factor if workers > 0 else None,
    )

    if cfg.logging.tensorboard:
        accelerator.init_trackers("pretrain", config=_flat(cfg.to_dict()))
    log_path = output_dir / "log.jsonl"
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(_yaml_dump(cfg.to_dict()))
        _prepare_log(log_path, step, resumed=resume_path is not None)
        logger.info("degas-hf pretrain: %s, %.2fM parameters, %d samples, %d process(es) x batch %d x accumulation "
                    "%d = %d samples/step, %d steps, mixed precision %s, device %s, %s", model_config.__class__.__name__,
                    n_params / 1e6, len(dataset), accelerator.num_processes, cfg.train.per_device_batch_size,
                    cfg.train.gradient_accumulation_steps, sampler.global_batch * cfg.train.gradient_accumulation_steps,
                    cfg.train.max_steps, cfg.train.mixed_precision, accelerator.device, accelerator.distributed_type)

    def trainer_state() -> dict[str, Any]:
        return {"step": step, "micro_batches_done": micro_done, "epoch": micro_done // sampler.batches_per_epoch,
                "global_micro_batch": sampler.global_batch, "seed": cfg.train.seed,
                "num_processes": accelerator.num_processes, "max_steps": cfg.train.max_steps,
                "scheduler": _json_safe(scheduler.state_dict()), "model_type": model_config.model_type,
                "num_parameters": n_params}

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.train.max_steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True,
               disable=not (is_main and cfg.logging.progress_bar))
    model.train()
    window_loss = torch.zeros((), device=accelerator.device)
    window_count = 0
    last_loss = float("nan")
    samples_done = 0
    t_train = time.time()
    last_ckpt = None
    data_iter = iter(loader)
    while step < cfg.train.max_steps:
        batch = next(data_iter)
        if normalizer is not None:  # raw uint16 crops: normalised here, on the accelerator
            pixel_values, valid_mask = normalizer(batch["raw_values"].to(accelerator.device, non_blocking=True))
        else:
            pixel_values = batch["pixel_values"].to(accelerator.device, non_blocking=True)
            valid_mask = batch["valid_mask"].to(accelerator.device, non_blocking=True)
        grid = tuple(-(-s // p) for s, p in zip(pixel_values.shape[2:], model_config.patch_size))
        noise = sample_noise(batch["mask_seed"], math.prod(unwrapped.num_mask_units(grid)))
        if accelerator.device.type == "cuda":  # a pageable host-to-device copy would block the host every step
            noise = noise.pin_memory()
        noise = noise.to(accelerator.device, non_blocking=True)
        with accelerator.accumulate(model):
            with inputs_known_finite(unwrapped):
                out = model(pixel_values=pixel_values, valid_mask=valid_mask, noise=noise)
            loss = out.loss
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.optim.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        micro_done += 1
        samples_done += pixel_values.shape[0]
        window_loss += loss.detach().float()
        window_count += 1
        if not accelerator.sync_gradients:
            continue
        if not accelerator.optimizer_step_was_skipped:
            scheduler.step()
        step += 1
        bar.update(1)

        out_of_time = False
        if step % cfg.logging.log_every == 0 or step == cfg.train.max_steps:
            if cfg.train.max_minutes:
                late = torch.tensor(float(time.time() - t_train > 60 * cfg.train.max_minutes), device=accelerator.device)
                out_of_time = accelerator.reduce(late, reduction="sum").item() > 0  # every rank stops together
            mean_loss = accelerator.reduce(window_loss / max(window_count, 1), reduction="mean").item()
            window_loss.zero_()
            window_count = 0
            last_loss = mean_loss
            lr = scheduler.get_last_lr()[0]
            elapsed = time.time() - t_train
            if is_main:
                rec = {"step": step, "loss": mean_loss, "lr": lr, "epoch": micro_done // sampler.batches_per_epoch,
                       "samples_per_s": samples_done * accelerator.num_processes / max(elapsed, 1e-9),
                       "elapsed_s": round(elapsed, 4)}
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
            if cfg.logging.tensorboard:
                accelerator.log({"train/loss": mean_loss, "train/lr": lr}, step=step)

        if cfg.logging.figure_every and step % cfg.logging.figure_every == 0 and is_main:
            path = save_reconstruction_png(
                output_dir / "figures" / f"reconstruction_step{step:08d}.png", pixel_values[0], out.reconstruction[0],
                out.mask[0], list(model_config.band_names), valid_mask=valid_mask[0],
                title=f"step {step}, loss {loss.item():.4f}")
            _tensorboard_image(accelerator, path, step)

        last_step = step == cfg.train.max_steps or out_of_time
        if cfg.checkpoint.save_every and step % cfg.checkpoint.save_every == 0 or (last_step and cfg.checkpoint.save_final):
            last_ckpt = ck.save_checkpoint(accelerator, output_dir, step, trainer_state(),
                                           keep_last=cfg.checkpoint.keep_last or None,
                                           checksums=cfg.checkpoint.checksums)
            logger.info("step %d: saved %s", step, last_ckpt)
        if out_of_time:
            logger.warning("train.max_minutes=%s reached: stopping at step %d of %d", cfg.train.max_minutes, step,
                           cfg.train.max_steps)
            break
    bar.close()
    del data_iter

    train_time = time.time() - t_train
    ck.export_pretrained(model, processor, export_dir, accelerator=accelerator)
    loss_png = None
    if is_main:
        loss_png = loss_curve_png(log_path, output_dir / "loss_curve.png")
        logger.info("Finished %d steps in %.1f s (last loss %.4f). Hub-ready model: %s", step, train_time, last_loss,
                    export_dir)
    summary = {"step": step, "loss": last_loss, "export_dir": str(export_dir), "output_dir": str(output_dir),
               "last_checkpoint": str(last_ckpt) if last_ckpt else None, "loss_curve": str(loss_png) if loss_png else None,
               "train_seconds": train_time, "total_seconds": time.time() - t0, "num_parameters": n_params,
               "samples_per_second": samples_done * accelerator.num_processes / max(train_time, 1e-9),
               "process_index": accelerator.process_index, "num_processes": accelerator.num_processes}
    if return_model:
        summary["model"] = accelerator.unwrap_model(model)
    accelerator.end_training()  # tears the process group down (clean exit under torchrun)
    return summary


def _log_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _yaml_dump(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)


def _tensorboard_image(accelerator, png_path: Path, step: int) -> None:
    try:
        tracker = accelerator.get_tracker("tensorboard", unwrap=True)
    except Exception:  # noqa: BLE001 - no tracker configured
        return
    if tracker is None or not hasattr(tracker, "add_image"):
        return
    from PIL import Image

    img = np.asarray(Image.open(png_path).convert("RGB"))
    tracker.add_image("reconstruction", img, global_step=step, dataformats="HWC")


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def _looks_like_override(token: str | None) -> bool:
    return token is not None and "=" in token and not token.startswith("-") and not os.path.exists(token)


def _parse_command_line(args: argparse.Namespace) -> tuple[str, list[str], str | None]:
    """(config, overrides, resume) from the parsed arguments, whatever the order of overrides and options."""
    config, resume, overrides = args.config, args.resume, []
    output_dir, overwrite = args.output_dir, bool(getattr(args, "overwrite", False))
    # `--resume CONFIG KEY=VALUE...`: argparse took the config as the checkpoint
    if resume not in (None, "latest") and (config is None or _looks_like_override(config)):
        if config is not None:
            overrides.append(config)
        config, resume = resume, "latest"
    tokens = list(args.overrides or [])
    i = 0
    while i < len(tokens):
        token = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if token == "--resume":
            if nxt is not None and not nxt.startswith("-") and not _looks_like_override(nxt):
                resume, i = nxt, i + 2
            else:
                resume, i = resume or "latest", i + 1
            continue
        if token.startswith("--resume="):
            resume, i = token.split("=", 1)[1] or "latest", i + 1
            continue
        if token == "--output-dir":
            if nxt is None:
                raise ConfigError("--output-dir needs a folder")
            output_dir, i = nxt, i + 2
            continue
        if token.startswith("--output-dir="):
            output_dir, i = token.split("=", 1)[1], i + 1
            continue
        if token == "--overwrite":
            overwrite, i = True, i + 1
            continue
        if token.startswith("-"):
            raise ConfigError(f"unknown option {token!r} (options: --resume [CHECKPOINT], --output-dir DIR, "
                              "--overwrite)")
        if "=" not in token:
            raise ConfigError(f"unexpected argument {token!r}: overrides are KEY=VALUE (e.g. train.max_steps=100)")
        overrides.append(token)
        i += 1
    if config is None:
        raise ConfigError("give a CONFIG (a YAML file or a shipped name such as pretrain_degas_100m)")
    if output_dir:
        overrides.append(f"output_dir={output_dir}")
    if overwrite:
        overrides.append("overwrite=true")
    return config, overrides, resume


def run(args: argparse.Namespace) -> int:
    from degas_hf.data.timeseries_folder import DataError
    from degas_hf.training.checkpointing import CheckpointError

    try:
        config, overrides, resume = _parse_command_line(args)
        cfg = load_config(_resolve_config(config), overrides)
        summary = train(cfg, resume=resume)
    except (ConfigError, DataError, CheckpointError) as err:
        print(f"degas-hf pretrain: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # an output folder that became read-only or full after the checks
        what = "no space left on device" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        print(f"degas-hf pretrain: error: {what}" + (f" ({err.filename})" if err.filename else ""), file=sys.stderr)
        return 2
    if summary.get("process_index", 0) == 0:
        print(json.dumps({k: summary[k] for k in ("step", "loss", "export_dir", "last_checkpoint", "loss_curve")}))
    return 0


def _resolve_config(name: str) -> str:
    """A path, or the name of a configuration shipped in degas_hf/configs (e.g. `pretrain_degas_100m`)."""
    if os.path.exists(name):
        return name
    shipped = Path(__file__).resolve().parent.parent / "configs" / (name if name.endswith(".yaml") else name + ".yaml")
    return str(shipped) if shipped.exists() else name


def main(argv: Sequence[str] | None = None) -> int:
    from ..commands.pretrain import add_arguments

    parser = argparse.ArgumentParser(prog="python -m degas_hf.training.pretrain", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
