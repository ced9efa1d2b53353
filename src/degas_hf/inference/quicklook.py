"""PNG quicklooks: an RGB view of the input beside the same view with the prediction overlaid, and a legend.

Only decimated views are used (each panel at most `max_size / 2` pixels on the long side), so a quicklook of a
10980 x 10980 scene costs a few MB and well under a second; the picture is composed with Pillow (no figure
library on the path). `degas-hf predict` fills them while it predicts (`SlidingWindowPredictor` with a
`QuicklookSampler`) and calls `render_quicklook`: the scene is never decoded a second time. `save_quicklook` reads
decimated views from sources, for outputs made otherwise.

The rendering helpers (`rgb_image`, `rgb_band_indices`, `colorize`, `colorize_values`, `overlay`,
`legend_entries`, `PALETTE`) are the one implementation that `degas-hf predict`, the model-card widget images
(`degas_hf.hub.quicklook`) and the demo Space (`degas_hf.hub.space`) share, so all three look the same: a
median-over-dates composite with a 2-98 % per-band stretch, classes in `PALETTE` blended at `CLASS_ALPHA`, values
on viridis blended at `VALUE_ALPHA`, nodata left showing the RGB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from ..models.st_swin_mae.image_processing_st_swin_mae import canonical_band_name

__all__ = [
    "CLASS_ALPHA",
    "PALETTE",
    "VALUE_ALPHA",
    "colorize",
    "colorize_values",
    "legend_entries",
    "overlay",
    "overlay_prediction",
    "quicklook_shape",
    "render_quicklook",
    "rgb_band_indices",
    "rgb_composite",
    "rgb_image",
    "save_quicklook",
    "stretch_rgb",
    "upscale",
]

# Class colours: label i gets PALETTE[i % 20]; matplotlib's tab10, then the light tab20 variants.
PALETTE = np.array(
    [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
        (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
        (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
        (219, 219, 141), (158, 218, 229),
    ],
    dtype=np.uint8,
)
NODATA_COLOR = (0, 0, 0)
VALUE_COLORMAP = "viridis"
CLASS_ALPHA = 0.5  # opacity of class colours over the RGB
VALUE_ALPHA = 0.7  # opacity of value colours over the RGB
BACKGROUND = (255, 255, 255)
RGB_NAMES = (("B04", "B03", "B02"), ("RED", "GREEN", "BLUE"), ("R", "G", "B"))


def quicklook_shape(height: int, width: int, max_size: int = 1024) -> tuple[int, int]:
    """(h, w) of a decimated view whose long side is at most `max_size`."""
    scale = min(1.0, max_size / max(height, width))
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def upscale(image: np.ndarray, target: int) -> np.ndarray:
    """Repeat pixels by the whole factor that brings the long side closest to (not above) `target`, at least 1."""
    factor = max(1, int(target // max(image.shape[:2])))
    return image.repeat(factor, 0).repeat(factor, 1) if factor > 1 else image


def rgb_band_indices(band_names: Sequence[str] | None) -> list[int] | None:
    """Indices of red, green and blue among `band_names` (Sentinel-2 B04/B03/B02, or RED/GREEN/BLUE, or R/G/B),
    or None when the names do not hold all three."""
    if band_names:
        lookup = {canonical_band_name(n): i for i, n in enumerate(band_names)}
        for triple in RGB_NAMES:
            if all(b in lookup for b in triple):
                return [lookup[b] for b in triple]
    return None


def stretch_rgb(rgb: np.ndarray, valid: np.ndarray | None = None, percentiles=(2.0, 98.0)) -> np.ndarray:
    """(3, h, w) values -> (h, w, 3) float in [0, 1], a per-band percentile stretch over the valid pixels."""
    rgb = rgb.astype(np.float32)
    valid = np.isfinite(rgb).all(axis=0) if valid is None else valid & np.isfinite(rgb).all(axis=0)
    out = np.zeros(rgb.shape[1:] + (3,), dtype=np.float32)
    if not valid.any():
        return out
    for band in range(3):
        low, high = np.percentile(rgb[band][valid], percentiles)
        scale = high - low if high > low else 1.0
        out[..., band] = np.clip((rgb[band] - low) / scale, 0, 1)
    out[~valid] = 0
    return out


def rgb_composite(frames: np.ndarray, nodata: Sequence[float | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3, h, w) raw (NaN or a per-date `nodata` value for missing data) -> per-pixel median over the dates that
    hold data: (3, h, w) float32 and valid (h, w)."""
    frames = frames.astype(np.float32)
    for t, value in enumerate(nodata or ()):
        if value is not None and not math.isnan(value):
            frames[t][:, (frames[t] == value).any(axis=0)] = np.nan
    valid = np.isfinite(frames).all(axis=1).any(axis=0)
    return _nanmedian_over_dates(frames), valid


def _nanmedian_over_dates(frames: np.ndarray) -> np.ndarray:
    """`np.nanmedian(frames, axis=0)`, the same values, 10-50x faster for a few dates: an odd-even transposition
    sort of the dates with elementwise min/max (NaN as +inf, so it sorts last), then the middle valid value, or the
    mean of the two middle ones. numpy's own path goes through masked arrays; more than 16 dates use `np.sort`."""
    finite = np.isfinite(frames)
    count = finite.sum(axis=0)
    values = np.where(finite, frames, np.float32(np.inf)).astype(np.float32, copy=False)
    low_index, high_index = np.maximum(count - 1, 0) // 2, np.minimum(count // 2, len(values) - 1)
    if len(values) <= 16:
        rows = list(values)
        for step in range(len(rows)):
            for i in range(step % 2, len(rows) - 1, 2):
                rows[i], rows[i + 1] = np.minimum(rows[i], rows[i + 1]), np.maximum(rows[i], rows[i + 1])
        low, high = np.choose(low_index, rows), np.choose(high_index, rows)
    else:
        ordered = np.sort(values, axis=0)
        low = np.take_along_axis(ordered, low_index[None], axis=0)[0]
        high = np.take_along_axis(ordered, high_index[None], axis=0)[0]
    high = np.where(count > 1, high, low)
    with np.errstate(invalid="ignore", over="ignore"):
        median = (low + high) / np.float32(2)
    return np.where(count > 0, median, np.float32(np.nan)).astype(np.float32)


def rgb_image(frames: np.ndarray, nodata: Sequence[float | None] | None = None) -> np.ndarray:
    """(T, 3, h, w) raw -> (h, w, 3) uint8 true-colour view: median over dates, 2-98 % stretch, nodata black.
    One band (T, 1, h, w) gives grey."""
    if frames.shape[1] == 1:
        frames = np.repeat(frames, 3, axis=1)
    composite, valid = rgb_composite(frames, nodata)
    return (stretch_rgb(composite, valid) * 255).round().astype(np.uint8)


def colorize(class_map: np.ndarray) -> np.ndarray:
    """(H, W) int -> (H, W, 3) uint8 with PALETTE; labels < 0 are black."""
    class_map = np.asarray(class_map).astype(np.int64)
    out = PALETTE[np.mod(np.clip(class_map, 0, None), len(PALETTE))].copy()
    out[class_map < 0] = NODATA_COLOR
    return out


def colorize_values(values: np.ndarray, vmin: float | None = None, vmax: float | None = None
                    ) -> tuple[np.ndarray, float, float]:
    """(H, W) float (NaN nodata) -> (H, W, 3) uint8 on viridis between vmin and vmax (default: the data's range),
    nodata black; returns the colours and the range used."""
    from matplotlib import colormaps

    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    vmin = float(finite.min()) if vmin is None and finite.size else (vmin or 0.0)
    vmax = float(finite.max()) if vmax is None and finite.size else (vmax if vmax is not None else 1.0)
    with np.errstate(invalid="ignore"):
        t = np.nan_to_num(np.clip((values - vmin) / max(vmax - vmin, 1e-9), 0, 1), nan=0.0)
    out = (colormaps[VALUE_COLORMAP](t)[..., :3] * 255).round().astype(np.uint8)
    out[~np.isfinite(values)] = NODATA_COLOR
    return out, vmin, vmax


def overlay(rgb: np.ndarray, colors: np.ndarray, alpha: float = CLASS_ALPHA, mask: np.ndarray | None = None
            ) -> np.ndarray:
    """Blend `colors` over `rgb` (both (H, W, 3) uint8) with opacity `alpha` where `mask` (default everywhere) is
    True."""
    out = rgb.astype(np.float32)
    blend = (1 - alpha) * out + alpha * colors.astype(np.float32)
    if mask is None:
        out = blend
    else:
        out[mask] = blend[mask]
    return out.round().clip(0, 255).astype(np.uint8)


def overlay_prediction(rgb: np.ndarray, prediction: np.ndarray, regression: bool = False,
                       missing: np.ndarray | None = None, alpha: float = CLASS_ALPHA
                       ) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Blend a class map (PALETTE, opacity `alpha`) or a value map (viridis, opacity at least `VALUE_ALPHA`) over
    `rgb` ((H, W, 3) uint8). Classes < 0, NaN values and `missing` pixels show the RGB.

    Returns the (H, W, 3) uint8 image and, for values, the `(vmin, vmax)` range of the colours (else None)."""
    prediction = np.asarray(prediction)
    if regression:
        values = prediction.astype(np.float64)
        if missing is not None:
            values = np.where(missing, np.nan, values)
        colors, vmin, vmax = colorize_values(values)
        return overlay(rgb, colors, alpha=max(alpha, VALUE_ALPHA), mask=np.isfinite(values)), (vmin, vmax)
    classes = (np.where(missing, -1, prediction) if missing is not None else prediction).astype(np.int64)
    return overlay(rgb, colorize(classes), alpha=alpha, mask=classes >= 0), None


def legend_entries(id2label: dict | None, labels: int | Iterable[int], default: str = "class {}"
                   ) -> list[tuple[str, tuple[int, int, int]]]:
    """`(name, rgb)` per class (`labels`: the class ids, or their number), names from `id2label` (int or str
    keys), else `default.format(id)`."""
    id2label = id2label or {}
    ids = range(labels) if isinstance(labels, int) else labels
    entries = []
    for i in ids:
        i = int(i)
        name = id2label.get(i, id2label.get(str(i), default.format(i)))
        entries.append((str(name), tuple(int(c) for c in PALETTE[i % len(PALETTE)])))
    return entries


def save_quicklook(
    path,
    source,
    prediction,
    rgb_bands: Sequence[int],
    task: str = "classification",
    nodata=None,
    id2label: dict | None = None,
    max_size: int = 1024,
    alpha: float = CLASS_ALPHA,
    title: str | None = None,
) -> None:
    """Write a PNG: left the input as RGB (median over dates), right the prediction overlaid on it.

    Args:
        path: the PNG to write (written to a temporary name, then renamed).
        source: a `GeoTiffTimeSeries` or `ArraySource` (anything with `read(..., bands=, out_shape=)` and `nodata`).
        prediction: a `GeoTiffTimeSeries`/`ArraySource` over the written output, or an (H, W) array.
        rgb_bands (`list[int]`): indices (in the source's bands) of red, green and blue; one index gives grey.
        task (`str`): `"classification"` (PALETTE colours) or `"regression"` (viridis).
        nodata: the prediction's nodata value (pixels left showing the RGB).
        id2label (`dict`, *optional*): class names for the legend.
    """
    shape = quicklook_shape(source.height, source.width, max(1, max_size // 2))  # one panel
    frames = source.read(bands=list(rgb_bands), out_shape=shape)
    if hasattr(prediction, "read"):
        predicted = prediction.read(out_shape=shape)[0, 0]
    else:
        predicted = np.asarray(prediction)
        rows = np.linspace(0, predicted.shape[-2] - 1, shape[0]).round().astype(int)
        cols = np.linspace(0, predicted.shape[-1] - 1, shape[1]).round().astype(int)
        predicted = predicted[..., rows[:, None], cols[None, :]]
        if predicted.ndim == 3:
            predicted = predicted[0]
    render_quicklook(path, frames, source.nodata, predicted, task=task, nodata=nodata, id2label=id2label,
                     alpha=alpha, title=title)


def render_quicklook(
    path,
    frames: np.ndarray,
    frames_nodata: Sequence[float | None] | None,
    predicted: np.ndarray,
    task: str = "classification",
    nodata=None,
    id2label: dict | None = None,
    alpha: float = CLASS_ALPHA,
    title: str | None = None,
) -> None:
    """Write the quicklook PNG from decimated views already in memory: a title line, then the input (RGB, median
    over dates), the prediction overlaid on it, and a legend (the classes present, or the value range).

    Args:
        frames (`np.ndarray` (T, 3 or 1, h, w)): raw RGB (or grey) values of every date; NaN or a date's
            `frames_nodata` value where it holds no data.
        predicted (`np.ndarray` (h, w)): classes or values on the same grid; NaN or `nodata` where none.
        Other arguments: see `save_quicklook`.
    """
    from PIL import Image, ImageDraw

    from ..io.geotiff import atomic_output

    image = rgb_image(frames, frames_nodata)
    predicted = np.asarray(predicted).astype(np.float64)
    missing = ~np.isfinite(predicted)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        missing |= predicted == nodata
    regression = task != "classification"
    shown, value_range = overlay_prediction(image, predicted, regression, missing, alpha)
    height, width = image.shape[:2]
    header, gap, legend_width = 40, 8, 180
    canvas = Image.new("RGB", (2 * width + 3 * gap + legend_width, header + height + gap), BACKGROUND)
    canvas.paste(Image.fromarray(image), (gap, header))
    canvas.paste(Image.fromarray(shown), (2 * gap + width, header))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((gap, 4), str(title), fill=(0, 0, 0))
    draw.text((gap, header - 16), "input (RGB, median over dates)", fill=(0, 0, 0))
    draw.text((2 * gap + width, header - 16), f"prediction ({'values' if regression else 'classes'})", fill=(0, 0, 0))
    left = 3 * gap + 2 * width
    if regression:
        if value_range is not None:
            from matplotlib import colormaps

            bar = (colormaps[VALUE_COLORMAP](np.linspace(1, 0, max(16, min(height, 256))))[:, :3] * 255).astype(np.uint8)
            canvas.paste(Image.fromarray(np.repeat(bar[:, None], 16, axis=1)), (left, header))
            draw.text((left + 22, header), f"{value_range[1]:.4g}", fill=(0, 0, 0))
            draw.text((left + 22, header + len(bar) - 12), f"{value_range[0]:.4g}", fill=(0, 0, 0))
    else:
        present = np.unique(predicted[~missing]).astype(int) if (~missing).any() else np.array([], dtype=int)
        for row, (label, color) in enumerate(legend_entries(id2label, present[:20], default="{}")):
            y = header + row * 20
            draw.rectangle([left, y + 2, left + 14, y + 16], fill=tuple(color), outline=(0, 0, 0))
            draw.text((left + 20, y + 3), label[:24], fill=(0, 0, 0))
    with atomic_output(path) as tmp:
        canvas.save(tmp, format="PNG", compress_level=3)
