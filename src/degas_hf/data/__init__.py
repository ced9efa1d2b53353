"""Dataset readers, one class per dataset, all with the same interface (torchgeo style).

Downstream tasks (items: `pixel_values` (C, T, H, W), `valid_mask` (T, H, W), `labels` (H, W)):
`Sen1Floods11`, `HLSBurnScars`, `MultiTemporalCropClassification`, `PhilEOBench`, `GeoTIFFSegmentationFolder`
(users' own data), on the common base `GeoSegmentationDataset`. Pretraining: `SSL4EOS12Dataset`,
`SSL4EOS12ZarrDataset`, `TimeSeriesFolderDataset`, and `PreparedDataset` (shards written once by
`prepare_ssl4eo`, the fast path for long runs).

Names are resolved lazily, so importing `degas_hf.data` does not import rasterio, datasets or the pretraining
readers until they are used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    # downstream tasks
    "GeoSegmentationDataset": ".base",
    "Sample": ".base",
    "TaskInfo": ".base",
    "IGNORE_INDEX": ".base",
    "class_weights_from_counts": ".base",
    "Sen1Floods11": ".sen1floods11",
    "HLSBurnScars": ".hls_burn_scars",
    "MultiTemporalCropClassification": ".crop_classification",
    "PhilEOBench": ".phileo",
    "GeoTIFFSegmentationFolder": ".generic_segmentation",
    # pretraining (owned by the pretraining readers' modules)
    "SSL4EOS12Dataset": ".ssl4eo",
    "SSL4EOS12ZarrDataset": ".ssl4eo",
    "TimeSeriesFolderDataset": ".timeseries_folder",
    "RasterSampleDataset": ".timeseries_folder",
    "DataError": ".timeseries_folder",
    "collate_pretraining": ".timeseries_folder",
    "PreparedDataset": ".prepared",
    "prepare_ssl4eo": ".prepared",
    "verify_prepared": ".prepared",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
