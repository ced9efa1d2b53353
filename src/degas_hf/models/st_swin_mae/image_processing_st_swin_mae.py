"""Image processor for ST-SwinMAE / ST-SwinUNet: multispectral satellite image time series.

This file is Hub-bound: it is copied next to the weights by ``save_pretrained`` and imported with
``trust_remote_code=True``. At module level it imports only the standard library, numpy, torch and transformers;
rasterio (for GeoTIFF paths) is imported inside the functions that read files.
"""

from __future__ import annotations

import copy
import math
import os
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs

try:  # transformers >= 5.x: the output class of `post_process_semantic_segmentation(return_segmentation_scores=True)`
    from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
except ImportError:  # pragma: no cover - older transformers: plain BatchFeature items with the same keys
    SemanticSegmentationPostProcessorOutput = BatchFeature

# --------------------------------------------------------------------------------------------------------------------
# Normalisation presets (per-band statistics keyed by band name; sources in datasets.md)
# --------------------------------------------------------------------------------------------------------------------

_S2_L1C_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
_S2_L2A_BANDS = tuple(b for b in _S2_L1C_BANDS if b != "B10")
_HLS_BANDS = ("B02", "B03", "B04", "B8A", "B11", "B12")

NORMALIZATION_PRESETS: dict[str, dict[str, Any]] = {
    # zhu-xlab/SSL4EO-S12 src/benchmark/pretrain_ssl/datasets/SSL4EO/ssl4eo_dataset.py (50k subset), raw DN.
    "ssl4eo-s12-l1c": {
        "description": "SSL4EO-S12 v1.0 Sentinel-2 L1C, digital numbers (TOA reflectance x 10000)",
        "statistics": dict(
            zip(
                _S2_L1C_BANDS,
                zip(
                    (1605.57504906, 1390.78157673, 1314.8729939, 1363.52445545, 1549.44374991, 2091.74883118,
                     2371.7172463, 2299.90463006, 2560.29504086, 830.06605044, 22.10351321, 2177.07172323,
                     1524.06546312),
                    (786.78685367, 850.34818441, 875.06484736, 1138.84957046, 1122.17775652, 1161.59187054,
                     1274.39184232, 1248.42891965, 1345.52684884, 577.31607053, 51.15431158, 1336.09932639,
                     1136.53823676),
                ),
            )
        ),
        "rescale_factor": 1.0,
        "nodata_value": None,
    },
    "ssl4eo-s12-l2a": {
        "description": "SSL4EO-S12 v1.0 Sentinel-2 L2A, digital numbers (BOA reflectance x 10000)",
        "statistics": dict(
            zip(
                _S2_L2A_BANDS,
                zip(
                    (752.40087073, 884.29673756, 1144.16202635, 1297.47289228, 1624.90992062, 2194.6423161,
                     2422.21248945, 2517.76053101, 2581.64687018, 2645.51888987, 2368.51236873, 1805.06846033),
                    (1108.02887453, 1155.15170768, 1183.6292542, 1368.11351514, 1370.265037, 1355.55390699,
                     1416.51487101, 1474.78900051, 1439.3086061, 1582.28010962, 1455.52084939, 1343.48379601),
                ),
            )
        ),
        "rescale_factor": 1.0,
        "nodata_value": None,
    },
    "ssl4eo-s12-s1": {
        "description": "SSL4EO-S12 v1.0 Sentinel-1 GRD, backscatter in dB",
        "statistics": {"VV": (-12.54847273, 5.25697717), "VH": (-20.19237134, 5.91150917)},
        "rescale_factor": 1.0,
        "nodata_value": None,
    },
    # DLR-MF-DAS/SSL4EO-S12-v1.1 (WebDataset release: the zarr means minus the +1000 offset).
    "ssl4eo-s12-v1.1-l1c": {
        "description": "SSL4EO-S12 v1.1 Sentinel-2 L1C (WebDataset, no +1000 offset), digital numbers",
        "statistics": dict(
            zip(
                _S2_L1C_BANDS,
                zip(
                    (1607.345, 1393.068, 1320.225, 1373.963, 1562.536, 2110.071, 2392.832, 2321.154, 2583.77,
                     838.712, 21.753, 2205.112, 1545.798),
                    (786.523, 849.702, 875.318, 1143.578, 1126.248, 1161.98, 1273.505, 1246.79, 1342.755,
                     576.795, 45.626, 1340.347, 1145.036),
                ),
            )
        ),
        "rescale_factor": 1.0,
        "nodata_value": None,
    },
    "ssl4eo-s12-v1.1-l2a": {
        "description": "SSL4EO-S12 v1.1 Sentinel-2 L2A (WebDataset, no +1000 offset), digital numbers",
        "statistics": dict(
            zip(
                _S2_L2A_BANDS,
                zip(
                    (793.243, 924.863, 1184.553, 1340.936, 1671.402, 2240.082, 2468.412, 2563.244, 2627.704,
                     2711.071, 2416.714, 1849.625),
                    (1160.144, 1201.092, 1219.943, 1397.225, 1400.035, 1373.136, 1429.17, 1485.025, 1447.836,
                     1652.703, 1471.002, 1365.307),
                ),
            )
        ),
        "rescale_factor": 1.0,
        "nodata_value": None,
    },
    # NASA-IMPACT/hls-foundation-os configs/burn_scars.py: the images are already reflectance.
    "hls-burn-scars": {
        "description": "HLS Burn Scars (HLS S30/L30 reflectance, 0-1), nodata -9999",
        "statistics": dict(
            zip(
                _HLS_BANDS,
                zip(
                    (0.033349706741586264, 0.05701185520536176, 0.05889748132001316, 0.2323245113436119,
                     0.1972854853760658, 0.11944914225186566),
                    (0.02269135568823774, 0.026807560223070237, 0.04004109844362779, 0.07791732423672691,
                     0.08708738838140137, 0.07241979477437814),
                ),
            )
        ),
        "rescale_factor": 1.0,
        "nodata_value": -9999.0,
    },
    # hls-foundation-os configs/sen1floods11_config.py: S2Hand int16 x 0.0001, then these reflectance stats.
    "sen1floods11": {
        "description": "Sen1Floods11 S2Hand (L1C x 10000, int16, nodata 0), scaled by 1e-4",
        "statistics": dict(
            zip(
                _HLS_BANDS,
                zip(
                    (0.14245495, 0.13921481, 0.12434631, 0.31420089, 0.20743526, 0.12046503),
                    (0.04036231, 0.04186983, 0.05267646, 0.0822221, 0.06834774, 0.05294205),
                ),
            )
        ),
        "rescale_factor": 1e-4,
        "nodata_value": 0.0,
    },
    # hls-foundation-os configs/multi_temporal_crop_classification.py: DN (reflectance x 10000), 3 dates.
    "crop-classification": {
        "description": "Multi-temporal crop classification (HLS, reflectance x 10000), nodata -9999",
        "statistics": dict(
            zip(
                _HLS_BANDS,
                zip(
                    (494.905781, 815.239594, 924.335066, 2968.881459, 2634.621962, 1739.579917),
                    (284.925432, 357.84876, 575.566823, 896.601013, 951.900334, 921.407808),
                ),
            )
        ),
        "rescale_factor": 1.0,
        "nodata_value": -9999.0,
    },
}

# Largest integer magnitude that float32 holds exactly; wider integers are refused above it.
_FLOAT32_EXACT_INT = 2**24
_SUPPORTED_KINDS = ("u", "i", "f")


def canonical_band_name(name: str) -> str:
    """Canonical spelling of a band name, so that "B2", "b02" and "B02" match, and "b8a" matches "B8A".

    Sentinel-2 style names `B<n>` get a two-digit number; everything else is upper-cased and stripped.
    """
    text = str(name).strip().upper()
    match = re.fullmatch(r"B0*(\d{1,2})(A?)", text)
    if match:
        number, suffix = int(match.group(1)), match.group(2)
        return f"B{number}{suffix}" if suffix else f"B{number:02d}"
    return text


_DATE_SUFFIX = re.compile(r"[_\-. ](T|D|DATE|TIME)?\d+$", flags=re.IGNORECASE)


# A description that names no band: "Band 1", "band_3", "7" (but not "B1", which is Sentinel-2's B01).
_GENERIC_BAND_NAME = re.compile(r"^\s*(band)?[\s_-]*\d+\s*$", re.IGNORECASE)


def strip_date_suffix(name: str) -> str:
    """`"B02_t3"`, `"B02-d3"`, `"B02 3"` -> `"B02"`: drop a separated date suffix from a band description."""
    return _DATE_SUFFIX.sub("", str(name))


def date_major_band_names(descriptions: Sequence[str | None], frames_per_file: int = 1) -> list[str] | None:
    """The band names of one date from the band descriptions of a file holding `frames_per_file` dates date-major.

    None when a description of the first date is missing. With several dates, descriptions that repeat the band
    names per date (`B02 ... B12 B02 ... B12`) are used as they are; otherwise a date suffix (`B02_t0 ... B12_t3`)
    is stripped.
    """
    descriptions = list(descriptions)
    per_date = len(descriptions) // max(1, frames_per_file)
    names = descriptions[:per_date]
    if not names or any(not d for d in names):
        return None
    names = [str(n) for n in names]
    if frames_per_file <= 1:
        return names
    repeated = all(
        [str(d) for d in descriptions[t * per_date : (t + 1) * per_date]] == names for t in range(frames_per_file)
    )
    return names if repeated else [strip_date_suffix(n) for n in names]


def _as_pair(value, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return (int(value["height"]), int(value["width"]))
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"`{name}` must be an int, an (height, width) pair or a dict, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------------------------------
# Reading inputs into (T, C, H, W) samples
# --------------------------------------------------------------------------------------------------------------------


class _Sample:
    """One time series before normalisation: raw values (T, C, H, W), the input band names and per-date nodata."""

    __slots__ = ("array", "band_names", "nodata", "input_shape")

    def __init__(
        self,
        array: np.ndarray,
        band_names: list[str] | None,
        nodata: list[float | None],
        input_shape: tuple[int, ...] | None = None,
    ):
        self.array = array
        self.band_names = band_names
        self.nodata = nodata
        # Shape of the array (or of one date's array) as the user passed it, before moving channels first; None for
        # files, whose band axis rasterio fixes.
        self.input_shape = input_shape


def _is_path(obj) -> bool:
    return isinstance(obj, (str, os.PathLike))


def _is_array(obj) -> bool:
    return isinstance(obj, (np.ndarray, torch.Tensor))


def _to_numpy(obj) -> np.ndarray:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    return np.asarray(obj)


def _max_abs_value(dtype: np.dtype) -> float:
    """The largest magnitude an integer input can hold after `_check_dtype` (2**24 beyond 16 bits)."""
    if dtype.kind not in "ui":
        return float("inf")
    if dtype.itemsize > 2:
        return float(_FLOAT32_EXACT_INT)
    info = np.iinfo(dtype)
    return float(max(abs(info.min), info.max))


def _check_dtype(array: np.ndarray, where: str) -> np.ndarray:
    """Refuse dtypes that cannot be turned into float32 safely; return the array unchanged otherwise."""
    if array.dtype.kind not in _SUPPORTED_KINDS:
        raise ValueError(
            f"{where}: expected an integer or floating point array, found dtype {array.dtype} "
            "(bool, complex, object and string arrays are not images)"
        )
    if array.dtype.kind in "ui" and array.dtype.itemsize > 2 and array.size:
        low, high = int(array.min()), int(array.max())
        if max(abs(low), abs(high)) > _FLOAT32_EXACT_INT:
            raise ValueError(
                f"{where}: dtype {array.dtype} holds values in [{low}, {high}], beyond +-2**24, which float32 "
                "cannot represent exactly; rescale the data (e.g. to reflectance) or cast it to float yourself"
            )
    return array


def _read_geotiff(path, frames_per_file: int = 1) -> tuple[np.ndarray, list[str] | None, float | None, dict]:
    """Read one GeoTIFF into (T, C, H, W) with T = `frames_per_file` (bands stored date-major).

    Returns the array (in its file dtype), the band names of one date (from the band descriptions, or None when not
    all are set), the file's nodata value and a dict with `crs`, `transform` and `shape` for grid checks.
    """
    try:
        import rasterio
    except ImportError as err:  # pragma: no cover - rasterio is a dependency of degas-hf, optional on the Hub
        raise ImportError("Reading GeoTIFF paths needs rasterio: pip install rasterio") from err

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"Input raster {path!r} does not exist")
    try:
        with rasterio.open(path) as src:
            array = src.read()
            descriptions = list(src.descriptions)
            nodata = src.nodata
            grid = {"crs": src.crs, "transform": src.transform, "shape": (src.height, src.width)}
    except rasterio.errors.RasterioError as err:
        raise ValueError(f"Input {path!r} is not a readable raster: {err}") from err
    count = array.shape[0]
    if frames_per_file < 1 or count % frames_per_file:
        raise ValueError(
            f"{path!r}: {count} bands cannot be split into frames_per_file={frames_per_file} dates of equal size"
        )
    bands_per_date = count // frames_per_file
    names = date_major_band_names(descriptions, frames_per_file)
    array = array.reshape(frames_per_file, bands_per_date, *array.shape[1:])
    return array, names, nodata, grid


def _same_grid(reference: dict, other: dict, ref_path, other_path) -> None:
    for key in ("crs", "shape"):
        if reference[key] != other[key]:
            raise ValueError(
                f"Dates do not share a grid: {key} of {other_path!r} is {other[key]}, expected {reference[key]} "
                f"(from {ref_path!r})"
            )
    if not reference["transform"].almost_equals(other["transform"]):
        raise ValueError(
            f"Dates do not share a grid: transform of {other_path!r} is {tuple(other['transform'])[:6]}, expected "
            f"{tuple(reference['transform'])[:6]} (from {ref_path!r})"
        )


CHANNELS_FIRST = "channels_first"
CHANNELS_LAST = "channels_last"


def _data_format(value, name: str) -> str | None:
    """`"channels_first"`, `"channels_last"` or None from a string or a `transformers.image_utils.ChannelDimension`."""
    if value is None:
        return None
    text = getattr(value, "value", value)
    if text not in (CHANNELS_FIRST, CHANNELS_LAST):
        raise ValueError(f"`{name}` must be 'channels_first' or 'channels_last' (or a ChannelDimension), got {value!r}")
    return text


def _channels_first(array: np.ndarray, data_format: str | None) -> np.ndarray:
    """(H, W, C) -> (C, H, W) and (T, H, W, C) -> (T, C, H, W) for channels-last input; a view, no copy."""
    return np.moveaxis(array, -1, -3) if data_format == CHANNELS_LAST else array


def _check_channel_axis(input_shape: tuple[int, ...], channels: int, expected: int, data_format: str | None) -> None:
    """Refuse an array whose channel axis, as `data_format` places it, contradicts its shape: it does not hold the
    `expected` number of bands while the other layout's channel axis would."""
    if channels == expected or len(input_shape) < 3:
        return
    given = data_format or CHANNELS_FIRST
    axis, other, other_axis = (-1, CHANNELS_FIRST, -3) if given == CHANNELS_LAST else (-3, CHANNELS_LAST, -1)
    if input_shape[other_axis] == expected:
        raise ValueError(
            f"input_data_format={given!r} reads the channels from axis {len(input_shape) + axis} of the array of "
            f"shape {input_shape} ({channels} channels), but {expected} bands are expected; the array looks "
            f"{other}: pass input_data_format={other!r}"
        )


def _load_sample(item, frames_per_file: int, data_format: str | None = None) -> _Sample:
    """One sample from a path, an array/tensor (C, H, W) or (T, C, H, W) (channels last: (H, W, C) or
    (T, H, W, C) when `data_format="channels_last"`), or a list of per-date paths or arrays."""
    if _is_path(item):
        array, names, nodata, _ = _read_geotiff(item, frames_per_file)
        return _Sample(_check_dtype(array, f"{os.fspath(item)!r}"), names, [nodata] * array.shape[0])
    if _is_array(item):
        array = _check_dtype(_to_numpy(item), "input array")
        input_shape = tuple(array.shape)
        if array.ndim not in (3, 4):
            layout = "(H, W, C) or (T, H, W, C)" if data_format == CHANNELS_LAST else "(C, H, W) or (T, C, H, W)"
            raise ValueError(f"Expected one sample as {layout}, found an array of shape {input_shape}")
        array = _channels_first(array, data_format)
        if array.ndim == 3:
            array = array[None]
        return _Sample(array, None, [None] * array.shape[0], input_shape)
    if isinstance(item, (list, tuple)):
        if len(item) == 0:
            raise ValueError("Expected at least one date, found an empty list")
        if all(_is_path(p) for p in item):
            frames, names, nodata, grids = [], None, [], []
            for path in item:
                array, these_names, these_nodata, grid = _read_geotiff(path, frames_per_file)
                _check_dtype(array, f"{os.fspath(path)!r}")
                if grids:
                    _same_grid(grids[0], grid, item[0], path)
                    if (names is None) != (these_names is None) or (
                        names and [canonical_band_name(n) for n in names] != [canonical_band_name(n) for n in these_names]
                    ):
                        raise ValueError(
                            f"Band names differ across dates: {these_names} in {os.fspath(path)!r}, expected {names}"
                        )
                    if array.shape[1] != frames[0].shape[1]:
                        raise ValueError(
                            f"Band count differs across dates: {array.shape[1]} in {os.fspath(path)!r}, "
                            f"expected {frames[0].shape[1]}"
                        )
                names = these_names
                grids.append(grid)
                frames.append(array)
                nodata.extend([these_nodata] * array.shape[0])
            return _Sample(np.concatenate(frames, axis=0), names, nodata)
        if all(_is_array(a) for a in item):
            arrays = [_check_dtype(_to_numpy(a), f"date {i}") for i, a in enumerate(item)]
            for i, a in enumerate(arrays):
                if a.ndim != 3:
                    layout = "(H, W, C)" if data_format == CHANNELS_LAST else "(C, H, W)"
                    raise ValueError(f"Expected each date as {layout}, found shape {tuple(a.shape)} for date {i}")
                if a.shape != arrays[0].shape:
                    raise ValueError(
                        f"Dates differ in shape: date {i} is {tuple(a.shape)}, expected {tuple(arrays[0].shape)}"
                    )
            dtype = np.result_type(*arrays)
            stacked = np.stack([_channels_first(a, data_format).astype(dtype, copy=False) for a in arrays])
            return _Sample(stacked, None, [None] * len(arrays), tuple(arrays[0].shape))
    raise ValueError(
        "Expected a path, an array (C, H, W) or (T, C, H, W), or a list of per-date paths or arrays, found "
        f"{type(item).__name__}"
    )


def _split_batch(images) -> list:
    """Split the user's `images` into a list of samples (see `STSwinMAEImageProcessor.preprocess`)."""
    if _is_path(images):
        return [images]
    if _is_array(images):
        ndim = images.ndim
        if ndim == 5:
            return list(images)
        if ndim in (3, 4):
            return [images]
        raise ValueError(
            "Expected an array of shape (C, H, W), (T, C, H, W) or (B, T, C, H, W), found shape "
            f"{tuple(images.shape)}"
        )
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("Expected at least one image, found an empty list")
        if all(_is_path(p) for p in images):
            return [list(images)]  # one time series, one file per date
        if all(_is_array(a) and a.ndim == 3 for a in images):
            return [list(images)]  # one time series, one array per date
        if all(isinstance(s, (list, tuple)) or (_is_array(s) and s.ndim == 4) for s in images):
            return list(images)  # a batch
        raise ValueError(
            "Could not tell dates from samples: pass a list of per-date (C, H, W) arrays or paths for one sample, "
            "or a list of samples ((T, C, H, W) arrays or lists of dates) for a batch; found a list of "
            + ", ".join(sorted({type(s).__name__ + (f"[ndim={s.ndim}]" if _is_array(s) else "") for s in images}))
        )
    raise ValueError(f"Expected a path, an array, a tensor or a list of them, found {type(images).__name__}")


# --------------------------------------------------------------------------------------------------------------------
# The processor
# --------------------------------------------------------------------------------------------------------------------


class STSwinMAEImageProcessorKwargs(ImagesKwargs, total=False):
    band_names: list[str]
    nodata_value: float | None
    fill_value: float
    pad_size_divisor: int | None
    preset: str | None


class STSwinMAEImageProcessor(BaseImageProcessor):
    r"""
    Image processor for multispectral satellite image time series (ST-SwinMAE, ST-SwinUNet).

    It turns GeoTIFF paths, numpy arrays or torch tensors into the model inputs: `pixel_values` of shape
    (batch, channels, frames, height, width) = (B, C, T, H, W), float32, normalised, channels in `band_names` order,
    and `valid_mask` (B, T, H, W) bool, False where a pixel holds no data (nodata value or NaN/Inf in any band). Pixels
    without data are set to `fill_value` after normalisation, so no NaN reaches the model.

    Steps, in order: read, select and reorder bands by name, mask nodata, rescale (`x * rescale_factor`), normalise
    per band (`(x - mean) / std`), fill masked pixels, crop or pad to `crop_size` (centre), pad to a multiple of
    `pad_size_divisor`. All arithmetic is done in float32 after the cast, so integer inputs cannot wrap around.

    Build one from a normalisation preset (statistics keyed by band name, so any subset and order of the preset's
    bands keeps the right statistics):

    ```python
    >>> processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=["B02", "B03", "B04", "B8A", "B11", "B12"])
    >>> batch = processor(images, band_names=input_band_names, return_tensors="pt")
    >>> batch["pixel_values"].shape, batch["valid_mask"].shape   # (B, 6, T, H, W), (B, T, H, W)
    ```

    Args:
        band_names (`list[str]`):
            The bands the model expects, in the order of the channels of `pixel_values` (the model's
            `config.band_names`). Names are matched after canonicalisation (`"B2"`, `"b02"` and `"B02"` are one band).
        image_mean (`list[float]`, *optional*):
            Per-band mean, aligned with `band_names`, in rescaled units. Defaults to zeros.
        image_std (`list[float]`, *optional*):
            Per-band standard deviation, aligned with `band_names`, in rescaled units. Defaults to ones.
        do_rescale (`bool`, *optional*, defaults to `True`):
            Whether to multiply the raw values by `rescale_factor` before normalising.
        rescale_factor (`float`, *optional*, defaults to 1.0):
            Factor applied to the raw values (e.g. `1e-4` for Sentinel-2 digital numbers to reflectance).
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to apply `(x - image_mean) / image_std` per band.
        nodata_value (`float`, *optional*):
            Raw value that marks missing data in arrays. GeoTIFF inputs also use the nodata value of their file.
            NaN and Inf always count as missing.
        fill_value (`float`, *optional*, defaults to 0.0):
            Value written into `pixel_values` where `valid_mask` is False (after normalisation: 0 is the band mean).
        crop_size (`dict` or `int` or `(h, w)`, *optional*):
            If set, every sample is centre-cropped (or padded, with `fill_value` and `valid_mask` False) to this size.
        pad_size_divisor (`int`, *optional*):
            If set, height and width are padded at the bottom and right to a multiple of it (the model also pads
            internally, so this is only needed for fixed-shape export).
        preset (`str`, *optional*):
            Name of the preset the statistics came from; informative only.
    """

    model_input_names = ["pixel_values", "valid_mask"]
    valid_kwargs = STSwinMAEImageProcessorKwargs

    def __init__(
        self,
        band_names: Sequence[str] = ("B02", "B03", "B04", "B8A", "B11", "B12"),
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        do_rescale: bool = True,
        rescale_factor: float = 1.0,
        do_normalize: bool = True,
        nodata_value: float | None = None,
        fill_value: float = 0.0,
        crop_size=None,
        pad_size_divisor: int | None = None,
        preset: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.band_names = [str(b) for b in band_names]
        canonical = [canonical_band_name(b) for b in self.band_names]
        if not self.band_names or len(set(canonical)) != len(canonical):
            raise ValueError(f"`band_names` must be non-empty and unique, got {self.band_names}")
        num_bands = len(self.band_names)
        self.image_mean = [0.0] * num_bands if image_mean is None else self._per_band("image_mean", image_mean)
        self.image_std = [1.0] * num_bands if image_std is None else self._per_band("image_std", image_std)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.nodata_value = None if nodata_value is None else float(nodata_value)
        self.fill_value = float(fill_value)
        if not math.isfinite(self.fill_value):
            raise ValueError(f"`fill_value` must be finite, got {self.fill_value}")
        pair = _as_pair(crop_size, "crop_size")
        self.crop_size = None if pair is None else {"height": pair[0], "width": pair[1]}
        self.pad_size_divisor = None if pad_size_divisor is None else int(pad_size_divisor)
        self.preset = preset

    # ---------------------------------------------------------------------------------------------------- presets

    @staticmethod
    def available_presets() -> dict[str, str]:
        """Names and one-line descriptions of the normalisation presets."""
        return {name: preset["description"] for name, preset in NORMALIZATION_PRESETS.items()}

    @classmethod
    def from_preset(cls, name: str, band_names: Sequence[str] | None = None, **kwargs) -> "STSwinMAEImageProcessor":
        """A processor with the statistics of a dataset preset.

        Args:
            name (`str`):
                One of `NORMALIZATION_PRESETS`: `"ssl4eo-s12-l1c"`, `"ssl4eo-s12-l2a"`, `"ssl4eo-s12-s1"`,
                `"ssl4eo-s12-v1.1-l1c"`, `"ssl4eo-s12-v1.1-l2a"`, `"hls-burn-scars"`, `"sen1floods11"`,
                `"crop-classification"`.
            band_names (`list[str]`, *optional*):
                The model's bands, in order (a subset of the preset's bands, any order). Defaults to all of them.
            kwargs:
                Other constructor arguments (`nodata_value`, `crop_size`, ...), overriding the preset's.
        """
        if name not in NORMALIZATION_PRESETS:
            raise ValueError(f"Unknown normalisation preset {name!r}; expected one of {sorted(NORMALIZATION_PRESETS)}")
        preset = NORMALIZATION_PRESETS[name]
        stats = {canonical_band_name(b): v for b, v in preset["statistics"].items()}
        band_names = list(preset["statistics"]) if band_names is None else [str(b) for b in band_names]
        missing = [b for b in band_names if canonical_band_name(b) not in stats]
        if missing:
            raise ValueError(
                f"Preset {name!r} has no statistics for bands {missing}; it has {list(preset['statistics'])}"
            )
        options = {"rescale_factor": preset["rescale_factor"], "nodata_value": preset["nodata_value"], "preset": name}
        options.update(kwargs)
        return cls(
            band_names=band_names,
            image_mean=[stats[canonical_band_name(b)][0] for b in band_names],
            image_std=[stats[canonical_band_name(b)][1] for b in band_names],
            **options,
        )

    # ------------------------------------------------------------------------------------------------- helpers

    def _per_band(self, name: str, values) -> list[float]:
        """`values` as one float per band of `band_names` (no broadcasting); std positive, all finite."""
        if np.isscalar(values) or (_is_array(values) and np.ndim(_to_numpy(values)) == 0):
            raise ValueError(
                f"`{name}` needs one value per band: expected a list of {len(self.band_names)} ({self.band_names}), "
                f"found {values!r}"
            )
        values = [float(v) for v in (_to_numpy(values).ravel() if _is_array(values) else values)]
        if len(values) != len(self.band_names):
            raise ValueError(
                f"`{name}` needs one value per band: expected {len(self.band_names)} ({self.band_names}), "
                f"found {len(values)}"
            )
        if name == "image_std" and any(not (v > 0 and math.isfinite(v)) for v in values):
            raise ValueError(f"`image_std` must be positive and finite, got {values}")
        if any(not math.isfinite(v) for v in values):
            raise ValueError(f"`{name}` must be finite, got {values}")
        return values

    def _with_overrides(self, **overrides) -> "STSwinMAEImageProcessor":
        """A shallow copy with this call's settings (None keeps the processor's own), checked like `__init__`'s."""
        settings = copy.copy(self)
        for name in ("image_mean", "image_std"):
            if overrides.get(name) is not None:
                setattr(settings, name, self._per_band(name, overrides[name]))
        for name in ("do_rescale", "do_normalize"):
            if overrides.get(name) is not None:
                setattr(settings, name, bool(overrides[name]))
        if overrides.get("rescale_factor") is not None:
            settings.rescale_factor = float(overrides["rescale_factor"])
        if overrides.get("nodata_value") is not None:
            settings.nodata_value = float(overrides["nodata_value"])
        return settings

    def band_indices(self, input_band_names: Sequence[str] | None, num_channels: int) -> list[int]:
        """Indices into the input channels that give the model's bands, in the model's order.

        Args:
            input_band_names (`list[str]` or `None`):
                Names of the input channels. `None` means the input already holds the model's bands, in order.
            num_channels (`int`):
                Channels of the input.
        """
        if input_band_names is None:
            if num_channels != len(self.band_names):
                raise ValueError(
                    f"Expected {len(self.band_names)} bands {self.band_names} (in that order), found {num_channels} "
                    "unnamed channels; pass `band_names=` to name the input channels (GeoTIFF band descriptions are "
                    "used when set)"
                )
            return list(range(num_channels))
        input_band_names = [str(b) for b in input_band_names]
        if len(input_band_names) != num_channels:
            raise ValueError(
                f"`band_names` names {len(input_band_names)} channels {input_band_names}, but the input has "
                f"{num_channels}"
            )
        canonical = [canonical_band_name(name) for name in input_band_names]
        repeated = [name for name, key in zip(input_band_names, canonical) if canonical.count(key) > 1]
        if repeated:
            raise ValueError(
                f"Input band names must be unique, found {sorted(set(repeated))} more than once in {input_band_names} "
                "(B2 and B02 are one band); a file holding several dates needs `frames_per_file`"
            )
        lookup = dict(zip(canonical, range(num_channels)))
        missing = [b for b in self.band_names if canonical_band_name(b) not in lookup]
        if missing:
            raise ValueError(
                f"Missing bands {missing}: the model expects {self.band_names}, the input has {input_band_names}"
            )
        return [lookup[canonical_band_name(b)] for b in self.band_names]

    def usable_band_names(self, names: Sequence[str] | None) -> list[str] | None:
        """The names of a source's bands (e.g. GeoTIFF descriptions) to match against the model's bands.

        As given when any matches; with a date suffix stripped (`B02_t0`) when only that matches; None for generic
        descriptions that name no band (`Band 1`, `3`), which are then taken in file order like unnamed bands (with a
        warning). Real names that match nothing are returned as they are, so `band_indices` raises and lists what is
        missing and what was found: bands are never taken in file order under names that say otherwise.
        """
        if names is None:
            return None
        names = [str(n) for n in names]
        if self._names_overlap(names):
            return names
        stripped = [strip_date_suffix(n) for n in names]
        if self._names_overlap(stripped):
            return stripped
        if all(_GENERIC_BAND_NAME.match(n) for n in names):
            warnings.warn(f"Ignoring band descriptions {names}: they name no band; taking the bands in file order")
            return None
        return names

    def _names_overlap(self, names: Sequence[str]) -> bool:
        wanted = {canonical_band_name(b) for b in self.band_names}
        return any(canonical_band_name(n) in wanted for n in names)

    def normalize_array(
        self, array: np.ndarray, nodata: Sequence[float | None] | float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mask, rescale, normalise and fill one sample whose channels are already in `band_names` order.

        Args:
            array (`np.ndarray` of shape (T, C, H, W)):
                Raw values, any real dtype.
            nodata (`float` or one value per date, *optional*):
                Nodata value(s) of the source; `self.nodata_value` is used as well.

        Returns:
            `(pixel_values, valid_mask)`: float32 (C, T, H, W) and bool (T, H, W).
        """
        array = _check_dtype(np.asarray(array), "input")
        if array.ndim != 4 or array.shape[1] != len(self.band_names):
            raise ValueError(
                f"Expected (T, {len(self.band_names)}, H, W) with bands {self.band_names}, found {tuple(array.shape)}"
            )
        num_frames, num_channels = array.shape[:2]
        if nodata is None or np.isscalar(nodata):
            nodata = [nodata] * num_frames
        # Rescale and normalise as one affine map per band, (x * rescale - mean) / std = x * scale + offset, fused
        # with the cast and the transpose to (C, T, H, W) in the first pass. NaN and Inf stay non-finite, and values
        # beyond the float32 range become Inf: both are masked below.
        scale, offset = self._affine_normalization(num_channels)
        values = np.empty((num_channels, num_frames, *array.shape[2:]), dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            np.multiply(array.transpose(1, 0, 2, 3), scale[:, None, None, None], out=values, casting="unsafe")
            values += offset[:, None, None, None]
        invalid = np.zeros((num_frames, *array.shape[2:]), dtype=bool)
        for t in range(num_frames):
            for value in {nodata[t], self.nodata_value}:
                if value is not None and not math.isnan(value):
                    invalid[t] |= (array[t] == value).any(axis=0)
        # Integer inputs are bounded (see _check_dtype): their result can only be non-finite if the bound overflows.
        with np.errstate(over="ignore", invalid="ignore"):
            bound = np.float32(_max_abs_value(array.dtype) * np.abs(scale).max() + np.abs(offset).max())
        if array.dtype.kind == "f" or not np.isfinite(bound):
            invalid |= ~np.isfinite(values).all(axis=0)
        np.copyto(values, np.float32(self.fill_value), where=invalid[None])
        return values, ~invalid

    def _affine_normalization(self, num_channels: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-band float32 `scale` and `offset` with normalised = raw * scale + offset."""
        scale = np.full(num_channels, self.rescale_factor if self.do_rescale else 1.0, dtype=np.float64)
        offset = np.zeros(num_channels, dtype=np.float64)
        if self.do_normalize:
            std = np.asarray(self.image_std, dtype=np.float64)
            scale = scale / std
            offset = -np.asarray(self.image_mean, dtype=np.float64) / std
        return scale.astype(np.float32), offset.astype(np.float32)

    def _crop_or_pad(self, values: np.ndarray, valid: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Centre-crop or pad (C, T, H, W) and (T, H, W) to `size`; padding is `fill_value` / invalid."""
        height, width = values.shape[-2:]
        target_h, target_w = size
        top, left = max(0, (height - target_h) // 2), max(0, (width - target_w) // 2)
        values = values[..., top : top + target_h, left : left + target_w]
        valid = valid[..., top : top + target_h, left : left + target_w]
        pad_h, pad_w = target_h - values.shape[-2], target_w - values.shape[-1]
        if pad_h or pad_w:
            before_h, before_w = pad_h // 2, pad_w // 2
            pad = ((before_h, pad_h - before_h), (before_w, pad_w - before_w))
            values = np.pad(values, ((0, 0), (0, 0), *pad), constant_values=self.fill_value)
            valid = np.pad(valid, ((0, 0), *pad), constant_values=False)
        return values, valid

    def _pad_to_divisor(self, values: np.ndarray, valid: np.ndarray, divisor: int) -> tuple[np.ndarray, np.ndarray]:
        height, width = values.shape[-2:]
        pad_h, pad_w = (-height) % divisor, (-width) % divisor
        if pad_h or pad_w:
            values = np.pad(values, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), constant_values=self.fill_value)
            valid = np.pad(valid, ((0, 0), (0, pad_h), (0, pad_w)), constant_values=False)
        return values, valid

    # ---------------------------------------------------------------------------------------------- preprocess

    def preprocess(
        self,
        images,
        band_names: Sequence[str] | None = None,
        nodata_value: float | None = None,
        frames_per_file: int = 1,
        crop_size=None,
        pad_size_divisor: int | None = None,
        return_tensors: str | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        input_data_format=None,
        data_format=None,
        **kwargs,
    ) -> BatchFeature:
        """Turn images into `pixel_values` (B, C, T, H, W) float32 and `valid_mask` (B, T, H, W) bool.

        Args:
            images:
                One sample or a batch. A sample is a GeoTIFF path (bands of one date, or `frames_per_file` dates
                stored date-major), an array/tensor (C, H, W) (one date) or (T, C, H, W), or a list of per-date paths
                (same CRS, transform and size) or per-date (C, H, W) arrays. A batch is an array (B, T, C, H, W) or a
                list of samples ((T, C, H, W) arrays or lists of dates). All samples of a batch must end up with the
                same T, H and W.
            band_names (`list[str]`, *optional*):
                Names of the input channels, in input order; they must be unique (`B2` and `B02` are one band).
                Bands are selected and reordered to the processor's `band_names`; a missing band raises. Defaults to
                the GeoTIFF band descriptions when set; unnamed input must already hold exactly the model's bands in
                order.
            nodata_value (`float`, *optional*):
                Overrides `self.nodata_value` for this call.
            frames_per_file (`int`, *optional*, defaults to 1):
                Dates per GeoTIFF file (bands stored date-major: all bands of date 0, then date 1, ...).
            crop_size, pad_size_divisor:
                Override the processor's settings for this call.
            return_tensors (`str`, *optional*):
                `"pt"` for torch tensors, `"np"` (or None) for numpy arrays.
            image_mean, image_std (`list[float]`, *optional*):
                Override the statistics for this call: one value per band of the processor's `band_names` (the
                selected bands, in that order), in rescaled units; a scalar or another length raises.
            do_rescale, rescale_factor, do_normalize (*optional*):
                Override the processor's settings for this call.
            input_data_format (`str` or `ChannelDimension`, *optional*):
                Where the channel axis of array inputs is. `"channels_first"` (the default when None): a sample is
                (C, H, W) or (T, C, H, W) and a 5-D batch is (B, T, C, H, W), i.e. the channel axis is the third from
                the end. `"channels_last"`: a sample is (H, W, C) or (T, H, W, C) and a batch (B, T, H, W, C), i.e.
                the channel axis is the last. The leading axes are always (B, T). GeoTIFF paths are read band-first
                whatever this says. An array whose channel axis (for the given or default format) does not hold
                the expected number of bands while the other layout would is refused, naming the right format.
            data_format (`str` or `ChannelDimension`, *optional*):
                The output layout, which is fixed to (B, C, T, H, W): only None or `"channels_first"` is accepted.

        Returns:
            `BatchFeature` with `pixel_values` (B, C, T, H, W) and `valid_mask` (B, T, H, W).
        """
        unknown = set(kwargs) - {"device"}
        if unknown:
            raise ValueError(f"Unknown arguments {sorted(unknown)} for STSwinMAEImageProcessor.preprocess")
        if _data_format(data_format, "data_format") == CHANNELS_LAST:
            raise ValueError(
                "data_format='channels_last' is not supported: pixel_values are always (B, C, T, H, W), as the model "
                "expects; use input_data_format to describe the input's layout"
            )
        layout = _data_format(input_data_format, "input_data_format")
        settings = self._with_overrides(
            image_mean=image_mean, image_std=image_std, do_rescale=do_rescale, rescale_factor=rescale_factor,
            do_normalize=do_normalize, nodata_value=nodata_value,
        )
        crop = _as_pair(crop_size if crop_size is not None else self.crop_size, "crop_size")
        divisor = pad_size_divisor if pad_size_divisor is not None else self.pad_size_divisor
        all_values, all_valid = [], []
        for item in _split_batch(images):
            sample = _load_sample(item, frames_per_file, layout)
            names = band_names if band_names is not None else settings.usable_band_names(sample.band_names)
            expected = len(names) if names is not None else len(settings.band_names)
            if sample.input_shape is not None:
                _check_channel_axis(sample.input_shape, sample.array.shape[1], expected, layout)
            indices = settings.band_indices(names, sample.array.shape[1])
            values, valid = settings.normalize_array(sample.array[:, indices], sample.nodata)
            if crop is not None:
                values, valid = settings._crop_or_pad(values, valid, crop)
            if divisor:
                values, valid = settings._pad_to_divisor(values, valid, int(divisor))
            if not valid.any():
                warnings.warn("A sample holds no valid pixel (all nodata); its pixel_values are all fill_value")
            all_values.append(values)
            all_valid.append(valid)
        shapes = {v.shape[1:] for v in all_values}
        if len(shapes) > 1:
            raise ValueError(
                f"Samples of a batch must share (T, H, W), found {sorted(shapes)}; set `crop_size` or batch them apart"
            )
        data = {"pixel_values": np.stack(all_values), "valid_mask": np.stack(all_valid)}
        return BatchFeature(data=data, tensor_type=return_tensors)

    def __call__(self, images, *args, **kwargs) -> BatchFeature:
        return self.preprocess(images, *args, **kwargs)

    # -------------------------------------------------------------------------------------------- postprocess

    @staticmethod
    def _logits(outputs) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) or hasattr(outputs, "keys") else outputs.logits
        if not isinstance(logits, torch.Tensor):
            logits = torch.as_tensor(np.asarray(logits))
        if logits.ndim != 4:
            raise ValueError(f"Expected logits (B, num_labels, H, W), found shape {tuple(logits.shape)}")
        return logits

    @staticmethod
    def _resize(logits: torch.Tensor, target_sizes, index: int) -> torch.Tensor:
        """(K, H, W) logits of sample `index`, resized bilinearly to its target size when one is given."""
        item = logits[index]
        if target_sizes is not None:
            size = tuple(int(s) for s in target_sizes[index])
            if tuple(item.shape[-2:]) != size:
                item = F.interpolate(item[None].float(), size=size, mode="bilinear", align_corners=False)[0]
        return item

    @staticmethod
    def _no_data(valid_mask, index: int, size) -> torch.Tensor | None:
        """(H, W) bool, True where sample `index` has no valid date (from a (B, T, H, W) valid mask)."""
        if valid_mask is None:
            return None
        mask = torch.as_tensor(np.asarray(valid_mask[index]) if not isinstance(valid_mask, torch.Tensor) else valid_mask[index])
        mask = ~mask.bool().any(dim=0)
        if tuple(mask.shape) != tuple(size):
            mask = F.interpolate(mask[None, None].float(), size=tuple(size), mode="nearest")[0, 0].bool()
        return mask

    def post_process_semantic_segmentation(
        self,
        outputs,
        target_sizes: Sequence[tuple[int, int]] | None = None,
        return_segmentation_scores: bool = False,
        *,
        valid_mask=None,
        nodata_label: int = -1,
    ) -> list[torch.Tensor] | list[BatchFeature]:
        """Class maps from the output of `STSwinUNetForSemanticSegmentation`; the signature of transformers 5.24's
        semantic-segmentation processors (e.g. Segformer's), plus the nodata handling of this processor.

        Args:
            outputs (`SemanticSegmenterOutput` or dict with `logits` (B, num_labels, H, W)):
                Raw model outputs.
            target_sizes (`list[tuple[int, int]]`, *optional*):
                Size (height, width) of each map; logits are resized bilinearly before the argmax. None keeps the
                logits' size.
            return_segmentation_scores (`bool`, *optional*, defaults to `False`):
                Whether to return the scores with each map: each item is then a
                `SemanticSegmentationPostProcessorOutput` with `segmentation` (int64 (H, W), as without scores) and
                `segmentation_scores` (the raw logits (num_labels, H, W), resized like the map; not masked).
            valid_mask (`torch.Tensor` (B, T, H, W), *optional*, keyword only):
                The processor's `valid_mask`; pixels valid in no date get `nodata_label`.
            nodata_label (`int`, *optional*, keyword only, defaults to -1):
                Label of pixels without data.

        Returns:
            `list[torch.Tensor]`: one int64 (H, W) class map per sample; with `return_segmentation_scores=True`, a
            list of `SemanticSegmentationPostProcessorOutput` instead.
        """
        if not isinstance(return_segmentation_scores, (bool, np.bool_)):
            raise ValueError(
                "`return_segmentation_scores` must be a bool, found "
                f"{type(return_segmentation_scores).__name__} (pass the valid mask as `valid_mask=`)"
            )
        logits = self._logits(outputs)
        if target_sizes is not None and len(target_sizes) != logits.shape[0]:
            raise ValueError(f"Expected {logits.shape[0]} target sizes (one per sample), found {len(target_sizes)}")
        results = []
        for i in range(logits.shape[0]):
            item = self._resize(logits, target_sizes, i)
            classes = item.argmax(dim=0)
            no_data = self._no_data(valid_mask, i, classes.shape)
            if no_data is not None:
                classes[no_data] = nodata_label
            if return_segmentation_scores:
                results.append(
                    SemanticSegmentationPostProcessorOutput(data={"segmentation": classes, "segmentation_scores": item})
                )
            else:
                results.append(classes)
        return results

    def post_process_regression(
        self, outputs, target_sizes: Sequence[tuple[int, int]] | None = None, valid_mask=None, nodata_value=float("nan")
    ) -> list[torch.Tensor]:
        """Value maps from a regression model (`problem_type="regression"`), the counterpart of
        `post_process_semantic_segmentation`.

        Returns:
            `list[torch.Tensor]`: one float32 (H, W) map per sample ((num_labels, H, W) when num_labels > 1);
            pixels valid in no date hold `nodata_value`.
        """
        logits = self._logits(outputs)
        if target_sizes is not None and len(target_sizes) != logits.shape[0]:
            raise ValueError(f"Expected {logits.shape[0]} target sizes (one per sample), found {len(target_sizes)}")
        maps = []
        for i in range(logits.shape[0]):
            item = self._resize(logits, target_sizes, i).float().clone()
            no_data = self._no_data(valid_mask, i, item.shape[-2:])
            if no_data is not None:
                item[:, no_data] = nodata_value
            maps.append(item[0] if item.shape[0] == 1 else item)
        return maps


__all__ = [
    "STSwinMAEImageProcessor",
    "NORMALIZATION_PRESETS",
    "canonical_band_name",
    "date_major_band_names",
    "strip_date_suffix",
]
