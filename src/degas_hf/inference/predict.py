"""End-to-end large-scene prediction: GeoTIFF time series in, georeferenced GeoTIFF (+ PNG quicklook) out.

`predict_geotiff` is what `degas-hf predict` runs; `load_model_and_processor` reads a saved model folder (or a
cached Hub id) with the checks of `degas_hf.inference.loading`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio

from ..io.geotiff import GeoTiffTimeSeries, GeoTiffWriter, check_output_path, remove_stale_temporaries
from .loading import load_model_for_inference
from .quicklook import PALETTE, render_quicklook, rgb_band_indices
from .sliding_window import QuicklookSampler, SlidingWindowPredictor

__all__ = ["GEOTIFF_SUFFIXES", "GeoTiffSink", "load_model_and_processor", "output_paths", "predict_geotiff"]

logger = logging.getLogger(__name__)

GEOTIFF_SUFFIXES = (".tif", ".tiff")


def load_model_and_processor(model_dir, preset: str | None = None, device=None, allow_untrained_head: bool = False):
    """Load ST-SwinUNet and its image processor from a saved folder or a cached Hub id.

    The processor comes from the folder's `preprocessor_config.json`; without one, `preset` names the
    normalisation preset (statistics for the model's `config.band_names`). A folder without a trained head is
    refused unless `allow_untrained_head`; see `degas_hf.inference.loading.load_model_for_inference` for every
    check.
    """
    return load_model_for_inference(model_dir, preset=preset, device=device, allow_untrained_head=allow_untrained_head)


def output_paths(output, probabilities: bool = False, quicklook: bool = True) -> dict[str, Path]:
    """Where each output goes: `OUT.tif` (classes or values), `OUT.probabilities.tif`, `OUT.png`.

    `output` must be a GeoTIFF name (`.tif` or `.tiff`): any other name could make the quicklook replace the
    class map (`X.png`) or write a GeoTIFF under a name that says otherwise."""
    output = Path(output)
    if output.suffix.lower() not in GEOTIFF_SUFFIXES:
        raise ValueError(
            f"The output {str(output)!r} must be a GeoTIFF name ending in .tif or .tiff (found "
            f"{output.suffix or 'no suffix'!r}); the quicklook PNG and probabilities are written beside it"
        )
    paths = {"main": output}
    if probabilities:
        paths["probabilities"] = output.with_name(output.stem + ".probabilities" + output.suffix)
    if quicklook:
        paths["quicklook"] = output.with_suffix(".png")
    return paths


def class_colormap(num_labels: int) -> dict[int, tuple[int, int, int]]:
    """The quicklook palette as a GeoTIFF colour table (class i -> PALETTE[i % 20]), so GIS shows the same colours."""
    return {i: tuple(int(c) for c in PALETTE[i % len(PALETTE)]) for i in range(num_labels)}


class GeoTiffSink:
    """Receives finished rows from `SlidingWindowPredictor` and writes them into tiled GeoTIFFs that keep the
    source's CRS and transform. Writers are entered on `stack`, so an error anywhere leaves no partial file.

    The class map gets a colour table (the quicklook's palette) and its class names (`id2label`) as tags;
    `cog=True` writes Cloud-Optimized GeoTIFFs (with overviews)."""

    def __init__(self, paths: dict[str, Path], source, stack: contextlib.ExitStack, id2label=None, cog: bool = False,
                 num_labels: int | None = None):
        self.paths = paths
        self.source = source
        self.stack = stack
        self.id2label = id2label or {}
        self.cog = cog
        self.num_labels = max(int(num_labels or 0), len(self.id2label))
        self.writers: dict[str, GeoTiffWriter] = {}

    def allocate(self, layout: dict[str, tuple[int, str, float]], height: int, width: int) -> None:
        for name, (count, dtype, nodata) in layout.items():
            path = self.paths["probabilities"] if name == "probabilities" else self.paths["main"]
            options = {}
            if name == "values":
                band_names = ["value"] if count == 1 else [f"value_{i}" for i in range(count)]
            elif name == "probabilities":
                band_names = [f"p_{self.id2label.get(i, i)}" for i in range(count)]
            else:
                band_names = ["class"]
                if dtype in ("uint8", "uint16") and self.num_labels:
                    options["colormap"] = class_colormap(self.num_labels)
                if self.id2label:
                    options["class_names"] = self.id2label
            writer = GeoTiffWriter(
                path, height, width, count, dtype, crs=self.source.crs, transform=self.source.transform,
                nodata=nodata, band_names=band_names, cog=self.cog, **options,
            )
            self.writers[name] = self.stack.enter_context(writer)

    def write(self, name: str, block: np.ndarray, row_off: int) -> None:
        self.writers[name].write_rows(block, row_off=row_off)  # whole rows of tiles: each tile compressed once


def _rgb_band_indices(source, band_names, processor) -> list[int]:
    names = band_names if band_names is not None else source.band_names
    rgb = rgb_band_indices(names)
    if rgb is not None:
        return rgb
    indices = processor.band_indices(processor.usable_band_names(names), source.num_bands)
    return indices[:3] if len(indices) >= 3 else indices[:1]


def predict_geotiff(
    model,
    processor,
    inputs: Sequence,
    output,
    band_names: Sequence[str] | None = None,
    frames_per_file: int = 1,
    window_size=256,
    overlap: int = 64,
    batch_size: int = 8,
    blend: str = "cosine",
    probabilities: bool = False,
    nodata_policy: str = "all",
    device=None,
    quicklook: bool = True,
    quicklook_size: int = 1024,
    progress: bool = True,
    predictor_kwargs: dict | None = None,
    gdal_cache_mb: int = 128,
    precision: str | None = None,
    devices=None,
    num_workers: int | None = None,
    cog: bool = False,
    compile: bool = False,
) -> dict[str, Path]:
    """Predict over a GeoTIFF time series and write the result with the source's CRS and transform.

    Args:
        model, processor: ST-SwinUNet and its `STSwinMAEImageProcessor` (see `load_model_and_processor`).
        inputs (`list`): one raster per date (same grid), or one raster holding `frames_per_file` dates.
        output: the GeoTIFF to write, named `.tif` or `.tiff` (classes as uint8 with a colour table and class names,
            nodata 255; values as float32, nodata NaN). Its folder must exist. Written to a temporary name and
            renamed when complete; temporaries left by a killed earlier run of the same output are deleted first.
        band_names (`list[str]`, *optional*): names of the input bands (else the band descriptions).
        probabilities (`bool`): also write `OUT.probabilities.tif` (float32, one band per class).
        quicklook (`bool`): also write `OUT.png`, from a decimated view filled while predicting (no second read);
            `quicklook_size` is its long side (two panels side by side, and a legend).
        precision (`str`, *optional*): "fp32", "bf16" or "fp16" autocast; default bf16 on CUDA, fp32 on the CPU.
        devices (`int` or list, *optional*): several GPUs share the scene's window rows.
        num_workers (`int`, *optional*): reader threads (default: `sliding_window.default_num_workers`).
        cog (`bool`): write Cloud-Optimized GeoTIFFs (overviews; GDAL's COG driver).
        compile (`bool`): compile the model first (`degas_hf.training.compile.compile_model`).
        gdal_cache_mb (`int`): GDAL's block cache. Bounded, so memory does not grow with the scene (GDAL's
            default is 5 % of the RAM, which a large scene fills).
        Other arguments: see `SlidingWindowPredictor`.

    Returns:
        `{"main": OUT.tif, "probabilities": ..., "quicklook": OUT.png}` for what was written.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths = output_paths(output, probabilities=probabilities, quicklook=quicklook)
    for path in paths.values():
        check_output_path(path)
    input_set = {os.path.realpath(p) for p in inputs}
    for path in paths.values():
        if os.path.realpath(path) in input_set:
            raise ValueError(f"Output {str(path)!r} would overwrite an input")
    for path in paths.values():
        for stale in remove_stale_temporaries(path):
            logger.info("removed %s, left by an interrupted run", stale)
    predictor = SlidingWindowPredictor(
        model, processor, window_size=window_size, overlap=overlap, batch_size=batch_size, blend=blend,
        probabilities=probabilities, nodata_policy=nodata_policy, device=device, progress=progress,
        precision=precision, devices=devices, num_workers=num_workers, compile=compile,
        **(predictor_kwargs or {}),
    )
    id2label = {int(k): v for k, v in (getattr(getattr(model, "config", None), "id2label", None) or {}).items()}
    with rasterio.Env(GDAL_CACHEMAX=int(gdal_cache_mb)), GeoTiffTimeSeries(
        inputs, band_names=band_names, frames_per_file=frames_per_file
    ) as source:
        sampler, rgb_bands = None, None
        if quicklook:
            rgb_bands = _rgb_band_indices(source, band_names, processor)
            sampler = QuicklookSampler(source.height, source.width, source.num_frames, len(rgb_bands),
                                       max_size=max(1, quicklook_size // 2))  # two panels side by side
        with contextlib.ExitStack() as stack:
            sink = GeoTiffSink(paths, source, stack, id2label=id2label, cog=cog, num_labels=predictor.num_outputs())
            predictor.predict(source, sink=sink, band_names=band_names, quicklook=sampler, rgb_bands=rgb_bands)
        written = {k: v for k, v in paths.items() if k != "quicklook"}
        if quicklook:
            layout = predictor.output_layout(predictor.num_outputs() or 1)
            nodata = next(iter(layout.values()))[2]
            render_quicklook(
                paths["quicklook"], sampler.rgb, source.nodata, sampler.prediction, task=predictor.task,
                nodata=nodata, id2label=id2label, title=Path(output).name,
            )
            written["quicklook"] = paths["quicklook"]
    logger.info("prediction done: model %.1f s", predictor.model_seconds)
    return written
