"""SSL4EO-S12 readers for pretraining: the raw GeoTIFF release (v1.0) and, behind the `zarr` extra, the v1.1
zarr-chunk files.

Raw layout (zhu-xlab/SSL4EO-S12 downloader; torchgeo)::

    ROOT/{s2a|s2c|s1}/<7-digit location id>/<GEE system:index of each season>/<BAND>.tif

- s2a = S2 L2A (12 bands), s2c = S2 L1C (13 bands), s1 = S1 GRD (VV, VH); one single-band GeoTIFF per band at
  native resolution (10 m: 264 px, 20 m: 132 px, 60 m: 44 px). Every band is resampled (bilinear) onto the
  grid of the finest band, as the reference loader does.
- 4 season folders per location, named by GEE product id (`20210322T...` for S2, `S1A_IW_GRDH_1SDV_2021...`
  for S1). `os.listdir` order is arbitrary; seasons are sorted by the date in the folder name.
- Band files are named `B1.tif` .. `B12.tif`, `B8A.tif` (S2) or `VV.tif`/`VH.tif`; names are matched case and
  zero-padding insensitively, so `band_names=("B02", ...)` finds `B2.tif`.
- S2 digital numbers (reflectance x 10000, uint16): 0 is nodata. S1 float32 dB: NaN is nodata.

Missing bands or seasons, empty folders and unreadable files raise :class:`DataError` naming the path; with
`validate` the whole tree is checked when the dataset is built, before any training step.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from degas_hf.data.timeseries_folder import (
    DataError,
    RasterSampleDataset,
    _open,
    _to_float_with_nan,
    canonical_band_name,
    parse_date,
)

__all__ = ["SSL4EOS12Dataset", "SSL4EOS12ZarrDataset", "find_zarr_files", "BAND_RESOLUTION_M", "SSL4EO_BANDS", "SSL4EO_ZARR_DN_OFFSET", "DataError"]

SSL4EO_BANDS = {
    "s2c": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"),
    "s2a": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
    "s1": ("VV", "VH"),
}
MODALITY_ALIASES = {"s2a": "s2a", "l2a": "s2a", "s2l2a": "s2a", "s2c": "s2c", "l1c": "s2c", "s2l1c": "s2c",
                    "s1": "s1", "s1grd": "s1", "grd": "s1"}
DEFAULT_BANDS = {"s2a": ("B02", "B03", "B04", "B8A", "B11", "B12"), "s2c": ("B02", "B03", "B04", "B8A", "B11", "B12"),
                 "s1": ("VV", "VH")}
# v1.1 zarr-chunk files store S2 with +1000 added to the digital numbers (datasets.md, zarr_dataset.py);
# the WebDataset release removed it.
SSL4EO_ZARR_DN_OFFSET = 1000
# Native ground sampling distance of each band (Sentinel-2 MSI; S1 GRD is delivered at 10 m).
BAND_RESOLUTION_M = {"B01": 60, "B09": 60, "B10": 60, "B05": 20, "B06": 20, "B07": 20, "B8A": 20, "B11": 20, "B12": 20}


def _modality(name: str) -> str:
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in MODALITY_ALIASES:
        raise DataError(f"unknown SSL4EO-S12 modality {name!r}; expected s2a (L2A), s2c (L1C) or s1")
    return MODALITY_ALIASES[key]


class SSL4EOS12Dataset(RasterSampleDataset):
    """SSL4EO-S12 raw GeoTIFFs as pretraining samples: `pixel_values (C, T=4, crop, crop)`, `valid_mask`.

    Args:
        root: the release root (holding `s2a/`, `s2c/`, `s1/`) or a modality folder itself.
        modality: "s2a" (L2A), "s2c" (L1C) or "s1" (aliases: l2a, l1c, s1grd).
        band_names: bands to return, in this order (default: the model's 6 bands, or VV, VH for S1).
        num_seasons: seasons every location must have (4). All of them are returned, sorted by date.
        crop_size: random (or centred, `random_crop=False`) square crop; 224 for the 264 px patches.
        processor: an `STSwinMAEImageProcessor` built for the same modality (e.g. its SSL4EO-S12 L2A preset).
        validate: "full" checks every location (season count, band files present and non-empty, headers
            readable) at construction; "quick" only the first 100 locations; "auto" = full up to 2,000
            locations, quick above; "none" checks at read time only.
        location_ids: restrict to these location folders (e.g. a split list).
        nodata: nodata value of the files (default 0 for S2, NaN for S1).
        grid_size: side of the sample grid in pixels; default: the 10 m grid (264 px), whichever bands are selected.
        output: "normalized" (`pixel_values`, `valid_mask`) or "raw" (`raw_values` in the files' dtype, for
            :class:`~degas_hf.data.timeseries_folder.DeviceNormalizer`).
    """

    supports_raw = True

    def __init__(self, root: str | os.PathLike, modality: str = "s2a", band_names: Sequence[str] | None = None,
                 num_seasons: int = 4, crop_size: int | None = 224, processor=None, random_crop: bool = True,
                 seed: int = 0, validate: str = "auto", location_ids: Sequence[str] | None = None,
                 nodata: float | None = None, samples_per_location: int = 1, grid_size: int | None = None,
                 output: str = "normalized"):
        self.modality = _modality(modality)
        band_names = DEFAULT_BANDS[self.modality] if band_names is None else band_names
        super().__init__(band_names, crop_size, processor, random_crop, seed, samples_per_location, output=output)
        if grid_size is not None and (isinstance(grid_size, bool) or int(grid_size) < 1):
            raise DataError(f"grid_size must be a positive number of pixels, got {grid_size!r}")
        self.grid_size = None if grid_size is None else (int(grid_size), int(grid_size))
        unknown = [b for b in self.band_names if b not in SSL4EO_BANDS[self.modality]]
        if unknown:
            raise DataError(f"band(s) {unknown} do not exist in SSL4EO-S12 {self.modality} "
                            f"(bands: {list(SSL4EO_BANDS[self.modality])})")
        self.num_seasons = int(num_seasons)
        self.nodata = (np.nan if self.modality == "s1" else 0) if nodata is None else nodata
        self.raw_nodata = None if isinstance(self.nodata, float) and np.isnan(self.nodata) else self.nodata
        root = Path(root)
        folder = root / self.modality if (root / self.modality).is_dir() else root
        if not folder.is_dir():
            raise DataError(f"SSL4EO-S12 folder {root} does not exist")
        self.folder = folder
        if location_ids is None:
            with os.scandir(folder) as it:
                locations = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
        else:
            locations = [str(x).zfill(7) if str(x).isdigit() else str(x) for x in location_ids]
        if not locations:
            raise DataError(f"SSL4EO-S12 folder {folder} holds no location folders "
                            f"(expected {folder}/<7-digit id>/<season>/<BAND>.tif)")
        self.locations = locations
        self._cache: dict[int, list[dict[str, str]]] = {}
        if validate not in ("auto", "full", "quick", "none"):
            raise DataError(f"validate must be auto, full, quick or none, got {validate!r}")
        if validate == "auto":
            validate = "full" if len(locations) <= 2000 else "quick"
        if validate != "none":
            todo = range(len(locations)) if validate == "full" else range(min(100, len(locations)))
            for i in todo:
                self._seasons(i, check_headers=True)

    # --- layout ---
    def _seasons(self, item: int, check_headers: bool = False) -> list[dict[str, str]]:
        """Band -> path for each season of a location, seasons sorted by date."""
        if item in self._cache and not check_headers:
            return self._cache[item]
        loc = self.folder / self.locations[item]
        if not loc.is_dir():
            raise DataError(f"SSL4EO-S12 location folder {loc} does not exist")
        with os.scandir(loc) as it:
            seasons = [e.name for e in it if e.is_dir()]
        if len(seasons) != self.num_seasons:
            raise DataError(f"{loc}: {len(seasons)} season folder(s) {sorted(seasons)}, expected {self.num_seasons}")
        seasons.sort(key=lambda s: (parse_date(s) or "9999", s))
        out = []
        for season in seasons:
            sdir = loc / season
            files = {canonical_band_name(Path(f).stem): str(sdir / f) for f in os.listdir(sdir)
                     if f.lower().endswith((".tif", ".tiff"))}
            missing = [b for b in self.band_names if b not in files]
            if missing:
                raise DataError(f"{sdir}: missing band file(s) {missing} (found {sorted(files)})")
            paths = {b: files[b] for b in self.band_names}
            if check_headers:
                for b, p in paths.items():
                    if os.path.getsize(p) == 0:
                        raise DataError(f"{p}: empty file")
                    with _open(p) as src:
                        if src.count < 1:
                            raise DataError(f"{p}: no raster band")
            out.append(paths)
        self._cache[item] = out
        return out

    def season_dates(self, item: int) -> list[str | None]:
        """Dates of a location's seasons, in the order the samples hold them."""
        return [parse_date(Path(next(iter(s.values()))).parent.name) for s in self._seasons(item)]

    # --- RasterSampleDataset ---
    def num_items(self) -> int:
        return len(self.locations)

    def describe_item(self, item: int) -> str:
        return str(self.folder / self.locations[item])

    def item_shape(self, item: int) -> tuple[int, int]:
        """The sample grid: `grid_size` when given, else the 10 m grid (264 x 264 px for the release), derived from
        the first season's headers and each band's native resolution (cached)."""
        if self.grid_size is not None:
            return self.grid_size
        cache = self.__dict__.setdefault("_shapes", {})
        if item not in cache:
            # the finest selected band sets the grid, scaled to 10 m (a 20 m band of 132 px -> 264 px)
            band = min(self.band_names, key=lambda b: BAND_RESOLUTION_M.get(b, 10))
            factor = BAND_RESOLUTION_M.get(band, 10) / 10
            with _open(self._seasons(item)[0][band]) as src:
                cache[item] = (int(round(src.height * factor)), int(round(src.width * factor)))
        return cache[item]

    def read_item_raw(self, item: int, rng: np.random.Generator, window: tuple[int, int, int, int],
                      out: np.ndarray | None = None) -> np.ndarray:
        """`(T, C, h, w)` in the files' dtype (uint16 DN for S2), window `(row, col, h, w)` of the sample grid.

        Each band file is read through a window of its own grid (fractional for 20 / 60 m bands) resampled to the
        window's size, which gives exactly the pixels of a bilinear resampling of the whole band followed by the
        crop (GDAL's floating-point source windows), at a fraction of the cost."""
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.errors import RasterioIOError
        from rasterio.io import DatasetReader
        from rasterio.windows import Window

        r0, c0, h, w = window
        grid_h, grid_w = self.item_shape(item)
        seasons = self._seasons(item)
        # one GDAL environment per sample, not one per file as `rasterio.open` makes (DatasetReader opens inside
        # the active one: ~40 % less time per open); no directory listing on open (no sidecar files here)
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for t, paths in enumerate(seasons):
                for c, b in enumerate(self.band_names):
                    p = paths[b]
                    try:
                        src = DatasetReader(p)
                    except (RasterioIOError, OSError) as err:
                        raise DataError(f"cannot open raster {p}: {err}") from err
                    with src:
                        if out is None:
                            out = np.empty((len(seasons), len(self.band_names), h, w), dtype=src.dtypes[0])
                        fy, fx = src.height / grid_h, src.width / grid_w
                        try:
                            if (src.height, src.width) == (grid_h, grid_w):
                                src.read(1, window=Window(c0, r0, w, h), out=out[t, c])
                            else:
                                src.read(1, window=Window(c0 * fx, r0 * fy, w * fx, h * fy), out=out[t, c],
                                         resampling=Resampling.bilinear)
                        except Exception as err:  # noqa: BLE001
                            raise DataError(f"cannot read {p}: {err}") from err
                        if src.nodata is not None and self.raw_nodata is not None and src.nodata != self.raw_nodata:
                            band = out[t, c]
                            band[band == src.nodata] = self.raw_nodata
        return out


ZARR_PRODUCTS = {"s2a": "S2L2A", "s2c": "S2L1C", "s1": "S1GRD"}
_KNOWN_PRODUCTS = ("S1GRD", "S2L1C", "S2L2A", "S2RGB", "DEM", "NDVI", "LULC")
_SPLIT_RE = re.compile(r"ssl4eos12_(train|val|test)_", re.IGNORECASE)


def _zarr_file_kind(path: Path, root: Path) -> tuple[str | None, str | None]:
    """(product, split) of a v1.1 file from its path `{split}/{product}/ssl4eos12_{split}_...zarr.zip` (None when
    the path does not say)."""
    parts = [q.upper() for q in path.relative_to(root).parts[:-1]] + [q.upper() for q in root.parts[-2:]]
    product = next((q for q in parts if q in _KNOWN_PRODUCTS), None)
    m = _SPLIT_RE.search(path.name)
    split = m.group(1).lower() if m else next((q.lower() for q in parts if q.lower() in ("train", "val", "test")), None)
    return product, split


def find_zarr_files(root: str | os.PathLike, modality: str = "s2a", split: str | None = None) -> list[str]:
    """The `*.zarr.zip` files of ONE product and ONE split under `root` (a file, a product folder, a split folder
    or the release root `{train,val}/{S1GRD,S2L1C,S2L2A,S2RGB}/`).

    Files of other products are ignored when the folder structure names the product (the root of the release
    holds all of them); a folder that still mixes products or splits (e.g. the root without `split`, or `val/`
    files copied into a training folder) is refused with an error naming what it found."""
    root = Path(root)
    if root.is_file():
        return [str(root)]
    if not root.is_dir():
        raise DataError(f"SSL4EO-S12 v1.1 zarr folder {root} does not exist")
    files = sorted(root.rglob("*.zarr.zip"))
    if not files:
        raise DataError(f"{root} holds no *.zarr.zip files (expected the SSL4EO-S12 v1.1 zarr chunks, "
                        "{train,val}/{S2L2A,S2L1C,S1GRD}/ssl4eos12_*.zarr.zip)")
    product = ZARR_PRODUCTS[_modality(modality)]
    kinds = {f: _zarr_file_kind(f, root) for f in files}
    products = sorted({k[0] or "?" for k in kinds.values()})
    chosen = [f for f in files if kinds[f][0] in (product, None)]
    if not chosen:
        raise DataError(f"{root} holds no {product} files for modality {modality!r}; it holds {', '.join(products)}")
    if any(kinds[f][0] is None for f in chosen) and len({k[0] for k in kinds.values()} - {None}) > 0:
        unnamed = [f for f in chosen if kinds[f][0] is None]
        raise DataError(f"{root} mixes files whose product is known ({', '.join(p for p in products if p != '?')}) "
                        f"with {len(unnamed)} whose path names no product (e.g. {unnamed[0]}); point data.root at one "
                        "product folder")
    if split is not None:
        split = {"validation": "val", "valid": "val"}.get(str(split).lower(), str(split).lower())
        chosen = [f for f in chosen if kinds[f][1] in (split, None)]
        if not chosen:
            found = sorted({kinds[f][1] or "?" for f in files})
            raise DataError(f"{root} holds no {product} files of split {split!r}; splits found: {', '.join(found)}")
    splits = {}
    for f in chosen:
        splits.setdefault(kinds[f][1] or "?", []).append(f)
    if len(splits) > 1:
        counts = ", ".join(f"{k}: {len(v)} file(s)" for k, v in sorted(splits.items()))
        raise DataError(f"{root} mixes splits ({counts}) of {product}; choose one with data.split (split=) or point "
                        "data.root at one split folder")
    return [str(f) for f in chosen]


class SSL4EOS12ZarrDataset(RasterSampleDataset):
    """SSL4EO-S12 v1.1 zarr-chunk files (`ssl4eos12_{split}_seasonal_data_*.zarr.zip`, 64 samples each).

    Needs the `zarr` extra (`pip install degas-hf[zarr]`: zarr==2.18.0, which needs numcodecs<0.16). The files are
    read with zarr directly (the upstream loader uses `xarray.open_zarr`, whose recent releases no longer read
    zarr 2). Variable `bands` has dims `(sample, time=4, band, y=264, x=264)`, S2 as int16, with the band names in
    the `band` coordinate (`B01 .. B12`; S1: `vv`, `vh`).

    `paths` is one file, a list of files, or a folder: the folder must give one product (the modality's:
    `S2L2A`, `S2L1C`, `S1GRD`) and one split (`split`, or a folder holding one); see :func:`find_zarr_files`.

    The zarr-chunk release stores S2 digital numbers **+1000** (datasets.md); `dn_offset` (default 1000 for S2)
    is subtracted, so values match the raw GeoTIFFs and the processor's v1.0 statistics (or use the processor's
    `ssl4eo-s12-v1.1-*` presets, which are the v1.1 statistics without the offset). A stored 0 (the fill value,
    below every offset-shifted valid value) is nodata. Use `dn_offset=0` for the WebDataset release or S1.
    """

    supports_raw = True

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], band_names: Sequence[str] | None = None,
                 modality: str = "S2L2A", crop_size: int | None = 224, processor=None, random_crop: bool = True,
                 seed: int = 0, dn_offset: int | None = None, samples_per_file: int | None = None,
                 split: str | None = None, samples_per_item: int = 1, output: str = "normalized"):
        try:
            import zarr  # noqa: F401
        except ImportError as err:
            raise ImportError("SSL4EOS12ZarrDataset needs the zarr extra: pip install 'degas-hf[zarr]' "
                              "(zarr==2.18.0, numcodecs<0.16)") from err
        mod = _modality(modality)
        band_names = DEFAULT_BANDS[mod] if band_names is None else band_names
        super().__init__(band_names, crop_size, processor, random_crop, seed, samples_per_item, output=output)
        self.modality = mod
        self.dn_offset = (SSL4EO_ZARR_DN_OFFSET if mod != "s1" else 0) if dn_offset is None else int(dn_offset)
        self.raw_nodata = None if mod == "s1" else 0
        if isinstance(paths, (str, os.PathLike)):
            files = find_zarr_files(paths, mod, split)
        else:
            files = [str(f) for f in paths]
        self.files = files
        self._open: dict[int, tuple] = {}
        self._index: list[tuple[int, int]] = []
        for fi, f in enumerate(files):
            if not os.path.exists(f):
                raise DataError(f"{f} does not exist")
            n = samples_per_file
            if n is None:
                n = int(self._open_file(fi)[0].shape[0])
            self._index.extend((fi, s) for s in range(n))
        self._open = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_open"] = {}  # zip handles are opened again in each worker
        return state

    def _open_file(self, fi: int):
        """(bands array, channel indices of band_names, (H, W)) of file `fi`, cached per process."""
        if fi not in self._open:
            import zarr

            path = self.files[fi]
            try:
                group = zarr.open_group(zarr.storage.ZipStore(path, mode="r"), mode="r")
                bands = group["bands"]
                names = [canonical_band_name(str(b)) for b in group["band"][:]]
            except Exception as err:  # noqa: BLE001 - zip, zarr and key errors alike
                raise DataError(f"cannot read zarr file {path}: {err}") from err
            if bands.ndim != 5:
                raise DataError(f"{path}: 'bands' has shape {bands.shape}, expected (sample, time, band, y, x)")
            # L1C has B10 (cirrus), L2A does not: a file of the other product is refused, never mixed in
            if self.modality in ("s2a", "s2c") and ("B10" in names) != (self.modality == "s2c"):
                other = "S2L1C" if "B10" in names else "S2L2A"
                raise DataError(f"{path} is an {other} file (bands {names}), expected {ZARR_PRODUCTS[self.modality]} "
                                f"for modality {self.modality!r}")
            missing = [b for b in self.band_names if b not in names]
            if missing:
                raise DataError(f"{path}: missing band(s) {missing}; the file has {names}")
            self._open[fi] = (bands, [names.index(b) for b in self.band_names], tuple(bands.shape[-2:]))
        return self._open[fi]

    def num_items(self) -> int:
        return len(self._index)

    def describe_item(self, item: int) -> str:
        fi, s = self._index[item]
        return f"{self.files[fi]}[sample={s}]"

    def item_shape(self, item: int) -> tuple[int, int]:
        return self._open_file(self._index[item][0])[2]

    def read_item_raw(self, item: int, rng: np.random.Generator, window: tuple[int, int, int, int],
                      out: np.ndarray | None = None) -> np.ndarray:
        """`(time, band, h, w)` as stored (S2: int16 with the +`dn_offset`, 0 = fill)."""
        fi, s = self._index[item]
        r0, c0, h, w = window
        bands, channels, _ = self._open_file(fi)
        try:
            arr = bands[s, :, :, r0:r0 + h, c0:c0 + w]  # (time, band, y, x)
        except Exception as err:  # noqa: BLE001
            raise DataError(f"cannot read {self.describe_item(item)}: {err}") from err
        if channels != list(range(arr.shape[1])):
            arr = arr[:, channels]
        if self.modality == "s1":
            arr = arr.astype(np.float32)  # float16 dB: the normaliser works in float32
        if out is not None:
            np.copyto(out, arr)
            return out
        return np.ascontiguousarray(arr)
