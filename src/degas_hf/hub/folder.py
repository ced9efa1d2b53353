"""Save a Hub-ready folder: model + image processor (+ the custom pipeline for ST-SwinUNet), with `auto_map` for the
Auto classes and the code files copied next to the weights, so the folder loads with `trust_remote_code=True` where
degas_hf is absent.

`prepare_hub_folder(model, processor, folder)` is what `degas-hf publish` expects to find (docs/publishing.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# Weight files that only unpickling can read (which can run code): never loaded, only named in the error.
_PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def prepare_hub_folder(model, processor, folder: str | os.PathLike, *, safe_serialization: bool = True) -> Path:
    """Save `model` (any ST-SwinMAE class) and `processor` to `folder` ready for `degas-hf publish`.

    The classes' own `save_pretrained` do the work: the model's writes `auto_map` for AutoConfig, AutoModel and its
    task class (AutoModelForPreTraining or AutoModelForSemanticSegmentation) and copies the configuration and
    modeling code; the processor's (registered for AutoImageProcessor on import of `degas_hf`) writes
    `preprocessor_config.json` with `auto_map.AutoImageProcessor` and copies its code. An ST-SwinUNet is saved
    through the package's segmentation pipeline (`pipeline_st_swin_mae`), which adds `custom_pipelines` to
    config.json and copies the pipeline code (the pretrained encoder has no custom pipeline: the package ships none
    for feature extraction).
    """
    from ..models.st_swin_mae.modeling_st_swin_mae import STSwinUNetForSemanticSegmentation

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, STSwinUNetForSemanticSegmentation):
        from ..models.st_swin_mae.pipeline_st_swin_mae import STSwinMAESegmentationPipeline

        pipe = STSwinMAESegmentationPipeline(model=model, image_processor=processor)
        pipe.save_pretrained(folder, safe_serialization=safe_serialization)
    else:
        model.save_pretrained(folder, safe_serialization=safe_serialization)
        processor.save_pretrained(folder)
    return folder


def check_safetensors_weights(folder: str | os.PathLike, what: str | None = None) -> list[Path]:
    """The safetensors weight files of a model folder, each opened and its header read; raises a ValueError (one
    line) when they are missing, truncated, garbled, or when the folder only holds pickle weights."""
    from safetensors import safe_open

    folder = Path(folder)
    what = what or str(folder)
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    elif index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{what}: {index.name} is not a valid weights index ({err})") from None
        files = [folder / n for n in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"{what}: weight shards {missing} listed in {index.name} are missing")
    else:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in _PICKLE_WEIGHTS)
        if pickles:
            raise ValueError(
                f"{what}: the folder holds only pickle weights ({', '.join(pickles)}); degas-hf loads safetensors "
                "only (unpickling can run code): convert them with save_pretrained(safe_serialization=True)"
            )
        raise ValueError(f"{what}: no model.safetensors (nor model.safetensors.index.json) in the folder")
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as weights:
                keys = list(weights.keys())  # opening checks the header and that the data fits the file
        except Exception as err:  # noqa: BLE001 - safetensors raises several types for a damaged file
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{what}: {file.name} is not a readable safetensors file (truncated or corrupted: {reason})") from None
        if not keys:
            raise ValueError(f"{what}: {file.name} holds no tensors")
    return files


__all__ = ["check_safetensors_weights", "prepare_hub_folder"]


# ----------------------------------------------------------------------------------------------- tiny demo folders
SAMPLE_SERIES_DIR = Path(__file__).resolve().parents[1] / "sample_data" / "worldcereal_flanders" / "s2"
TINY_LABELS = {0: "annual cropland", 1: "grassland", 2: "other"}


def build_tiny_folder(folder: str | os.PathLike, kind: str = "segmentation", *, seed: int = 0,
                      regression: bool = False, preset: str = "ssl4eo-s12-l2a") -> Path:
    """A Hub-ready folder of the `degas-tiny` preset with random weights (tests, docs, the Space's smoke test).
    `kind` is "segmentation" (ST-SwinUNet, 3 classes or 1 regression output) or "pretrained" (ST-SwinMAE)."""
    import torch

    from degas_hf import STSwinMAEConfig, STSwinMAEForPreTraining, STSwinUNetForSemanticSegmentation
    from degas_hf.models.st_swin_mae.image_processing_st_swin_mae import STSwinMAEImageProcessor

    torch.manual_seed(seed)
    if kind == "segmentation":
        if regression:
            config = STSwinMAEConfig.from_preset("degas-tiny", num_labels=1, problem_type="regression")
        else:
            config = STSwinMAEConfig.from_preset(
                "degas-tiny", num_labels=len(TINY_LABELS), id2label=dict(TINY_LABELS),
                label2id={v: k for k, v in TINY_LABELS.items()},
            )
        model = STSwinUNetForSemanticSegmentation(config)
    elif kind == "pretrained":
        model = STSwinMAEForPreTraining(STSwinMAEConfig.from_preset("degas-tiny"))
    else:
        raise ValueError(f"kind must be 'segmentation' or 'pretrained', got {kind!r}")
    processor = STSwinMAEImageProcessor.from_preset(preset, band_names=model.config.band_names, nodata_value=0)
    return prepare_hub_folder(model.eval(), processor, folder)


def write_sample_series(path: str | os.PathLike, dates: tuple[int, ...] = (2, 10, 20, 30),
                        source_dir: str | os.PathLike | None = None) -> Path:
    """Stack bundled per-date Sentinel-2 GeoTIFFs (WorldCereal Flanders sample, 10 bands, 64 x 64 px) into one
    GeoTIFF with the dates stored date-major and the band descriptions repeated per date (`B02 ... B12 B02 ...`,
    what `publish --example` and the Space accept, as are `B02_t0 ... B12_t3`). Keeps CRS, transform and nodata."""
    from ..io import read_time_series, write_geotiff

    files = sorted(Path(source_dir or SAMPLE_SERIES_DIR).glob("*.tif"))
    if not files:
        raise FileNotFoundError(f"No sample GeoTIFFs in {source_dir or SAMPLE_SERIES_DIR}")
    chosen = [files[i % len(files)] for i in dates]
    array, series = read_time_series(chosen)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_geotiff(path, array.reshape(-1, *array.shape[2:]), crs=series.crs, transform=series.transform,
                         nodata=series.nodata[0], band_names=list(series.band_names) * len(chosen),
                         tags={"dates": ",".join(f.stem for f in chosen)})


__all__ += ["build_tiny_folder", "write_sample_series"]
