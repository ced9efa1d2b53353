"""The fine-tuning tasks: which reader, which splits, which description.

Kept free of torch and transformers so that `degas-hf finetune --help` (which lists the tasks) starts at once.
"""

from __future__ import annotations

import dataclasses
import importlib


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """How to read one task: reader class (dotted path under `degas_hf.data`), fixed reader arguments, the split
    names used for training / evaluation / test, and the metric that selects the best model."""

    reader: str
    reader_kwargs: dict = dataclasses.field(default_factory=dict)
    train_split: str = "train"
    eval_split: str = "val"
    test_splits: tuple[str, ...] = ("test",)
    description: str = ""

    def reader_class(self) -> type:
        module, name = self.reader.rsplit(".", 1)
        return getattr(importlib.import_module(f"degas_hf.data.{module}"), name)


TASKS: dict[str, TaskSpec] = {
    "sen1floods11": TaskSpec(
        "sen1floods11.Sen1Floods11", test_splits=("test", "bolivia"),
        description="Sen1Floods11 hand-labelled flood mapping (S2Hand by default; test and the Bolivia hold-out)",
    ),
    "hls_burn_scars": TaskSpec(
        "hls_burn_scars.HLSBurnScars", test_splits=("val",),
        description="HLS burn scars (training/ and validation/; validation doubles as test)",
    ),
    "crop_classification": TaskSpec(
        "crop_classification.MultiTemporalCropClassification", test_splits=("val",),
        description="Multi-temporal crop classification, 3 dates x 6 HLS bands, 13 classes",
    ),
    "phileo_lc": TaskSpec("phileo.PhilEOBench", {"label": "lc"}, description="PhilEO Bench land cover (11 WorldCover classes)"),
    "phileo_building": TaskSpec("phileo.PhilEOBench", {"label": "building"}, description="PhilEO Bench building density (regression)"),
    "phileo_roads": TaskSpec("phileo.PhilEOBench", {"label": "roads"}, description="PhilEO Bench road density (regression)"),
    "generic": TaskSpec(
        "generic_segmentation.GeoTIFFSegmentationFolder",
        description="Your own image/label GeoTIFF folder (needs --band-names and --num-classes or --regression)",
    ),
}
_TASK_ALIASES = {
    "burn_scars": "hls_burn_scars", "crop": "crop_classification", "multi_temporal_crop_classification": "crop_classification",
    "phileo_land_cover": "phileo_lc", "phileo_buildings": "phileo_building", "folder": "generic",
}


def resolve_task(name: str) -> str:
    """Canonical task name (`-` and `_` are interchangeable; a few aliases)."""
    key = name.strip().lower().replace("-", "_")
    key = _TASK_ALIASES.get(key, key)
    if key not in TASKS:
        raise ValueError(f"--task {name!r}: unknown task; expected one of {sorted(TASKS)}")
    return key
