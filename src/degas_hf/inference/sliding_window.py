"""Large-scene prediction: overlapping windows, batched, blended with a smooth ramp, streamed in row strips.

Memory does not grow with the scene height, and grows only by a few float32 rows with its width: the scene is
walked one row of windows at a time. Each batch of neighbouring windows is one read (`batch_size` windows), done
and normalised by a pool of reader threads (`num_workers`, a bounded number of batches ahead, in pinned memory when
the model is on a GPU). On the model's device the batch is copied once (non-blocking), its windows are cut as views
of that one strip, the forward runs (bf16 autocast by default on CUDA), and the softmax probabilities, weighted by a
ramp that falls to ~0 over the overlap, are added into a strip accumulator of `window_height` rows on the device.
Rows that no later window touches are divided by the summed weights and turned into classes (or kept as values) on
the device, moved to the host once per strip, and handed to a writer thread (e.g. a GeoTIFF sink), so writing
overlaps the next strip's compute. Then the accumulator slides down.

With several devices the window rows are split into contiguous groups, one per device; each device also runs the
window rows above its group that reach into it, so every output row sums exactly the same windows in the same order
as on one device.

Shapes: a source gives raw windows (T, C, h, w) in the model's band order; the model takes `pixel_values`
(B, C, T, h, w) and `valid_mask` (B, T, h, w) and returns `logits` (B, K, h, w).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "PRECISIONS",
    "ArraySink",
    "ArraySource",
    "QuicklookSampler",
    "SlidingWindowPredictor",
    "blend_ramp",
    "default_num_workers",
    "resolve_devices",
    "resolve_precision",
    "split_window_rows",
    "window_starts",
]

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# --------------------------------------------------------------------------------------------------------------------
# Geometry and blending
# --------------------------------------------------------------------------------------------------------------------


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of `window` pixels every `stride` pixels covering `size`; the last one is flush
    with the end (so it may overlap its neighbour more). A single window when `size <= window`."""
    if stride < 1:
        raise ValueError(f"The stride must be >= 1 pixel, found {stride} (overlap too large for the window?)")
    if size <= window:
        return [0]
    starts = list(range(0, size - window, stride))
    starts.append(size - window)
    return starts


def blend_ramp(length: int, overlap: int, ramp_start: bool = True, ramp_end: bool = True, kind: str = "cosine") -> np.ndarray:
    """1-D blending weights of a window: 1 in the middle, falling smoothly towards 0 over `overlap` pixels at each
    end that has a neighbour.

    With `kind="cosine"`, w(i) = 0.5 - 0.5 cos(pi (i + 0.5) / overlap) for i < overlap: two windows overlapping by
    exactly `overlap` pixels have weights summing to 1, and every weight is > 0, so every pixel is predicted.
    `kind="linear"` is the triangular ramp (i + 0.5) / overlap, `kind="none"` a flat window (plain averaging).
    """
    weights = np.ones(length, dtype=np.float64)
    overlap = min(int(overlap), length // 2)
    if overlap > 0 and kind != "none":
        position = (np.arange(overlap) + 0.5) / overlap
        if kind == "cosine":
            ramp = 0.5 - 0.5 * np.cos(np.pi * position)
        elif kind == "linear":
            ramp = position
        else:
            raise ValueError(f"Unknown blend {kind!r}; expected 'cosine', 'linear' or 'none'")
        if ramp_start:
            weights[:overlap] = ramp
        if ramp_end:
            weights[length - overlap :] = np.minimum(weights[length - overlap :], ramp[::-1])
    return weights.astype(np.float32)


def split_window_rows(num_rows: int, num_groups: int) -> list[tuple[int, int]]:
    """Contiguous `[first, end)` ranges of window-row indices, one per group, as even as possible (fewer groups
    than asked when there are fewer rows)."""
    num_groups = max(1, min(int(num_groups), int(num_rows)))
    bounds = [round(g * num_rows / num_groups) for g in range(num_groups + 1)]
    return [(bounds[g], bounds[g + 1]) for g in range(num_groups)]


# --------------------------------------------------------------------------------------------------------------------
# Devices and precision
# --------------------------------------------------------------------------------------------------------------------


def resolve_devices(device=None, devices: int | Sequence | None = None) -> list[torch.device]:
    """The devices to predict on.

    Args:
        device (`str` or `torch.device`, *optional*): the (first) device; defaults to CUDA when torch sees a GPU,
            else the CPU.
        devices (`int` or list of devices, *optional*): how many GPUs (numbered up from `device`'s index), or the
            devices themselves.

    Raises a `ValueError` naming what was asked and what this torch has: a CUDA device on a CPU-only torch or
    without a visible GPU, more GPUs than are visible.
    """
    if devices is not None and not isinstance(devices, int):
        resolved = [torch.device(d) for d in devices]
        if not resolved:
            raise ValueError("Expected at least one device, found an empty list")
        for each in resolved:
            resolve_devices(each)  # each one must exist
        return resolved
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"Unknown device {str(device)!r}: {err}") from None
    count = 1 if devices is None else int(devices)
    if count < 1:
        raise ValueError(f"The number of devices must be >= 1, found {count}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            reason = "this torch was built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(f"CUDA device {str(device)!r} was asked, but {reason} (torch {torch.__version__})")
        visible = torch.cuda.device_count()
        first = device.index or 0
        if first + count > visible:
            raise ValueError(
                f"{count} CUDA device(s) from cuda:{first} were asked, but torch sees {visible} GPU(s)"
            )
        return [torch.device("cuda", first + i) for i in range(count)]
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"MPS device {str(device)!r} was asked, but MPS is not available on this machine")
    if count > 1:
        raise ValueError(
            f"{count} devices were asked, but several devices means several GPUs; the device is {str(device)!r} "
            f"(torch sees {torch.cuda.device_count() if torch.cuda.is_available() else 0} GPU(s))"
        )
    return [device]


def default_num_workers(device) -> int:
    """Reader threads by default: min(8, CPU count) when a GPU runs the model; on the CPU a quarter of the cores
    (at least 1, at most 4), because the model's own threads need them (oversubscribed cores make torch's spinning
    OpenMP threads crawl)."""
    cpus = os.cpu_count() or 1
    return min(8, cpus) if torch.device(device).type != "cpu" else max(1, min(4, cpus // 4))


def _cpu_supports(precision: str) -> bool:
    mkldnn = getattr(torch.ops, "mkldnn", None)
    probe = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}[precision]
    try:
        return bool(getattr(mkldnn, probe)())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str | None, device) -> str:
    """`"fp32"`, `"bf16"` or `"fp16"`: the autocast precision of the forward. `None` means bf16 on a CUDA device that
    supports it, fp32 otherwise. Raises a `ValueError` when the device cannot run the precision asked."""
    device = torch.device(device)
    if precision is None:
        if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    precision = str(precision).lower()
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; expected one of {sorted(PRECISIONS)}")
    if precision == "fp32":
        return precision
    if device.type == "cpu" and not _cpu_supports(precision):
        raise ValueError(
            f"{precision} precision was asked, but this CPU has no {precision} support "
            f"({'AVX512-BF16 or AMX' if precision == 'bf16' else 'AMX-FP16 or AVX512-FP16'}); use fp32"
        )
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"bf16 precision was asked, but {torch.cuda.get_device_name(device)} has no bf16 support; "
                         "use fp16 or fp32")
    return precision


# --------------------------------------------------------------------------------------------------------------------
# Sources and sinks
# --------------------------------------------------------------------------------------------------------------------


class ArraySource:
    """An in-memory scene with the reading interface of `degas_hf.io.GeoTiffTimeSeries`.

    Args:
        array (`np.ndarray` or `torch.Tensor` of shape (T, C, H, W) or (C, H, W)): raw values.
        band_names (`list[str]`, *optional*): names of the C channels.
        nodata (`float` or one per date, *optional*): nodata value(s).
    """

    thread_safe_reads = True

    def __init__(self, array, band_names: Sequence[str] | None = None, nodata=None):
        array = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4:
            raise ValueError(f"Expected a scene (T, C, H, W) or (C, H, W), found shape {array.shape}")
        self.array = array
        self.num_frames, self.num_bands, self.height, self.width = array.shape
        self.band_names = None if band_names is None else [str(b) for b in band_names]
        self.nodata = list(nodata) if isinstance(nodata, (list, tuple)) else [nodata] * self.num_frames

    def read(self, row_off=0, col_off=0, height=None, width=None, bands=None, out_shape=None, resampling=None):
        height = self.height - row_off if height is None else height
        width = self.width - col_off if width is None else width
        bands = slice(None) if bands is None else list(bands)
        window = self.array[:, bands, row_off : row_off + height, col_off : col_off + width]
        if out_shape is not None:  # nearest-neighbour decimation
            rows = np.linspace(0, height - 1, out_shape[0]).round().astype(int)
            cols = np.linspace(0, width - 1, out_shape[1]).round().astype(int)
            window = window[..., rows[:, None], cols[None, :]]
        return window


class ArraySink:
    """Collects finished rows in memory: `result[name]` is (H, W) or (K, H, W)."""

    def __init__(self):
        self.result: dict[str, np.ndarray] = {}

    def allocate(self, layout: dict[str, tuple[int, str, float]], height: int, width: int) -> None:
        for name, (count, dtype, nodata) in layout.items():
            shape = (height, width) if count == 1 else (count, height, width)
            self.result[name] = np.full(shape, nodata, dtype=dtype)

    def write(self, name: str, block: np.ndarray, row_off: int) -> None:
        target = self.result[name]
        target[..., row_off : row_off + block.shape[-2], :] = block


class QuicklookSampler:
    """A decimated view of the scene, filled from what the prediction reads and writes anyway: the RGB bands of
    the input (raw values, every date) and the main output, sampled on a fixed nearest-neighbour grid whose long
    side is at most `max_size`. No second pass over the scene is ever made.

    Each grid pixel is filled exactly once: input samples by the window row and batch that own its scene row and
    column, output samples by the strip that writes its row.

    Attributes: `rgb` (T, n, h, w) float32 raw values (NaN where not filled), `prediction` (h, w) float64.
    """

    def __init__(self, height: int, width: int, num_frames: int, num_rgb: int, max_size: int = 1024):
        from .quicklook import quicklook_shape

        self.shape = quicklook_shape(height, width, max_size)
        self.rows = np.linspace(0, height - 1, self.shape[0]).round().astype(np.int64)
        self.cols = np.linspace(0, width - 1, self.shape[1]).round().astype(np.int64)
        self.rgb = np.full((num_frames, num_rgb, *self.shape), np.nan, dtype=np.float32)
        self.prediction = np.full(self.shape, np.nan, dtype=np.float64)

    def _span(self, samples: np.ndarray, start: int, end: int) -> tuple[int, int]:
        first, last = np.searchsorted(samples, [start, end])
        return int(first), int(last)

    def add_input(self, raw: np.ndarray, bands: Sequence[int], row_off: int, col_off: int, rows: tuple[int, int],
                  cols: tuple[int, int]) -> None:
        """`raw` (T, C, h, w) read at (row_off, col_off); fill the grid pixels in scene rows/cols [start, end) with
        its `bands` (positions among C)."""
        r0, r1 = self._span(self.rows, *rows)
        c0, c1 = self._span(self.cols, *cols)
        if r1 > r0 and c1 > c0:
            picked = raw[:, :, (self.rows[r0:r1] - row_off)[:, None], (self.cols[c0:c1] - col_off)[None, :]]
            self.rgb[:, :, r0:r1, c0:c1] = picked[:, list(bands)]

    def add_prediction(self, block: np.ndarray, top: int) -> None:
        """`block` (rows, W) of the main output starting at scene row `top`."""
        r0, r1 = self._span(self.rows, top, top + block.shape[-2])
        if r1 > r0:
            self.prediction[r0:r1] = block[(self.rows[r0:r1] - top)[:, None], self.cols[None, :]]


# --------------------------------------------------------------------------------------------------------------------
# Threads: ordered parallel reads, and a writer
# --------------------------------------------------------------------------------------------------------------------


def _ordered_map(function: Callable, items: Iterable, workers: int, depth: int, stop: threading.Event) -> Iterator:
    """`function(item)` for each item, computed by `workers` threads at most `depth` items ahead, yielded in order.
    `workers=0` computes in the calling thread."""
    if workers <= 0:
        for item in items:
            if stop.is_set():
                return
            yield function(item)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="degas-read")
    pending: list = []
    iterator = iter(items)
    try:
        exhausted = False
        while True:
            while not exhausted and len(pending) < depth:
                try:
                    pending.append(pool.submit(function, next(iterator)))
                except StopIteration:
                    exhausted = True
            if not pending or stop.is_set():
                return
            future = pending.pop(0)
            yield future.result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


class _StripWriter:
    """Hands finished strips to the sink from one background thread, so that compression and disk writes overlap
    the next strip's compute. A strip copied from a GPU comes with an event to wait on first."""

    def __init__(self, sink, sampler: QuicklookSampler | None, main_output: str, depth: int = 3):
        self.sink = sink
        self.sampler = sampler
        self.main_output = main_output
        self.items: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.discard = False  # set when the prediction failed: queued strips are dropped, not written
        self.thread = threading.Thread(target=self._work, name="degas-write", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        while True:
            item = self.items.get()
            if item is None:
                return
            if self.error is not None or self.discard:
                continue  # drain: the first error is reported
            top, blocks, event = item
            try:
                if event is not None:
                    event.synchronize()
                for name, block in blocks.items():
                    array = block.numpy() if isinstance(block, torch.Tensor) else block
                    self.sink.write(name, array, top)
                    if self.sampler is not None and name == self.main_output:
                        self.sampler.add_prediction(array if array.ndim == 2 else array[0], top)
            except BaseException as err:  # re-raised in the predicting thread
                self.error = err

    def put(self, top: int, blocks: dict, event) -> None:
        if self.error is not None:
            raise self.error
        while True:
            try:
                self.items.put((top, blocks, event), timeout=0.1)
                return
            except queue.Full:
                if self.error is not None or not self.thread.is_alive():
                    raise self.error or RuntimeError("The writer thread stopped")

    def close(self) -> None:
        """Write what is queued, stop the thread, and raise its error if it had one."""
        self.items.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def _one_intraop_thread():
    """Torch ops on one thread inside the block (on the CPU), the previous thread count restored after.

    For the few milliseconds of softmax after a CPU forward: run by torch's OpenMP threads while the reader and writer
    threads hold the cores, each parallel op waits for a descheduled thread (several times slower than one thread on
    2 busy cores). One thread gives the same values (softmax splits independent pixels between threads). Torch's
    thread count is the process's: a thread that starts using torch inside the block starts with one thread."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------------------------
# Normalisation of the windows read
# --------------------------------------------------------------------------------------------------------------------


class _WindowNormalizer:
    """`processor.normalize_array(raw, nodata)` for every batch of one source: the same float32 values and mask, in
    fewer passes over memory for 8- and 16-bit integer inputs (Sentinel-2 L1C/L2A are uint16).

    The processor casts, scales and offsets the whole (T, C, h, w) batch at once (tens of MB, beyond the CPU caches)
    and compares it with each nodata value as float64. Here the same float32 operations run plane by plane (one band
    of one date, which stays in the cache between its passes) and nodata is compared in the input's own dtype (a
    value that dtype cannot hold never matches, as in float64). Other inputs (floats, wider integers) and processors
    with their own `normalize_array` go through the processor.

    With `recycle=N` (CPU devices), up to N float32 batch arrays that the predicting thread hands back (`release`)
    once their batch is blended are reused for later batches: a fresh 40 MB array costs a page fault per 4 KB (the
    kernel zeroes each page) on every batch. The model must not keep its input tensors after its forward.
    """

    def __init__(self, processor, nodata, recycle: int = 0):
        self.processor = processor
        self.nodata = nodata
        self._plans: dict = {}  # (dtype, T, C) -> (scale, offset, nodata codes per date, fill) or None
        self._free: list[np.ndarray] = []
        self._recycle = int(recycle)
        self._lock = threading.Lock()

    def release(self, pixel_values: torch.Tensor | None) -> None:
        """Hand back a batch's (C, T, h, w) array once nothing reads it any more."""
        if pixel_values is None or self._recycle <= 0 or pixel_values.device.type != "cpu":
            return
        array = pixel_values.numpy()
        if array.dtype == np.float32 and array.flags.c_contiguous:
            with self._lock:
                if len(self._free) < self._recycle:
                    self._free.append(array)

    def _empty(self, shape: tuple[int, ...]) -> np.ndarray:
        with self._lock:
            for index, array in enumerate(self._free):
                if array.shape == shape:
                    return self._free.pop(index)
        return np.empty(shape, dtype=np.float32)

    def _plan(self, dtype: np.dtype, num_frames: int, num_channels: int):
        from ..models.st_swin_mae.image_processing_st_swin_mae import STSwinMAEImageProcessor, _max_abs_value

        processor, nodata = self.processor, self.nodata
        per_date = [nodata] * num_frames if nodata is None or np.isscalar(nodata) else list(nodata)
        if (
            getattr(type(processor), "normalize_array", None) is not STSwinMAEImageProcessor.normalize_array
            or dtype.kind not in "ui"
            or dtype.itemsize > 2
            or len(per_date) != num_frames
            or num_channels != len(processor.band_names)
        ):
            return None
        scale, offset = processor._affine_normalization(num_channels)
        with np.errstate(over="ignore", invalid="ignore"):  # the processor's own test of a finite result
            bound = np.float32(_max_abs_value(dtype) * np.abs(scale).max() + np.abs(offset).max())
        if not np.isfinite(bound):
            return None
        info = np.iinfo(dtype)
        codes = []  # per date, the nodata values the dtype can hold (no other value equals an input value)
        for value in per_date:
            held = set()
            for each in (value, processor.nodata_value):
                if each is None or not math.isfinite(each) or not float(each).is_integer():
                    continue
                if info.min <= each <= info.max:
                    held.add(int(each))
            codes.append(sorted(held))
        return scale, offset, codes, np.float32(processor.fill_value)

    def __call__(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`raw` (T, C, h, w) -> float32 `pixel_values` (C, T, h, w) and bool `valid` (T, h, w)."""
        key = (raw.dtype, *raw.shape[:2]) if raw.ndim == 4 else None
        if key is not None and key not in self._plans:
            self._plans[key] = self._plan(*key)
        plan = self._plans.get(key)
        if plan is None:
            return self.processor.normalize_array(raw, self.nodata)
        scale, offset, codes, fill = plan
        num_frames, num_channels = raw.shape[:2]
        values = self._empty((num_channels, num_frames, *raw.shape[2:]))
        invalid = np.zeros((num_frames, *raw.shape[2:]), dtype=bool)
        hit = np.empty(raw.shape[2:], dtype=bool)
        for t in range(num_frames):
            for c in range(num_channels):
                plane, out = raw[t, c], values[c, t]
                # float32(x) * scale + offset, each step rounded to float32 as in the processor; three in-place
                # passes are faster than numpy's buffered cast inside the multiply
                np.copyto(out, plane, casting="unsafe")
                np.multiply(out, scale[c], out=out)
                np.add(out, offset[c], out=out)
                for code in codes[t]:
                    np.equal(plane, code, out=hit)
                    np.logical_or(invalid[t], hit, out=invalid[t])
        if invalid.any():
            np.copyto(values, fill, where=invalid[None])
        return values, np.logical_not(invalid, out=invalid)


# --------------------------------------------------------------------------------------------------------------------
# The predictor
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Job:
    row: int  # index into the row starts
    cols: list[int]  # column offsets of its windows
    last_in_row: bool
    input_cols: tuple[int, int] | None  # scene columns whose quicklook input samples this batch fills
    input_rows: tuple[int, int] | None


@dataclass
class _Batch:
    job: _Job
    pixel_values: torch.Tensor | None  # (C, T, h, span) normalised; None when no window holds data
    valid_mask: torch.Tensor  # (T, h, span)


@dataclass
class _Plan:
    window: tuple[int, int]
    rows: list[int]
    cols: list[int]
    row_weights: list[np.ndarray]
    col_weights: dict[int, np.ndarray]
    height: int
    width: int


class SlidingWindowPredictor:
    """Sliding-window prediction of ST-SwinUNet over scenes of any size.

    Args:
        model (`STSwinUNetForSemanticSegmentation` or any module returning `.logits` (B, K, h, w)):
            The model; put in eval mode here.
        processor (`STSwinMAEImageProcessor`):
            Selects the model's bands, masks nodata and normalises.
        window_size (`int` or `(h, w)`, *optional*, defaults to 256):
            Window in pixels (clamped to the scene).
        overlap (`int`, *optional*, defaults to 64):
            Overlap between neighbouring windows, in pixels; the blend ramps over it.
        batch_size (`int`, *optional*, defaults to 8):
            Windows per forward (and per read).
        blend (`str`, *optional*, defaults to `"cosine"`):
            `"cosine"`, `"linear"` or `"none"` (see `blend_ramp`).
        task (`str`, *optional*):
            `"classification"` (softmax probabilities are blended, the class map is their argmax) or
            `"regression"` (values are blended). Defaults to the model config's `problem_type`.
        probabilities (`bool`, *optional*, defaults to `False`):
            Also output the per-class probabilities (classification only).
        nodata_policy (`str`, *optional*, defaults to `"all"`):
            `"all"`: a pixel is nodata in the output when no date holds data there; `"any"`: when any date lacks it.
        device (`str` or `torch.device`, *optional*):
            Defaults to the model's device.
        devices (`int` or list of devices, *optional*):
            Several GPUs: the number (numbered up from `device`) or the devices. The model is copied to each; the
            scene's window rows are split between them. Any list of devices works (two "cpu" entries run the same
            split on the CPU).
        precision (`str`, *optional*):
            `"fp32"`, `"bf16"` or `"fp16"` autocast for the forward; defaults to bf16 on CUDA, fp32 elsewhere. A
            device that cannot run it raises a `ValueError`. Softmax and blending are always float32.
        num_workers (`int`, *optional*):
            Reader threads (read + normalise); see `default_num_workers`. 0 reads in the predicting thread.
        compile (`bool`, *optional*, defaults to `False`):
            Compile the model (`degas_hf.training.compile.compile_model`) on each device before the first batch.
        progress (`bool`, *optional*, defaults to `True`):
            Show a tqdm progress bar over the windows.
        prefetch (`bool`, *optional*, defaults to `True`):
            `False` is `num_workers=0`.

    Outputs (names used by sinks): `"classes"` (H, W) uint8 (nodata 255) or int16 (nodata -1) when K > 255;
    `"probabilities"` (K, H, W) float32 (nodata NaN); `"values"` (H, W) or (K, H, W) float32 (nodata NaN).
    """

    CLASS_NODATA_UINT8 = 255
    CLASS_NODATA_INT16 = -1
    # How the blend runs on a CPU device: "numpy" (single-threaded passes, the fastest beside reader threads) or
    # "torch" (the GPU code path, run on the CPU by the tests; both give the same float32 results).
    cpu_blend = "numpy"

    def __init__(
        self,
        model,
        processor,
        window_size=256,
        overlap: int = 64,
        batch_size: int = 8,
        blend: str = "cosine",
        task: str | None = None,
        probabilities: bool = False,
        nodata_policy: str = "all",
        device=None,
        progress: bool = True,
        prefetch: bool = True,
        devices: int | Sequence | None = None,
        precision: str | None = None,
        num_workers: int | None = None,
        compile: bool = False,
    ):
        self.model = model.eval()
        self.processor = processor
        self.window_size = (window_size, window_size) if isinstance(window_size, int) else tuple(window_size)
        self.overlap = int(overlap)
        if min(self.window_size) < 1 or self.overlap < 0:
            raise ValueError(f"Expected a positive window and a non-negative overlap, found {self.window_size}, {overlap}")
        if self.overlap >= min(self.window_size):
            raise ValueError(f"The overlap ({self.overlap}) must be smaller than the window {self.window_size}")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, found {batch_size}")
        self.batch_size = int(batch_size)
        blend_ramp(4, 1, kind=blend)  # validates the name
        self.blend = blend
        config = getattr(model, "config", None)
        if task is None:
            task = "regression" if getattr(config, "problem_type", None) == "regression" else "classification"
        if task not in ("classification", "regression"):
            raise ValueError(f"`task` must be 'classification' or 'regression', found {task!r}")
        self.task = task
        self.probabilities = bool(probabilities) and task == "classification"
        if nodata_policy not in ("all", "any"):
            raise ValueError(f"`nodata_policy` must be 'all' or 'any', found {nodata_policy!r}")
        self.nodata_policy = nodata_policy
        if device is None and (devices is None or isinstance(devices, int)):
            try:
                device = next(model.parameters()).device
            except (StopIteration, AttributeError):
                device = torch.device("cpu")
        self.devices = resolve_devices(device, devices)
        self.device = self.devices[0]
        self.precision = resolve_precision(precision, self.device)
        for other in self.devices[1:]:
            resolve_precision(self.precision, other)
        if num_workers is None:
            num_workers = default_num_workers(self.device)
        if num_workers < 0:
            raise ValueError(f"`num_workers` must be >= 0, found {num_workers}")
        self.num_workers = int(num_workers) if prefetch else 0
        self.compile = bool(compile)
        self.progress = progress
        self.model_seconds = 0.0  # time in the model's forward (+ softmax); exact on the CPU, launch time on GPUs
        self._replicas: dict[torch.device, torch.nn.Module] = {}
        self._timer_lock = threading.Lock()
        self._compile_lock = threading.Lock()
        self._compiled_devices: set[torch.device] = set()

    # ------------------------------------------------------------------------------------------------- layout
    def num_outputs(self) -> int:
        config = getattr(self.model, "config", None)
        return int(getattr(config, "num_labels", 0) or 0)

    def output_layout(self, num_labels: int) -> dict[str, tuple[int, str, float]]:
        """`{name: (band count, dtype, nodata)}` of the outputs this predictor writes."""
        if self.task == "regression":
            return {"values": (num_labels, "float32", float("nan"))}
        layout = {
            "classes": (1, "uint8", self.CLASS_NODATA_UINT8)
            if num_labels <= 255
            else (1, "int16", self.CLASS_NODATA_INT16)
        }
        if self.probabilities:
            layout["probabilities"] = (num_labels, "float32", float("nan"))
        return layout

    def _check_frames(self, num_frames: int) -> None:
        config = getattr(self.model, "config", None)
        if config is None:
            return
        if getattr(config, "temporal_aggregation", "mean") != "concat":
            trained = getattr(config, "num_frames", None)
            if isinstance(trained, int) and trained != num_frames:
                warnings.warn(
                    f"The model was trained on {trained} dates (config.num_frames) and the input has {num_frames}: "
                    "its temporal aggregation accepts this, but the prediction can differ much from one made on "
                    f"{trained} dates"
                )
            return
        expected = getattr(config, "num_temporal_tokens", None)
        patch_t = getattr(config, "patch_size", [1])[0]
        if expected is not None and math.ceil(num_frames / patch_t) != expected:
            raise ValueError(
                f"The model was built for {config.num_frames} dates (temporal_aggregation='concat'), the input has "
                f"{num_frames}"
            )

    def _band_indices(self, source, band_names: Sequence[str] | None) -> list[int]:
        names = band_names if band_names is not None else self.processor.usable_band_names(getattr(source, "band_names", None))
        if band_names is not None and len(band_names) != source.num_bands:
            raise ValueError(f"`band_names` names {len(band_names)} bands, but the input has {source.num_bands}")
        return self.processor.band_indices(names, source.num_bands)

    def _plan(self, source) -> _Plan:
        height, width = source.height, source.width
        window = (min(self.window_size[0], height), min(self.window_size[1], width))
        overlap_h = min(self.overlap, window[0] - 1)
        overlap_w = min(self.overlap, window[1] - 1)
        rows = window_starts(height, window[0], window[0] - overlap_h)
        cols = window_starts(width, window[1], window[1] - overlap_w)
        col_weights = {
            c: blend_ramp(window[1], overlap_w, ramp_start=i > 0, ramp_end=i < len(cols) - 1, kind=self.blend)
            for i, c in enumerate(cols)
        }
        row_weights = [
            blend_ramp(window[0], overlap_h, ramp_start=i > 0, ramp_end=i < len(rows) - 1, kind=self.blend)
            for i in range(len(rows))
        ]
        return _Plan(window, rows, cols, row_weights, col_weights, height, width)

    # ------------------------------------------------------------------------------------------------ devices
    def _replica(self, device: torch.device) -> torch.nn.Module:
        """The model on `device`: the model itself on the first device, a copy on the others (compiled when asked)."""
        if device not in self._replicas:
            if device == self.device or len(self.devices) == 1:
                model = self.model
                try:
                    on = next(model.parameters()).device
                except (StopIteration, AttributeError):
                    on = device
                if on != device:
                    model = model.to(device)
            else:
                model = copy.deepcopy(self.model).to(device).eval()
            if self.compile:
                from ..training.compile import compile_model

                model = compile_model(model, mode=None, dynamic=False)
            self._replicas[device] = model
        return self._replicas[device]

    def _autocast(self, device: torch.device):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=PRECISIONS[self.precision])

    # ------------------------------------------------------------------------------------------------ batches
    def _jobs(self, plan: _Plan, first_row: int, end_row: int, owned_from: int, sample_input: bool) -> Iterator[_Job]:
        """Batches of `batch_size` neighbouring windows, row by row, for window rows [first_row, end_row).
        Rows before `owned_from` only complete the blend of the group's first rows (no quicklook samples)."""
        rows, cols = plan.rows, plan.cols
        for row_index in range(first_row, end_row):
            own_rows = None
            if sample_input and row_index >= owned_from:
                row_end = rows[row_index + 1] if row_index + 1 < len(rows) else plan.height
                own_rows = (rows[row_index], row_end)
            for first in range(0, len(cols), self.batch_size):
                batch_cols = cols[first : first + self.batch_size]
                following = first + self.batch_size
                own_cols = (batch_cols[0], cols[following] if following < len(cols) else plan.width)
                yield _Job(row_index, batch_cols, following >= len(cols), own_cols if own_rows else None, own_rows)

    def _load(self, job: _Job, source, plan: _Plan, read_bands, num_model_bands, rgb_positions, sampler, pin,
              normalize: _WindowNormalizer, buffers: threading.local) -> _Batch:
        """Read one batch's span of the scene and normalise it (runs in a reader thread)."""
        win_h, win_w = plan.window
        row = plan.rows[job.row]
        span = job.cols[-1] + win_w - job.cols[0]
        read_dtype = getattr(source, "read_dtype", None)  # a GeoTiffTimeSeries reads into a buffer of this thread
        if read_dtype is not None:
            shape = (source.num_frames, len(read_bands), win_h, span)
            buffer = getattr(buffers, "raw", None)
            if buffer is None or buffer.shape != shape or buffer.dtype != read_dtype:
                buffer = buffers.raw = np.empty(shape, dtype=read_dtype)
            raw = source.read(row, job.cols[0], win_h, span, bands=read_bands, out=buffer)  # (T, C_read, h, span)
        else:
            raw = source.read(row, job.cols[0], win_h, span, bands=read_bands)
        if sampler is not None and job.input_rows is not None:
            sampler.add_input(raw, rgb_positions, row, job.cols[0], job.input_rows, job.input_cols)
        if raw.shape[1] != num_model_bands:
            raw = raw[:, :num_model_bands]
        values, valid = normalize(raw)  # (C, T, h, span), (T, h, span): new arrays, never views of the buffer
        valid_mask = torch.from_numpy(valid)
        pixel_values = torch.from_numpy(values) if valid.any() else None  # None: nothing to predict, skip the model
        if pin:
            valid_mask = valid_mask.pin_memory()
            pixel_values = pixel_values.pin_memory() if pixel_values is not None else None
        return _Batch(job, pixel_values, valid_mask)

    @staticmethod
    def _cut(strip: torch.Tensor, offsets: Sequence[int], width: int) -> torch.Tensor:
        """Windows (B, ..., width) of a strip (..., span) at column `offsets`: views when evenly spaced."""
        if len(offsets) == 1:
            return strip[..., offsets[0] : offsets[0] + width].unsqueeze(0)
        step = offsets[1] - offsets[0]
        if step > 0 and all(b - a == step for a, b in zip(offsets, offsets[1:])) and offsets[0] == 0:
            return strip[..., : offsets[-1] + width].unfold(-1, width, step).movedim(-2, 0)
        return torch.stack([strip[..., o : o + width] for o in offsets])

    @torch.inference_mode()
    def _forward(self, pixel_values: torch.Tensor, valid_mask: torch.Tensor, device=None) -> torch.Tensor:
        """(B, C, T, h, w) -> (B, K, h, w) float32 on `device`: probabilities (classification) or values."""
        device = self.device if device is None else torch.device(device)
        model = self._replica(device)
        start = time.perf_counter()
        try:
            dtype = next(model.parameters()).dtype  # a bf16 / fp16 model takes inputs of its own dtype
        except (StopIteration, AttributeError):
            dtype = torch.float32
        first_compiled_call = self.compile and device not in self._compiled_devices
        with self._compile_lock if first_compiled_call else contextlib.nullcontext(), self._autocast(device):
            # torch.compile compiles on the first call and is not thread-safe: one device thread at a time does it.
            outputs = model(
                pixel_values=pixel_values.to(device, dtype=dtype, non_blocking=True),
                valid_mask=valid_mask.to(device, non_blocking=True),
            )
            self._compiled_devices.add(device)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        with _one_intraop_thread() if device.type == "cpu" else contextlib.nullcontext():
            logits = logits.float()
            if self.task == "classification":
                logits = logits.softmax(dim=1)
        with self._timer_lock:
            self.model_seconds += time.perf_counter() - start
        return logits

    # ---------------------------------------------------------------------------------------------- predict
    def predict(self, source, sink=None, band_names: Sequence[str] | None = None,
                quicklook: QuicklookSampler | None = None, rgb_bands: Sequence[int] | None = None
                ) -> dict[str, np.ndarray] | None:
        """Predict over a whole source, streaming finished rows into `sink`.

        Args:
            source (`GeoTiffTimeSeries`, `ArraySource` or array (T, C, H, W)):
                The scene; its bands are selected by name (`band_names`, else the source's) as the processor says.
            sink (*optional*):
                Has `allocate(layout, height, width)` and `write(name, block, row_off)`; `block` is (rows, W) or
                (K, rows, W). Writes come from one background thread, in row order on one device. Defaults to an
                `ArraySink`, whose arrays are returned.
            band_names (`list[str]`, *optional*):
                Names of the source's bands, overriding its own.
            quicklook (`QuicklookSampler`, *optional*):
                Filled with the input's `rgb_bands` (indices among the source's bands) and the main output.

        Returns:
            The `ArraySink` result (`{"classes": (H, W), ...}`) when no sink was given, else None.
        """
        if not hasattr(source, "read"):
            source = ArraySource(source, band_names=band_names)
        bands = self._band_indices(source, band_names)
        self._check_frames(source.num_frames)
        plan = self._plan(source)
        read_bands, rgb_positions = list(bands), []
        if quicklook is not None:
            for band in rgb_bands if rgb_bands is not None else []:
                if band not in read_bands:
                    read_bands.append(band)
                rgb_positions.append(read_bands.index(band))
            if not rgb_positions:
                quicklook = None

        return_result = sink is None
        sink = ArraySink() if sink is None else sink
        num_labels = self._num_labels(len(bands), source.num_frames)
        layout = self.output_layout(num_labels)
        sink.allocate(layout, plan.height, plan.width)

        from tqdm.auto import tqdm

        groups = split_window_rows(len(plan.rows), len(self.devices))
        for device in self.devices[: len(groups)]:
            self._replica(device)  # before any thread starts: copies are not made concurrently
        workers = self.num_workers if getattr(source, "thread_safe_reads", False) else min(self.num_workers, 1)
        workers_per_device = max(1, workers // len(groups)) if workers else 0
        bar = tqdm(total=len(plan.rows) * len(plan.cols), desc="windows", unit="win", disable=not self.progress)
        writer = _StripWriter(sink, quicklook, next(iter(layout)))
        stop = threading.Event()
        any_data = []

        def run_group(device, first_owned, end_row):
            any_data.append(self._predict_rows(
                device, source, plan, first_owned, end_row, read_bands, len(bands), rgb_positions, quicklook,
                num_labels, layout, writer, workers_per_device, bar, stop,
            ))

        try:
            if len(groups) == 1:
                run_group(self.devices[0], *groups[0])
            else:
                self._run_in_threads(run_group, [(self.devices[g], *groups[g]) for g in range(len(groups))], stop)
        except BaseException:
            stop.set()
            writer.discard = True
            with contextlib.suppress(BaseException):
                writer.close()
            raise
        finally:
            bar.close()
        writer.close()
        if not any(any_data):
            warnings.warn("Every input pixel is nodata: the output is all nodata")
        return sink.result if return_result else None

    @staticmethod
    def _run_in_threads(function, argument_lists, stop: threading.Event) -> None:
        """One thread per device; the first error stops the others and is raised here."""
        errors: list[BaseException] = []

        def target(*arguments):
            try:
                function(*arguments)
            except BaseException as err:
                errors.append(err)
                stop.set()

        threads = [threading.Thread(target=target, args=a, name=f"degas-device-{i}", daemon=True)
                   for i, a in enumerate(argument_lists)]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.2)
        except BaseException:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            raise
        if errors:
            raise errors[0]

    def _predict_rows(self, device, source, plan: _Plan, first_owned: int, end_row: int, read_bands, num_bands,
                      rgb_positions, sampler, num_labels, layout, writer: _StripWriter, workers, bar, stop) -> bool:
        """Predict the window rows [first_owned, end_row) on `device` (after the earlier rows that reach into them)
        and hand the finished scene rows they own to the writer. Returns whether any window held data."""
        rows, (win_h, win_w) = plan.rows, plan.window
        owned_top = 0 if first_owned == 0 else rows[first_owned]
        first = first_owned
        while first > 0 and rows[first - 1] + win_h > owned_top:
            first -= 1  # earlier window rows that reach into the owned rows
        if device.type == "cuda":
            torch.cuda.set_device(device)  # this thread's current device: tensors the model makes land there
        strip_class = _NumpyStrip if device.type == "cpu" and self.cpu_blend == "numpy" else _TorchStrip
        strip = strip_class(num_labels, win_h, plan.width, plan.col_weights, device, self.task, self.probabilities,
                            self.nodata_policy, layout)
        pin = device.type == "cuda"
        any_data = False

        # On the CPU the blend is synchronous: a batch's array is free again once blended, and is recycled.
        recycle = 2 * max(1, workers) + 2 if device.type == "cpu" else 0
        normalize = _WindowNormalizer(self.processor, source.nodata, recycle=recycle)
        buffers = threading.local()  # one raw read buffer per reader thread

        def load(job):
            return self._load(job, source, plan, read_bands, num_bands, rgb_positions, sampler, pin, normalize, buffers)

        jobs = self._jobs(plan, first, end_row, first_owned, sampler is not None)
        top = rows[first]  # scene row held in accumulator row 0 (always the current window row's start)
        batches = _ordered_map(load, jobs, workers, depth=2 * max(1, workers), stop=stop)
        with contextlib.closing(batches):
            for batch in batches:
                job = batch.job
                if batch.pixel_values is not None:
                    any_data = True
                    offsets = [c - job.cols[0] for c in job.cols]
                    pixel_values, valid_mask = strip.windows(batch.pixel_values, batch.valid_mask, offsets, win_w)
                    outputs = self._forward(pixel_values, valid_mask, device)
                    strip.accumulate(job.cols, outputs, valid_mask, plan.row_weights[job.row], win_w)
                    del pixel_values, valid_mask, outputs
                    normalize.release(batch.pixel_values)
                if job.row >= first_owned:
                    bar.update(len(job.cols))
                if job.last_in_row:
                    next_top = rows[job.row + 1] if job.row + 1 < len(rows) else plan.height
                    if next_top > owned_top:  # rows above the group's own are another device's
                        start = max(top, owned_top)
                        blocks, event = strip.finish(start - top, next_top - top)
                        writer.put(start, blocks, event)
                    strip.slide(next_top - top)
                    top = next_top
        return any_data

    def _num_labels(self, num_channels: int, num_frames: int) -> int:
        """Output channels K: the config's `num_labels`, else one forward on a small blank input."""
        config = getattr(self.model, "config", None)
        if config is not None and getattr(config, "num_labels", None):
            return 1 if self.task == "regression" and config.num_labels == 1 else int(config.num_labels)
        blank = torch.zeros(1, num_channels, num_frames, 16, 16)
        return int(self._forward(blank, torch.ones(1, num_frames, 16, 16, dtype=torch.bool)).shape[1])


# --------------------------------------------------------------------------------------------------------------------
# Strip accumulators: the same float32 arithmetic on the device (torch) or on the CPU (numpy)
# --------------------------------------------------------------------------------------------------------------------


class _Strip:
    """The blend of one row of windows: `accumulator` (K, window_h, W) of weighted outputs, `weights` (window_h, W),
    `has_data` (window_h, W). Additions happen window by window in column order, whatever the batch size or device,
    so results do not depend on either. `finish` turns rows into outputs; `slide` moves unfinished rows up."""

    def __init__(self, num_labels, height, width, col_weights, device, task, probabilities, nodata_policy, layout):
        self.device = device
        self.task = task
        self.probabilities = probabilities
        self.nodata_policy = nodata_policy
        self.layout = layout
        self.num_labels = num_labels


def _argmax_first_axis(values: np.ndarray, dtype) -> np.ndarray:
    """`values.argmax(axis=0).astype(dtype)` for (K, rows, W): K - 1 elementwise passes over the rows, where numpy's
    argmax copies the array to put the K values of each pixel side by side and reduces pixel by pixel (twice the
    time for K = 3). Same result: ties go to the first class, and where a NaN occurs the first NaN's class wins."""
    if values.shape[0] > 32:
        return values.argmax(axis=0).astype(dtype)
    best = values[0].copy()
    classes = np.zeros(best.shape, dtype=dtype)
    better = np.empty(best.shape, dtype=bool)
    for k in range(1, values.shape[0]):
        np.greater(values[k], best, out=better)
        np.putmask(classes, better, k)
        np.maximum(best, values[k], out=best)  # NaN propagates: `best` is NaN wherever some class was NaN
    nan = np.isnan(best)
    if nan.any():
        classes[nan] = values[:, nan].argmax(axis=0)
    return classes


class _NumpyStrip(_Strip):
    """On the CPU the blend is numpy's: single-threaded elementwise passes do not fight the reader threads and
    the model for the cores (torch's OpenMP threads spin while they wait, which costs most on a busy machine)."""

    def __init__(self, num_labels, height, width, col_weights, *args):
        super().__init__(num_labels, height, width, col_weights, *args)
        self.accumulator = np.zeros((num_labels, height, width), dtype=np.float32)
        self.weights = np.zeros((height, width), dtype=np.float32)
        self.has_data = np.zeros((height, width), dtype=bool)
        self.col_weights = col_weights

    @staticmethod
    def _cut(strip: np.ndarray, offsets: Sequence[int], width: int) -> np.ndarray:
        if len(offsets) == 1:
            return strip[None, ..., offsets[0] : offsets[0] + width]
        step = offsets[1] - offsets[0]
        if step > 0 and all(b - a == step for a, b in zip(offsets, offsets[1:])):
            # (B, ..., width) views: window b starts b * step columns further along the strip's last axis.
            column = strip.strides[-1]
            return np.lib.stride_tricks.as_strided(
                strip, shape=(len(offsets), *strip.shape[:-1], width), strides=(step * column, *strip.strides),
                writeable=False,
            )
        return np.stack([strip[..., o : o + width] for o in offsets])

    def windows(self, pixel_values: torch.Tensor, valid_mask: torch.Tensor, offsets, width):
        """Windows (B, C, T, h, w) and (B, T, h, w) of one batch's strip: views of it when evenly spaced."""
        self._valid = self._cut(valid_mask.numpy(), offsets, width)
        with warnings.catch_warnings():  # torch warns that the views are read-only; the model never writes its input
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(self._cut(pixel_values.numpy(), offsets, width)), torch.from_numpy(self._valid)

    def accumulate(self, cols, outputs: torch.Tensor, valid_mask, row_weight: np.ndarray, win_w: int) -> None:
        outputs = outputs.numpy()
        valid = self._valid
        present = valid.any(axis=1) if self.nodata_policy == "all" else valid.all(axis=1)  # (B, h, w)
        for index, col in enumerate(cols):
            self.has_data[:, col : col + win_w] |= present[index]
            if not present[index].any():
                continue
            weight = row_weight[:, None] * self.col_weights[col][None, :]
            self.accumulator[:, :, col : col + win_w] += outputs[index] * weight
            self.weights[:, col : col + win_w] += weight

    def finish(self, lo: int, hi: int):
        """Outputs of strip rows [lo, hi): `({name: array}, None)`."""
        done_weights = self.weights[lo:hi]
        mask = self.has_data[lo:hi] & (done_weights > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            blended = self.accumulator[:, lo:hi] / np.where(done_weights > 0, done_weights, 1.0)
        blocks = {}
        if self.task == "regression":
            values = np.where(mask, blended, np.float32(np.nan)).astype(np.float32)
            blocks["values"] = values[0] if self.num_labels == 1 else values
        else:
            _, dtype, nodata = self.layout["classes"]
            classes = _argmax_first_axis(blended, dtype)
            classes[~mask] = nodata
            blocks["classes"] = classes
            if self.probabilities:
                blocks["probabilities"] = np.where(mask, blended, np.float32(np.nan)).astype(np.float32)
        return blocks, None

    def slide(self, count: int) -> None:
        remaining = self.accumulator.shape[1] - count
        self.accumulator[:, :remaining] = self.accumulator[:, count:].copy()
        self.accumulator[:, remaining:] = 0
        self.weights[:remaining] = self.weights[count:].copy()
        self.weights[remaining:] = 0
        self.has_data[:remaining] = self.has_data[count:].copy()
        self.has_data[remaining:] = False


class _TorchStrip(_Strip):
    """On a GPU everything after the copy in stays on the device: windows are views of the copied strip, the
    blend is torch's, and a window without data adds exactly zero (weight times 0) without a device sync. Each
    finished strip goes back in one non-blocking copy, with an event the writer waits on."""

    def __init__(self, num_labels, height, width, col_weights, device, *args):
        super().__init__(num_labels, height, width, col_weights, device, *args)
        self.accumulator = torch.zeros((num_labels, height, width), dtype=torch.float32, device=device)
        self.weights = torch.zeros((height, width), dtype=torch.float32, device=device)
        self.has_data = torch.zeros((height, width), dtype=torch.bool, device=device)
        self.col_weights = {c: torch.from_numpy(w).to(device) for c, w in col_weights.items()}
        self.zero = torch.zeros((), device=device)

    def windows(self, pixel_values: torch.Tensor, valid_mask: torch.Tensor, offsets, width):
        strip = pixel_values.to(self.device, non_blocking=True)
        valid_strip = valid_mask.to(self.device, non_blocking=True)
        cut = SlidingWindowPredictor._cut
        return cut(strip, offsets, width), cut(valid_strip, offsets, width)

    def accumulate(self, cols, outputs: torch.Tensor, valid_mask, row_weight: np.ndarray, win_w: int) -> None:
        row_weight = torch.from_numpy(row_weight).to(self.device, non_blocking=True)
        present = valid_mask.any(dim=1) if self.nodata_policy == "all" else valid_mask.all(dim=1)  # (B, h, w)
        window_has_data = present.flatten(1).any(dim=1)  # (B,)
        for index, col in enumerate(cols):
            self.has_data[:, col : col + win_w] |= present[index]
            weight = (row_weight[:, None] * self.col_weights[col][None, :]) * window_has_data[index]
            self.accumulator[:, :, col : col + win_w] += torch.where(
                window_has_data[index], outputs[index] * weight, self.zero
            )
            self.weights[:, col : col + win_w] += weight

    def finish(self, lo: int, hi: int):
        done_weights = self.weights[lo:hi]
        positive = done_weights > 0
        mask = self.has_data[lo:hi] & positive
        blended = self.accumulator[:, lo:hi] / torch.where(positive, done_weights, torch.ones((), device=self.device))
        nan = torch.full((), float("nan"), device=self.device)
        blocks: dict[str, torch.Tensor] = {}
        if self.task == "regression":
            values = torch.where(mask, blended, nan)
            blocks["values"] = values[0] if self.num_labels == 1 else values
        else:
            _, dtype, nodata = self.layout["classes"]
            classes = blended.argmax(dim=0).to(getattr(torch, dtype))
            # torch.where, not classes[~mask] = nodata: boolean indexing would wait for the device
            blocks["classes"] = torch.where(mask, classes, torch.full((), nodata, dtype=classes.dtype, device=self.device))
            if self.probabilities:
                blocks["probabilities"] = torch.where(mask, blended, nan)
        event = None
        if self.device.type == "cuda":  # one copy back per strip, waited for by the writer, not here
            blocks = {name: block.to("cpu", non_blocking=True) for name, block in blocks.items()}
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
        else:
            blocks = {name: block.cpu() for name, block in blocks.items()}
        return {name: block.numpy() if event is None else block for name, block in blocks.items()}, event

    def slide(self, count: int) -> None:
        remaining = self.accumulator.shape[1] - count
        if remaining > 0:
            self.accumulator[:, :remaining] = self.accumulator[:, count:].clone()
            self.weights[:remaining] = self.weights[count:].clone()
            self.has_data[:remaining] = self.has_data[count:].clone()
        self.accumulator[:, max(remaining, 0) :] = 0
        self.weights[max(remaining, 0) :] = 0
        self.has_data[max(remaining, 0) :] = False
