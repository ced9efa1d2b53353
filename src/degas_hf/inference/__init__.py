"""Large-scene inference: streamed sliding-window prediction over GeoTIFFs, and PNG quicklooks."""

from .loading import load_model_for_inference
from .predict import GeoTiffSink, load_model_and_processor, output_paths, predict_geotiff
from .quicklook import render_quicklook, save_quicklook
from .sliding_window import (
    PRECISIONS,
    ArraySink,
    ArraySource,
    QuicklookSampler,
    SlidingWindowPredictor,
    blend_ramp,
    resolve_devices,
    resolve_precision,
    split_window_rows,
    window_starts,
)

__all__ = [
    "PRECISIONS",
    "ArraySink",
    "ArraySource",
    "GeoTiffSink",
    "QuicklookSampler",
    "SlidingWindowPredictor",
    "blend_ramp",
    "load_model_and_processor",
    "load_model_for_inference",
    "output_paths",
    "predict_geotiff",
    "render_quicklook",
    "resolve_devices",
    "resolve_precision",
    "save_quicklook",
    "split_window_rows",
    "window_starts",
]
