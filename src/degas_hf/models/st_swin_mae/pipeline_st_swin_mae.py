"""A Hub pipeline for ST-SwinUNet: GeoTIFF paths or arrays of a satellite image time series in, class map out.

This file is Hub-bound: `Pipeline.save_pretrained` copies it next to the weights and writes
`config.custom_pipelines`, so that `pipeline(model=FOLDER_OR_REPO, trust_remote_code=True)` loads it without
degas-hf installed. At module level it imports only the standard library, numpy, torch and transformers.

```python
>>> from transformers import pipeline
>>> segmenter = pipeline(model="path/or/repo", trust_remote_code=True)
>>> result = segmenter(["2019-03.tif", "2019-06.tif", "2019-09.tif", "2019-12.tif"])  # one sample, 4 dates
>>> result["class_map"].shape            # (H, W) int64, -1 where no date holds data
>>> [s["label"] for s in result["segments"]]   # one PIL "L" mask per class present
```

For scenes larger than a few thousand pixels use `degas-hf predict`, which streams sliding windows.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSemanticSegmentation, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

TASK = "multispectral-segmentation"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast_context(precision: str | None, device: torch.device):
    """Autocast for `precision` on `device` ("fp32" or None on a CPU: none; None on CUDA: bf16 when supported).
    Raises a ValueError when the device cannot run the precision asked."""
    if precision is None:
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; expected one of {sorted(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "cpu":
        probe = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}[precision]
        try:
            supported = bool(getattr(torch.ops.mkldnn, probe)())
        except (AttributeError, RuntimeError):
            supported = False
        if not supported:
            raise ValueError(f"{precision} precision was asked, but this CPU has no {precision} support; use fp32")
    elif device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("bf16 precision was asked, but this GPU has no bf16 support; use fp16 or fp32")
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def _is_date(item) -> bool:
    """A path or a (C, H, W) array: one date of a sample."""
    if isinstance(item, (str, os.PathLike)):
        return True
    return isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 3


class _OneSample(tuple):
    """Per-date inputs of a single sample (so that `Pipeline.__call__` does not read the list as a batch)."""


class STSwinMAESegmentationPipeline(Pipeline):
    """Semantic segmentation (or per-pixel regression) of a multispectral satellite image time series.

    Inputs (one sample): a GeoTIFF path, a list of per-date GeoTIFF paths (same grid), an array/tensor (C, H, W)
    or (T, C, H, W), or a list of per-date (C, H, W) arrays. A list of such samples (each a list/tuple of dates or
    a (T, C, H, W) array) is a batch and gives a list of results.

    Call arguments:
        band_names (`list[str]`, *optional*): names of the input bands (else GeoTIFF band descriptions).
        frames_per_file (`int`, *optional*): dates per GeoTIFF, bands date-major.
        nodata_value (`float`, *optional*): raw nodata value of array inputs.
        return_probabilities (`bool`, *optional*): also return the (K, H, W) softmax probabilities.
        precision (`str`, *optional*): "fp32", "bf16" or "fp16" autocast for the forward; defaults to bf16 on a
            CUDA device that supports it, fp32 elsewhere (as `degas-hf predict --precision`).

    Returns, per sample, a dict:
        classification: `class_map` (H, W) int64 numpy (-1 where no date holds data) and `segments`, a list of
        `{"score": None, "label": str, "mask": PIL.Image (mode "L", 255 inside)}` for each class present, as
        transformers' image-segmentation pipeline; with `return_probabilities`, `probabilities` (K, H, W).
        regression (`problem_type="regression"`): `values` (H, W) float32 numpy (NaN where no date holds data).
    """

    _load_image_processor = True
    _load_tokenizer = False
    _load_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(
        self, band_names=None, frames_per_file=None, nodata_value=None, return_probabilities=None, precision=None,
        **kwargs,
    ):
        if kwargs:
            raise ValueError(f"Unknown arguments {sorted(kwargs)} for {type(self).__name__}")
        preprocess_kwargs = {}
        if band_names is not None:
            preprocess_kwargs["band_names"] = list(band_names)
        if frames_per_file is not None:
            preprocess_kwargs["frames_per_file"] = int(frames_per_file)
        if nodata_value is not None:
            preprocess_kwargs["nodata_value"] = float(nodata_value)
        forward_kwargs = {}
        if precision is not None:
            _autocast_context(str(precision).lower(), self.device)  # refuse now, not after preprocessing
            forward_kwargs["precision"] = str(precision).lower()
        postprocess_kwargs = {}
        if return_probabilities is not None:
            postprocess_kwargs["return_probabilities"] = bool(return_probabilities)
        return preprocess_kwargs, forward_kwargs, postprocess_kwargs

    def __call__(self, inputs, **kwargs):
        if isinstance(inputs, (list, tuple)) and not isinstance(inputs, _OneSample):
            if len(inputs) == 0:
                raise ValueError("Expected at least one input, found an empty list")
            if all(_is_date(item) for item in inputs):
                inputs = _OneSample(inputs)  # the dates of one sample
            else:
                inputs = [_OneSample(s) if isinstance(s, (list, tuple)) else s for s in inputs]  # a batch
        return super().__call__(inputs, **kwargs)

    def preprocess(self, inputs, band_names=None, frames_per_file=1, nodata_value=None) -> dict[str, Any]:
        # One sample; the processor reads a path, a list of per-date paths or arrays, or a (C|T, ...) array.
        sample = list(inputs) if isinstance(inputs, _OneSample) else inputs
        batch = self.image_processor(
            sample, band_names=band_names, frames_per_file=frames_per_file, nodata_value=nodata_value,
            return_tensors="pt",
        )
        if batch["pixel_values"].shape[0] != 1:
            raise ValueError(f"Expected one sample per pipeline input, found {batch['pixel_values'].shape[0]}")
        dtype = self.dtype or torch.float32
        return {"pixel_values": batch["pixel_values"].to(dtype), "valid_mask": batch["valid_mask"]}

    def _forward(self, model_inputs: dict[str, Any], precision: str | None = None) -> dict[str, Any]:
        with _autocast_context(precision, self.device):
            outputs = self.model(pixel_values=model_inputs["pixel_values"], valid_mask=model_inputs["valid_mask"])
        return {"logits": outputs.logits.float(), "valid_mask": model_inputs["valid_mask"]}

    def postprocess(self, model_outputs: dict[str, Any], return_probabilities: bool = False) -> dict[str, Any]:
        logits = model_outputs["logits"].float().cpu()
        valid_mask = model_outputs["valid_mask"].cpu()
        if getattr(self.model.config, "problem_type", None) == "regression":
            values = self.image_processor.post_process_regression({"logits": logits}, valid_mask=valid_mask)[0]
            return {"values": values.numpy()}
        class_map = self.image_processor.post_process_semantic_segmentation(
            {"logits": logits}, valid_mask=valid_mask, nodata_label=-1
        )[0].numpy()
        result: dict[str, Any] = {"class_map": class_map, "segments": self._segments(class_map)}
        if return_probabilities:
            result["probabilities"] = logits[0].softmax(dim=0).numpy()
        return result

    def _segments(self, class_map: np.ndarray) -> list[dict[str, Any]]:
        """One `{"score", "label", "mask"}` per class present, masks as PIL "L" images when Pillow is installed."""
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - Pillow ships with transformers' vision extras
            Image = None
        id2label = getattr(self.model.config, "id2label", None) or {}
        segments = []
        for label_id in np.unique(class_map):
            if label_id < 0:
                continue
            mask = (class_map == label_id).astype(np.uint8) * 255
            segments.append(
                {
                    "score": None,
                    "label": id2label.get(int(label_id), str(int(label_id))),
                    "mask": Image.fromarray(mask, mode="L") if Image is not None else mask.astype(bool),
                }
            )
        return segments


def register_pipeline() -> None:
    """Register the pipeline under the task `"multispectral-segmentation"` (needed before `save_pretrained`, so
    that the saved config holds `custom_pipelines`)."""
    PIPELINE_REGISTRY.register_pipeline(
        TASK,
        pipeline_class=STSwinMAESegmentationPipeline,
        pt_model=AutoModelForSemanticSegmentation,
        type="image",
    )


register_pipeline()

__all__ = ["STSwinMAESegmentationPipeline", "register_pipeline", "TASK"]
