"""GeoTIFF reading and writing with rasterio: time series of files on one grid, windowed reads, atomic writes.

Reading:
- `GeoTiffTimeSeries(paths)`: a lazy reader over one file per date (or one file holding several dates, bands
  date-major). It checks that CRS, transform and size agree across dates and reads windows as (T, C, h, w).
- `read_time_series(paths)`: the whole series in memory, (T, C, H, W).
- `read_band_files(paths)`: one file per band (e.g. Sentinel-2 JP2 at 10, 20 and 60 m) resampled to one grid.
- `infer_frames_per_file(descriptions)`: how many dates a file stores date-major, from its band descriptions.

Writing:
- `atomic_output(path)`: a temporary name in the target folder, renamed over `path` only when the block succeeds.
  Temporary names carry the writing process id; `remove_stale_temporaries(path)` deletes those that a killed
  run (SIGKILL) left behind.
- `GeoTiffWriter`: a tiled, compressed GeoTIFF with the source CRS/transform and nodata, written window by window;
  optionally a Cloud-Optimized GeoTIFF (overviews) and a colour table with class names.
- `write_geotiff(path, array, ...)`: one call for an in-memory array.

Every bad input raises a `ValueError` that says what was expected and what was found.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from ..models.st_swin_mae.image_processing_st_swin_mae import (
    canonical_band_name,
    date_major_band_names,
    strip_date_suffix,
)

__all__ = [
    "RasterInfo",
    "GeoTiffTimeSeries",
    "GeoTiffWriter",
    "atomic_output",
    "band_name_from_path",
    "check_output_path",
    "infer_frames_per_file",
    "inspect_raster",
    "read_band_files",
    "read_time_series",
    "remove_stale_temporaries",
    "write_geotiff",
]


@dataclass(frozen=True)
class RasterInfo:
    """What a raster file declares: grid, band count, dtype, nodata and band descriptions."""

    path: str
    crs: object
    transform: object
    height: int
    width: int
    count: int
    dtype: str
    nodata: float | None
    descriptions: tuple[str | None, ...]
    block_shape: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)


def _open(path) -> rasterio.DatasetReader:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"Input raster {path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"Input raster {path!r} is a folder, expected a raster file")
    try:
        return rasterio.open(path)
    except RasterioError as err:
        raise ValueError(f"Input {path!r} is not a readable raster: {err}") from err


def inspect_raster(path) -> RasterInfo:
    """Open `path` just long enough to read its metadata; raises ValueError when it is missing or not a raster."""
    with _open(path) as src:
        return RasterInfo(
            path=os.fspath(path),
            crs=src.crs,
            transform=src.transform,
            height=src.height,
            width=src.width,
            count=src.count,
            dtype=src.dtypes[0],
            nodata=src.nodata,
            descriptions=tuple(src.descriptions),
            block_shape=tuple(src.block_shapes[0]),
        )


def _check_same_grid(infos: Sequence[RasterInfo]) -> None:
    reference = infos[0]
    for info in infos[1:]:
        if info.crs != reference.crs:
            raise ValueError(
                f"Dates do not share a CRS: {info.path!r} is {info.crs}, expected {reference.crs} (from {reference.path!r})"
            )
        if info.shape != reference.shape:
            raise ValueError(
                f"Dates do not share a size: {info.path!r} is {info.height}x{info.width} pixels, expected "
                f"{reference.height}x{reference.width} (from {reference.path!r})"
            )
        if not info.transform.almost_equals(reference.transform):
            raise ValueError(
                f"Dates do not share a transform: {info.path!r} has {tuple(info.transform)[:6]}, expected "
                f"{tuple(reference.transform)[:6]} (from {reference.path!r})"
            )
        if info.count != reference.count:
            raise ValueError(
                f"Dates do not share a band count: {info.path!r} has {info.count} bands, expected {reference.count}"
            )


def infer_frames_per_file(descriptions: Sequence[str | None]) -> int:
    """Dates stored in one file, from its band descriptions when they are date-major: the band names of one date
    repeated per date, with or without a date suffix (`B02 ... B12 B02 ...` or `B02_t0 ... B12_t0 B02_t1 ...`).
    1 when a description is missing or the names do not repeat."""
    descriptions = list(descriptions)
    if not descriptions or any(not d for d in descriptions):
        return 1
    names = [canonical_band_name(strip_date_suffix(d)) for d in descriptions]
    frames = names.count(names[0])
    if frames > 1 and len(names) % frames == 0:
        per_date = len(names) // frames
        if all(names[t * per_date : (t + 1) * per_date] == names[:per_date] for t in range(frames)):
            return frames
    return 1


def band_name_from_path(path) -> str | None:
    """The Sentinel-2 style band name in a file name (`..._B8A.jp2` -> `"B8A"`), or None."""
    match = re.search(r"(?:^|[_\-.])(B\d{1,2}A?)(?=[_\-.]|$)", Path(path).stem, flags=re.IGNORECASE)
    return match.group(1).upper() if match else None


class GeoTiffTimeSeries:
    """A lazy, windowed reader over a satellite image time series stored as GeoTIFF (or any GDAL raster).

    Args:
        paths (`str` or `list[str]`):
            One file per date, all on the same grid (CRS, transform, size, band count), or a single file.
        band_names (`list[str]`, *optional*):
            Names of the bands of one date, in file order. Defaults to the band descriptions when all are set.
        frames_per_file (`int`, *optional*, defaults to 1):
            Dates stored in each file, bands date-major (all bands of date 0, then date 1, ...).

    Attributes: `height`, `width`, `num_frames`, `num_bands`, `band_names` (or None), `nodata` (one per date),
    `crs`, `transform`, `dtype`, `profile` (of the first file), `read_dtype` (what `read` returns: the dates'
    dtypes promoted).

    `read` may be called from several threads at once: each thread reads through its own GDAL handles (a GDAL
    dataset must not be used by two threads at a time); `close` closes them all.
    """

    thread_safe_reads = True

    def __init__(self, paths, band_names: Sequence[str] | None = None, frames_per_file: int = 1):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths = [os.fspath(p) for p in paths]
        if not paths:
            raise ValueError("Expected at least one input raster, found an empty list")
        if frames_per_file < 1:
            raise ValueError(f"`frames_per_file` must be >= 1, found {frames_per_file}")
        self.infos = [inspect_raster(p) for p in paths]
        _check_same_grid(self.infos)
        first = self.infos[0]
        if first.count % frames_per_file:
            raise ValueError(
                f"{first.path!r}: {first.count} bands cannot be split into frames_per_file={frames_per_file} dates"
            )
        for info in self.infos:
            if np.dtype(info.dtype).kind not in "uif":
                raise ValueError(f"{info.path!r}: expected integer or float pixels, found dtype {info.dtype}")
        self.paths = paths
        self.frames_per_file = frames_per_file
        self.num_bands = first.count // frames_per_file
        self.num_frames = len(paths) * frames_per_file
        self.height, self.width = first.shape
        self.crs, self.transform, self.dtype = first.crs, first.transform, first.dtype
        self.read_dtype = np.result_type(*[info.dtype for info in self.infos])  # dates may differ: as np.stack
        self.nodata = [info.nodata for info in self.infos for _ in range(frames_per_file)]
        if band_names is not None:
            band_names = [str(b) for b in band_names]
            if len(band_names) != self.num_bands:
                raise ValueError(
                    f"`band_names` names {len(band_names)} bands {band_names}, but each date of {first.path!r} has "
                    f"{self.num_bands} bands"
                )
        else:
            band_names = date_major_band_names(first.descriptions, frames_per_file)
        self.band_names = band_names
        self._local = threading.local()  # per-thread GDAL handles
        self._all_handles: list[tuple[threading.Thread, list[rasterio.DatasetReader]]] = []
        self._handles_lock = threading.Lock()
        with _open(paths[0]) as src:
            self.profile = dict(src.profile)

    # -------------------------------------------------------------------------------------------- context
    def open(self) -> "GeoTiffTimeSeries":
        self._thread_datasets()
        return self

    def _thread_datasets(self) -> list[rasterio.DatasetReader]:
        """This thread's handles on every file, opened on first use; those of threads that have ended are closed
        then (each predict call reads through new threads)."""
        datasets = getattr(self._local, "datasets", None)
        if datasets is None or datasets[0].closed:
            datasets = [_open(p) for p in self.paths]
            self._local.datasets = datasets
            with self._handles_lock:
                ended = [handles for thread, handles in self._all_handles if not thread.is_alive()]
                self._all_handles = [(t, h) for t, h in self._all_handles if t.is_alive()]
                self._all_handles.append((threading.current_thread(), datasets))
            for handles in ended:
                for dataset in handles:
                    dataset.close()
        return datasets

    def close(self) -> None:
        with self._handles_lock:
            handles, self._all_handles = self._all_handles, []
        for _, datasets in handles:
            for dataset in datasets:
                dataset.close()
        self._local = threading.local()

    def __enter__(self) -> "GeoTiffTimeSeries":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:  # GDAL handles, locks and thread-locals stay behind
        state = dict(self.__dict__)
        for key in ("_local", "_all_handles", "_handles_lock"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()
        self._all_handles = []
        self._handles_lock = threading.Lock()

    # ---------------------------------------------------------------------------------------------- reads
    def _indexes(self, bands: Sequence[int] | None, frame_in_file: int) -> list[int]:
        bands = range(self.num_bands) if bands is None else bands
        return [frame_in_file * self.num_bands + b + 1 for b in bands]

    def read(
        self,
        row_off: int = 0,
        col_off: int = 0,
        height: int | None = None,
        width: int | None = None,
        bands: Sequence[int] | None = None,
        out_shape: tuple[int, int] | None = None,
        resampling: Resampling = Resampling.nearest,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Read a window of every date: (T, C, height, width) in the file dtype (`read_dtype`: the dtypes of all
        dates promoted, when they differ).

        Args:
            row_off, col_off, height, width (`int`):
                The window in pixels; defaults to the whole raster. It must lie inside the raster.
            bands (`list[int]`, *optional*):
                0-based band indices within one date (e.g. the model's bands); defaults to all bands.
            out_shape (`(h, w)`, *optional*):
                Decimated read (uses overviews when the file has them), e.g. for quicklooks.
            out (`np.ndarray`, *optional*):
                A C-contiguous (T, C, h, w) array of dtype `read_dtype` to read into (e.g. a buffer reused from read to
                read); it is returned.

        Each date is read by GDAL straight into its slice of the result (no per-date arrays stacked afterwards).
        """
        height = self.height - row_off if height is None else height
        width = self.width - col_off if width is None else width
        if row_off < 0 or col_off < 0 or row_off + height > self.height or col_off + width > self.width:
            raise ValueError(
                f"Window rows {row_off}:{row_off + height}, cols {col_off}:{col_off + width} is outside the raster "
                f"of {self.height}x{self.width} pixels"
            )
        window = Window(col_off, row_off, width, height)
        num_bands = self.num_bands if bands is None else len(bands)
        shape = (self.num_frames, num_bands, *(out_shape or (height, width)))
        if out is None:
            out = np.empty(shape, dtype=self.read_dtype)
        elif out.shape != shape or out.dtype != self.read_dtype or not out.flags.c_contiguous:
            raise ValueError(
                f"`out` must be a C-contiguous {self.read_dtype} array of shape {shape}, found "
                f"{'a non-contiguous ' if not out.flags.c_contiguous else ''}{out.dtype} array of shape {out.shape}"
            )
        frame_index = 0
        for dataset in self._thread_datasets():
            for frame in range(self.frames_per_file):
                indexes = self._indexes(bands, frame)
                kwargs = {"window": window, "out": out[frame_index]}
                if out_shape is not None:
                    kwargs["resampling"] = resampling
                try:
                    dataset.read(indexes, **kwargs)
                except RasterioError as err:
                    raise ValueError(f"Could not read {dataset.name!r} (corrupt file?): {err}") from err
                frame_index += 1
        return out

    def read_all(self, bands: Sequence[int] | None = None) -> np.ndarray:
        """The whole series in memory: (T, C, H, W). Prefer windowed `read` for large scenes."""
        return self.read(bands=bands)


def read_time_series(
    paths, band_names: Sequence[str] | None = None, frames_per_file: int = 1
) -> tuple[np.ndarray, GeoTiffTimeSeries]:
    """Read a whole time series: returns the (T, C, H, W) array and the (closed) reader with its metadata."""
    with GeoTiffTimeSeries(paths, band_names=band_names, frames_per_file=frames_per_file) as series:
        return series.read_all(), series


def read_band_files(
    paths: Sequence,
    band_names: Sequence[str] | None = None,
    reference: int | None = None,
    resampling: Resampling = Resampling.bilinear,
) -> tuple[np.ndarray, dict, list[str]]:
    """Read one file per band (e.g. Sentinel-2 JP2 at 10, 20 and 60 m) onto one common grid.

    Args:
        paths (`list`):
            One single-band raster per band, same CRS and footprint, any resolution.
        band_names (`list[str]`, *optional*):
            Defaults to the band name in each file name (`..._B8A.jp2`).
        reference (`int`, *optional*):
            Index of the file whose grid is used; defaults to the finest resolution.
        resampling (`Resampling`, *optional*, defaults to bilinear):
            How coarser bands are brought to the reference grid.

    Returns:
        `(array (C, H, W), profile, band_names)`, the profile being the reference grid's.
    """
    if not paths:
        raise ValueError("Expected at least one band file, found an empty list")
    infos = [inspect_raster(p) for p in paths]
    for info in infos:
        if info.count != 1:
            raise ValueError(f"{info.path!r}: expected a single-band file per band, found {info.count} bands")
        if info.crs != infos[0].crs:
            raise ValueError(f"Band files do not share a CRS: {info.path!r} is {info.crs}, expected {infos[0].crs}")
    if band_names is None:
        band_names = [band_name_from_path(p) for p in paths]
        unnamed = [os.fspath(p) for p, n in zip(paths, band_names) if n is None]
        if unnamed:
            raise ValueError(f"Could not find a band name (like _B04) in {unnamed}; pass `band_names=`")
    elif len(band_names) != len(paths):
        raise ValueError(f"`band_names` has {len(band_names)} names for {len(paths)} files")
    if reference is None:
        reference = int(np.argmin([abs(info.transform.a) for info in infos]))
    ref = infos[reference]
    bounds = rasterio.transform.array_bounds(ref.height, ref.width, ref.transform)
    out = np.empty((len(paths), ref.height, ref.width), dtype=np.result_type(*[info.dtype for info in infos]))
    for i, path in enumerate(paths):
        with _open(path) as src:
            window = rasterio.windows.from_bounds(*bounds, transform=src.transform)
            try:
                out[i] = src.read(
                    1, window=window, out_shape=(ref.height, ref.width), resampling=resampling, boundless=False
                )
            except RasterioError as err:
                raise ValueError(f"Could not read {os.fspath(path)!r} (corrupt file?): {err}") from err
    with _open(paths[reference]) as src:
        profile = dict(src.profile)
    profile.update(count=len(paths), dtype=out.dtype.name, driver="GTiff")
    return out, profile, [str(b) for b in band_names]


# ------------------------------------------------------------------------------------------------------ writing


def check_output_path(path) -> Path:
    """Fail early (before any computation) when the output folder is missing or the path is a folder."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"Output path {str(path)!r} is a folder, expected a file name")
    if not path.parent.is_dir():
        raise ValueError(f"Output folder {str(path.parent)!r} does not exist (for output {str(path)!r})")
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"Output folder {str(path.parent)!r} is not writable")
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temporaries(path) -> list[Path]:
    """Delete the temporary files of `path` (`.OUT.tif.<pid>.<random>.tmp.tif` and GDAL's `.aux.xml` beside them)
    whose writing process is gone: what a run killed by SIGKILL (or a power cut) leaves behind. Temporaries of a
    live process (this one, or another run writing the same output right now) are kept. Returns what was deleted."""
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    # mkstemp's random part is 8 characters of [a-z0-9_]: anything else is another output's temporary.
    pattern = re.compile(
        re.escape(_temporary_prefix(path)) + r"(?:(\d+)\.)?[a-z0-9_]{8}\.tmp" + re.escape(path.suffix)
        + r"(?:\.aux\.xml)?$"
    )
    for candidate in path.parent.iterdir():
        match = pattern.match(candidate.name)
        if match is None or not candidate.is_file():
            continue
        pid = match.group(1)
        if pid is not None and (int(pid) == os.getpid() or _process_alive(int(pid))):
            continue
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _temporary_path(path: Path) -> Path:
    """A new empty file next to `path`, named `.NAME.<pid>.<random>.tmp<suffix>`."""
    handle, tmp_name = tempfile.mkstemp(
        prefix=f"{_temporary_prefix(path)}{os.getpid()}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(handle)
    return Path(tmp_name)


def _remove_temporary(tmp: Path) -> None:
    tmp.unlink(missing_ok=True)
    Path(str(tmp) + ".aux.xml").unlink(missing_ok=True)  # GDAL may leave one beside the file


@contextlib.contextmanager
def atomic_output(path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` when the block succeeds, delete it otherwise
    (also on KeyboardInterrupt and SystemExit, e.g. from a SIGTERM handler).

    The temporary name keeps the suffix (`.OUT.tif.<pid>.<random>.tmp.tif`) so that drivers that guess the format
    from the name still do; the process id lets `remove_stale_temporaries` tell a killed run's leftovers from a
    live run's files.
    """
    path = check_output_path(path)
    tmp = _temporary_path(path)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        _remove_temporary(tmp)
        raise


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """`[start, stop)` of each run of True in a 1-D boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], mask, [False]]).astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def _block_size(size: int, preferred: int) -> int:
    return preferred if size >= preferred else max(16, 16 * (size // 16)) if size >= 16 else 16


class GeoTiffWriter:
    """A tiled, compressed GeoTIFF written window by window and renamed into place when complete.

    Use it as a context manager; if the block raises, no file is left at `path`.

    Args:
        path: the output file (its folder must exist).
        height, width, count (`int`): size and band count.
        dtype (`str`): pixel type, e.g. "uint8", "float32".
        crs, transform: the georeference (from the source).
        nodata (`float`, *optional*): nodata value written into the file.
        band_names (`list[str]`, *optional*): band descriptions.
        tags (`dict`, *optional*): dataset metadata tags; band_tags (`list[dict]`, *optional*): tags per band.
        block_size (`int`, *optional*, defaults to 256): internal tile size.
        compress (`str`, *optional*, defaults to "deflate").
        cog (`bool`, *optional*, defaults to `False`): write a Cloud-Optimized GeoTIFF (GDAL's COG driver: tiles,
            overviews, header first). The tiled GeoTIFF is written first, then copied into the COG layout.
        colormap (`dict[int, (r, g, b)]`, *optional*): a colour table for band 1 (uint8/uint16 class maps), so GIS
            software shows classes in these colours right away.
        class_names (`dict[int, str]`, *optional*): class names, stored as the `CLASS_NAMES` tag (JSON,
            `{"0": "land", ...}`) and as band-1 tags `CLASS_<i>=<name>`.
        overview_resampling (`str`, *optional*): resampling of COG overviews; "nearest" for integer pixels (class
            maps), "average" for floats by default.
    """

    def __init__(
        self,
        path,
        height: int,
        width: int,
        count: int,
        dtype: str,
        crs=None,
        transform=None,
        nodata: float | None = None,
        band_names: Sequence[str] | None = None,
        block_size: int = 256,
        compress: str = "deflate",
        tags: dict | None = None,
        band_tags: Sequence[dict] | None = None,
        cog: bool = False,
        colormap: dict | None = None,
        class_names: dict | None = None,
        overview_resampling: str | None = None,
    ):
        self.path = check_output_path(path)
        self.profile = {
            "driver": "GTiff",
            "height": int(height),
            "width": int(width),
            "count": int(count),
            "dtype": np.dtype(dtype).name,
            "crs": crs,
            "transform": transform,
            "nodata": nodata,
            "tiled": True,
            "blockxsize": _block_size(int(width), block_size),
            "blockysize": _block_size(int(height), block_size),
            "compress": compress,
            "BIGTIFF": "IF_SAFER",
        }
        if transform is None:
            del self.profile["transform"]  # an ungeoreferenced raster (arrays without a source)
        if np.dtype(dtype).kind == "f" and compress in ("deflate", "lzw", "zstd"):
            self.profile["predictor"] = 3
        self.band_names = list(band_names) if band_names is not None else None
        self.tags = dict(tags or {})
        self.band_tags = [dict(b or {}) for b in band_tags or []]
        if class_names:
            names = {int(k): str(v) for k, v in class_names.items()}
            self.tags["CLASS_NAMES"] = json.dumps({str(k): v for k, v in sorted(names.items())})
            self.band_tags = self.band_tags or [{}]
            self.band_tags[0].update({f"CLASS_{k}": v for k, v in sorted(names.items())})
        if colormap is not None and np.dtype(dtype).name not in ("uint8", "uint16"):
            raise ValueError(f"A colour table needs uint8 or uint16 pixels, found {np.dtype(dtype).name}")
        self.colormap = {int(k): tuple(int(c) for c in v) for k, v in (colormap or {}).items()}
        self.cog = bool(cog)
        if overview_resampling is None:
            overview_resampling = "average" if np.dtype(dtype).kind == "f" else "nearest"
        self.overview_resampling = overview_resampling
        self._context = None
        self._dataset = None
        self._work: Path | None = None  # the tiled GeoTIFF written before the COG copy
        self._pending_rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # write_rows: tile row -> (rows, filled)

    def __enter__(self) -> "GeoTiffWriter":
        self._context = atomic_output(self.path)
        tmp = self._context.__enter__()
        try:
            if self.cog:
                self._work = _temporary_path(self.path)
                self._final = tmp
                tmp = self._work
            self._dataset = rasterio.open(tmp, "w", **self.profile)
            if self.colormap:
                self._dataset.write_colormap(1, self.colormap)
            if self.band_names:
                for index, name in enumerate(self.band_names, start=1):
                    self._dataset.set_band_description(index, str(name))
            if self.tags:
                self._dataset.update_tags(**{str(k): str(v) for k, v in self.tags.items()})
            for index, band in enumerate(self.band_tags, start=1):
                if band:
                    self._dataset.update_tags(index, **{str(k): str(v) for k, v in band.items()})
        except BaseException:
            if self._dataset is not None:
                with contextlib.suppress(Exception):
                    self._dataset.close()
            if self._work is not None:
                _remove_temporary(self._work)
            self._context.__exit__(*sys.exc_info())
            raise
        return self

    def write(self, array: np.ndarray, row_off: int = 0, col_off: int = 0) -> None:
        """Write (count, h, w) (or (h, w) for one band) at the given pixel offset."""
        if array.ndim == 2:
            array = array[None]
        if array.shape[0] != self.profile["count"]:
            raise ValueError(f"Expected {self.profile['count']} bands to write, found {array.shape[0]}")
        window = Window(col_off, row_off, array.shape[2], array.shape[1])
        self._dataset.write(array.astype(self.profile["dtype"], copy=False), window=window)

    def write_rows(self, array: np.ndarray, row_off: int) -> None:
        """Write full-width rows (count, h, width) (or (h, width)) starting at `row_off`, in any order, handing GDAL
        only whole rows of tiles.

        Rows that do not complete a row of tiles wait here until the rows they share tiles with arrive (or until the
        writer closes). Written in arbitrary strips (e.g. 224 rows into 256-row tiles), GDAL would compress a tile
        when a strip ends inside it, and again, after reading it back, when the next strip completes it, as soon as
        its block cache needs the room (which a large read fills).
        """
        if array.ndim == 2:
            array = array[None]
        count, rows, width = array.shape
        if count != self.profile["count"] or width != self.profile["width"]:
            raise ValueError(
                f"Expected rows of {self.profile['count']} band(s) x {self.profile['width']} columns to write, found "
                f"{count} x {width}"
            )
        height, tile = self.profile["height"], self.profile["blockysize"]
        if row_off < 0 or row_off + rows > height:
            raise ValueError(f"Rows {row_off}:{row_off + rows} are outside the raster of {height} rows")
        position, end = row_off, row_off + rows
        while position < end:
            tile_top = position // tile * tile
            tile_end = min(tile_top + tile, height)
            stop = min(end, tile_end)
            part = array[:, position - row_off : stop - row_off]
            if position == tile_top and stop == tile_end and tile_top not in self._pending_rows:
                self.write(part, row_off=tile_top)  # a whole row of tiles: straight through
            else:
                if tile_top not in self._pending_rows:
                    self._pending_rows[tile_top] = (
                        np.zeros((count, tile_end - tile_top, width), dtype=self.profile["dtype"]),
                        np.zeros(tile_end - tile_top, dtype=bool),
                    )
                pending, filled = self._pending_rows[tile_top]
                pending[:, position - tile_top : stop - tile_top] = part
                filled[position - tile_top : stop - tile_top] = True
                if filled.all():
                    del self._pending_rows[tile_top]
                    self.write(pending, row_off=tile_top)
            position = stop

    def _flush_pending_rows(self) -> None:
        """Rows of tiles that never got all their rows: written as they are (the missing rows stay unwritten)."""
        pending, self._pending_rows = self._pending_rows, {}
        for tile_top, (rows, filled) in sorted(pending.items()):
            for start, stop in _runs(filled):
                self.write(rows[:, start:stop], row_off=tile_top + start)

    def _copy_to_cog(self) -> None:
        from rasterio.shutil import copy as raster_copy

        options = {
            "COMPRESS": (self.profile.get("compress") or "NONE").upper(),
            "BLOCKSIZE": self.profile["blockxsize"],
            "OVERVIEW_RESAMPLING": self.overview_resampling.upper(),
            "BIGTIFF": "IF_SAFER",
        }
        if self.profile.get("predictor"):
            options["PREDICTOR"] = "YES"
        try:
            raster_copy(self._work, self._final, driver="COG", **options)
        except RasterioError as err:
            raise ValueError(f"Could not write the Cloud-Optimized GeoTIFF {str(self.path)!r}: {err}") from err

    def __exit__(self, exc_type, exc, tb) -> bool:
        close_error = None
        try:
            try:
                if exc_type is None:
                    self._flush_pending_rows()
            finally:
                self._pending_rows = {}
                self._dataset.close()
            if exc_type is None and self.cog:
                self._copy_to_cog()
        except BaseException as err:  # a failed flush must not leave a half-written file behind
            close_error = err
        finally:
            if self._work is not None:
                _remove_temporary(self._work)
        if exc_type is None and close_error is not None:
            self._context.__exit__(type(close_error), close_error, close_error.__traceback__)
            raise close_error
        return bool(self._context.__exit__(exc_type, exc, tb))


def write_geotiff(
    path,
    array: np.ndarray,
    crs=None,
    transform=None,
    nodata: float | None = None,
    band_names: Sequence[str] | None = None,
    block_size: int = 256,
    compress: str = "deflate",
    tags: dict | None = None,
    band_tags: Sequence[dict] | None = None,
    cog: bool = False,
    colormap: dict | None = None,
    class_names: dict | None = None,
) -> Path:
    """Write an in-memory (count, H, W) or (H, W) array as a tiled, compressed GeoTIFF (or COG), atomically."""
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"Expected an array (count, H, W) or (H, W) to write, found shape {array.shape}")
    with GeoTiffWriter(
        path, array.shape[1], array.shape[2], array.shape[0], array.dtype.name, crs=crs, transform=transform,
        nodata=nodata, band_names=band_names, block_size=block_size, compress=compress, tags=tags,
        band_tags=band_tags, cog=cog, colormap=colormap, class_names=class_names,
    ) as writer:
        writer.write(array)
    return Path(path)
