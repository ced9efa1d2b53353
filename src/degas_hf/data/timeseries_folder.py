"""Pretraining samples from a folder of GeoTIFF time series, and the machinery shared with the SSL4EO-S12 reader.

Layout read by :class:`TimeSeriesFolderDataset`::

    ROOT/                      a series is every folder (ROOT itself or any sub-folder) that directly holds
      site_a/                  GeoTIFFs; its files are its dates
        2019-03-22.tif         one multi-band GeoTIFF per date; bands named by the band descriptions
        2019-05-16.tif         (or by `file_band_names` when the files have none); dates parsed from the
        ...                    file name (YYYY-MM-DD, YYYYMMDD or YYYYMMDDTHHMMSS), else sorted by name
      site_b/...

Every sample is `num_frames` dates of one series (a sorted random subset, a random run of consecutive dates,
the first ones, or all), cropped at random to `crop_size`, with the bands picked by name in the order the model
wants, normalised by the image processor (the one source of truth for statistics) and with a valid mask that is
False where any band holds nodata or NaN (and where the crop runs past a small image, which is padded).

Randomness (crop offsets, date subsets, the mask seed handed to the model) comes from a generator seeded by
`(seed, epoch, index)` only, never from global RNG state, so a sample is the same in every worker, on every
rank and after a resume. Keys are an index or an `(epoch, index)` pair (what
:class:`degas_hf.training.pretrain.ShardedBatchSampler` yields).
"""

from __future__ import annotations

import fnmatch
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

__all__ = [
    "DataError",
    "canonical_band_name",
    "parse_date",
    "RasterSampleDataset",
    "TimeSeriesFolderDataset",
    "collate_pretraining",
    "DeviceNormalizer",
]


class DataError(ValueError):
    """A dataset folder or file that cannot be used; the message names the path."""


_BAND_RE = re.compile(r"^B0*(\d{1,2})(A?)$", re.IGNORECASE)


def canonical_band_name(name: str) -> str:
    """`"B2"`, `"b02"`, `"B02"` -> `"B02"`; `"b8a"` -> `"B8A"`; anything else (VV, VH, SCL) upper-cased."""
    name = str(name).strip()
    m = _BAND_RE.match(name)
    if m:
        if m.group(2):  # B8A keeps its usual one-digit spelling
            return f"B{int(m.group(1))}A"
        return f"B{int(m.group(1)):02d}"
    return name.upper()


_DATE_RES = (
    re.compile(r"(\d{4})-(\d{2})-(\d{2})"),
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?:T\d{6})?(?!\d)"),
    re.compile(r"(\d{4})(\d{2})(\d{2})T\d{6}"),
)


def parse_date(name: str) -> str | None:
    """The first plausible date in a file or folder name as `YYYY-MM-DD`, else None."""
    for rx in _DATE_RES:
        for m in rx.finditer(name):
            y, mo, d = (int(g) for g in m.groups()[:3])
            if 1970 <= y <= 2100 and 1 <= mo <= 12 and 1 <= d <= 31:
                return f"{y:04d}-{mo:02d}-{d:02d}"
    return None


def _seed_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]))


def _open(path: str | Path):
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return rasterio.open(path)
    except (RasterioIOError, OSError) as err:
        raise DataError(f"cannot open raster {path}: {err}") from err


def normalise_with_processor(processor, raw: np.ndarray, band_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw values `(T, C, H, W)` float32 (NaN = nodata) -> `pixel_values (C, T, H, W)`, `valid_mask (T, H, W)`.

    The processor receives the frames as a `(T, C, H, W)` array with the band names, and returns a batch of
    one; its valid mask is AND-ed with the NaN mask (so nodata is never counted valid, whatever the processor
    does with NaN).
    """
    nan_mask = ~np.isnan(raw).any(axis=1)  # (T, H, W)
    out = processor(raw, band_names=list(band_names), return_tensors="pt")
    pixel_values = torch.as_tensor(out["pixel_values"])
    if pixel_values.ndim == 5:
        pixel_values = pixel_values[0]
    valid = out.get("valid_mask") if hasattr(out, "get") else None
    valid = torch.as_tensor(nan_mask) if valid is None else torch.as_tensor(valid)
    if valid.ndim == 4:
        valid = valid[0]
    valid = valid.bool() & torch.as_tensor(nan_mask)
    pixel_values = torch.nan_to_num(pixel_values.float(), nan=0.0, posinf=0.0, neginf=0.0)
    return pixel_values.contiguous(), valid.contiguous()


class RasterSampleDataset(torch.utils.data.Dataset):
    """Base of the pretraining readers: keys, seeding, crop, normalisation. Subclasses implement
    `num_items`, `item_shape(i)` -> (H, W) and either `read_item(i, frames_rng, window)` -> `(T, C, h, w)` float32
    with NaN for nodata, or `read_item_raw(i, frames_rng, window)` -> `(T, C, h, w)` in the file's own dtype with
    `raw_nodata` marking missing pixels and `dn_offset` still added (then `read_item` is derived from it), where
    `window` is `(row, col, height, width)` in the item's grid.

    `output="normalized"` (default) gives `pixel_values` float32 `(C, T, h, w)` normalised by the processor and
    `valid_mask`; `output="raw"` gives `raw_values` `(T, C, h, w)` in the file dtype (uint16 for Sentinel-2 DN), for
    :class:`DeviceNormalizer` to normalise a whole batch on the accelerator: a worker then only decodes and slices,
    and 2-byte values cross the worker pipe and the PCIe bus instead of 4-byte ones. Readers that support it set
    `supports_raw = True`.
    """

    supports_raw = False
    raw_nodata: float | None = None  # value of missing pixels in `read_item_raw` output (NaN for float data)
    dn_offset: float = 0  # subtracted from raw values before normalisation (SSL4EO-S12 v1.1 zarr: 1000)

    def __init__(self, band_names: Sequence[str], crop_size: int | None, processor=None, random_crop: bool = True,
                 seed: int = 0, samples_per_item: int = 1, output: str = "normalized"):
        self.band_names = [canonical_band_name(b) for b in band_names]
        if len(set(self.band_names)) != len(self.band_names):
            raise DataError(f"band_names must be unique, got {list(band_names)}")
        if crop_size is not None and (isinstance(crop_size, bool) or int(crop_size) < 0):
            raise DataError(f"crop_size must be a positive number of pixels (or None for the whole image), "
                            f"got {crop_size!r}")
        self.crop_size = None if crop_size in (None, 0) else int(crop_size)
        self.processor = processor
        self.random_crop = bool(random_crop)
        self.seed = int(seed)
        self.samples_per_item = max(1, int(samples_per_item))
        self.epoch = 0
        if output not in ("normalized", "raw"):
            raise DataError(f"output must be 'normalized' or 'raw', got {output!r}")
        if output == "raw" and not self.supports_raw:
            raise DataError(f"{type(self).__name__} cannot give raw values (output='raw'); use output='normalized'")
        self.output = output

    # --- to implement ---
    def num_items(self) -> int:
        raise NotImplementedError

    def item_shape(self, item: int) -> tuple[int, int]:
        raise NotImplementedError

    def read_item(self, item: int, rng: np.random.Generator, window: tuple[int, int, int, int]) -> np.ndarray:
        if not self.supports_raw:
            raise NotImplementedError
        raw = self.read_item_raw(item, rng, window)
        out = _to_float_with_nan(raw, self.raw_nodata)
        if self.dn_offset:
            out -= np.float32(self.dn_offset)
        return out

    def read_item_raw(self, item: int, rng: np.random.Generator, window: tuple[int, int, int, int],
                      out: np.ndarray | None = None) -> np.ndarray:
        """Raw `(T, C, h, w)` values of `window`; written into `out` (and returned) when given, so that a batch is
        assembled with one copy per sample (see `__getitems__`)."""
        raise NotImplementedError

    def describe_item(self, item: int) -> str:
        return f"item {item}"

    def device_normalizer(self) -> "DeviceNormalizer":
        """The :class:`DeviceNormalizer` that turns this reader's `raw_values` batches into model inputs."""
        if self.processor is None:
            raise DataError("no image processor given: normalisation statistics come from STSwinMAEImageProcessor")
        return DeviceNormalizer(self.processor, self.band_names, nodata=self.raw_nodata, dn_offset=self.dn_offset)

    # --- torch Dataset ---
    def set_epoch(self, epoch: int) -> None:
        """Epoch used for plain integer keys (keys that are `(epoch, index)` pairs carry their own)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_items() * self.samples_per_item

    def _window(self, shape: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int, int]:
        h, w = shape
        if self.crop_size is None:
            return 0, 0, h, w
        c = self.crop_size
        if self.random_crop:
            r0 = int(rng.integers(0, max(h - c, 0) + 1))
            c0 = int(rng.integers(0, max(w - c, 0) + 1))
        else:
            r0, c0 = max(h - c, 0) // 2, max(w - c, 0) // 2
        return r0, c0, min(c, h), min(c, w)

    def _locate(self, key) -> tuple[int, int, np.random.Generator, tuple[int, int, int, int]]:
        """(index, item, rng, window) of a key; the rng has drawn the window (and draws the mask seed next)."""
        if isinstance(key, (tuple, list)):
            epoch, index = int(key[0]), int(key[1])
        else:
            epoch, index = self.epoch, int(key)
        if not 0 <= index < len(self):
            raise IndexError(index)
        item = index // self.samples_per_item
        rng = _seed_rng(self.seed, epoch, index)
        return index, item, rng, self._window(self.item_shape(item), rng)

    def __getitems__(self, keys: Sequence) -> list[dict[str, Any]]:
        """A batch of samples (what DataLoader's fetcher asks for). With raw output and a fixed crop, the samples'
        `raw_values` are consecutive views of one batch tensor (in shared memory inside a DataLoader worker), each
        read straight into its slot: one copy per sample from the file or the mapped shard to the batch that
        crosses to the main process, which :func:`collate_pretraining` then hands on without stacking."""
        if self.output != "raw" or self.crop_size is None or len(keys) < 2:
            return [self[k] for k in keys]
        first = self[keys[0]]
        one = first["raw_values"]
        numel = len(keys) * one.numel()
        if torch.utils.data.get_worker_info() is not None:
            storage = torch.UntypedStorage._new_shared(numel * one.element_size())
        else:
            storage = torch.UntypedStorage(numel * one.element_size())
        batch = torch.empty(0, dtype=one.dtype).set_(storage, 0, (len(keys), *one.shape))
        batch[0].copy_(one)
        arrays = batch.numpy()
        fill = np.nan if self.raw_nodata is None else self.raw_nodata
        samples = [{**first, "raw_values": batch[0]}]
        for j, key in enumerate(keys[1:], start=1):
            index, item, rng, (r0, c0, h, w) = self._locate(key)
            slot = arrays[j]
            if (h, w) != slot.shape[-2:]:  # an image smaller than the crop: padded with nodata
                slot.fill(fill)
                slot[..., :h, :w] = self.read_item_raw(item, rng, (r0, c0, h, w))
            else:
                self.read_item_raw(item, rng, (r0, c0, h, w), out=slot)
            samples.append({"raw_values": batch[j], "mask_seed": int(rng.integers(0, 2**62)), "index": index})
        return samples

    def __getitem__(self, key) -> dict[str, Any]:
        index, item, rng, window = self._locate(key)
        if self.output == "raw":
            raw = self.read_item_raw(item, rng, window)
            if self.crop_size is not None and (raw.shape[-2] < self.crop_size or raw.shape[-1] < self.crop_size):
                fill = np.nan if self.raw_nodata is None else self.raw_nodata
                pad = ((0, 0), (0, 0), (0, self.crop_size - raw.shape[-2]), (0, self.crop_size - raw.shape[-1]))
                raw = np.pad(raw, pad, constant_values=fill)
            return {"raw_values": torch.from_numpy(np.ascontiguousarray(raw)),
                    "mask_seed": int(rng.integers(0, 2**62)), "index": index}
        raw = self.read_item(item, rng, window).astype(np.float32, copy=False)
        if self.crop_size is not None and (raw.shape[-2] < self.crop_size or raw.shape[-1] < self.crop_size):
            pad = ((0, 0), (0, 0), (0, self.crop_size - raw.shape[-2]), (0, self.crop_size - raw.shape[-1]))
            raw = np.pad(raw, pad, constant_values=np.nan)
        if self.processor is None:
            raise DataError("no image processor given: normalisation statistics come from STSwinMAEImageProcessor")
        pixel_values, valid_mask = normalise_with_processor(self.processor, raw, self.band_names)
        return {
            "pixel_values": pixel_values,
            "valid_mask": valid_mask,
            # seeds the model's random mask for this sample (the same on every rank / after resume)
            "mask_seed": int(rng.integers(0, 2**62)),
            "index": index,
        }

    def to_hf_dataset(self, num_samples: int | None = None, epoch: int = 0, cache_dir: str | None = None):
        """The first `num_samples` samples of `epoch` as a `datasets.Dataset` (numpy columns `pixel_values`,
        `valid_mask`, `mask_seed`, `index`), e.g. to cache preprocessed crops or push a sample set to the Hub.
        Training itself reads the torch Dataset directly (workers, endless epochs)."""
        import datasets

        n = len(self) if num_samples is None else min(int(num_samples), len(self))

        def generate():
            for i in range(n):
                s = self[(epoch, i)]
                yield {"pixel_values": s["pixel_values"].numpy(), "valid_mask": s["valid_mask"].numpy(),
                       "mask_seed": s["mask_seed"], "index": s["index"]}

        return datasets.Dataset.from_generator(generate, cache_dir=cache_dir)


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """`torch.stack`, without the copy when the tensors already are the consecutive slots of one storage (the
    batches `RasterSampleDataset.__getitems__` builds)."""
    first = tensors[0]
    storage, n = first.untyped_storage(), first.numel()
    if (storage.nbytes() == len(tensors) * n * first.element_size()
            and all(t.is_contiguous() and t.dtype == first.dtype and t.shape == first.shape
                    and t.untyped_storage().data_ptr() == storage.data_ptr() and t.storage_offset() == i * n
                    for i, t in enumerate(tensors))):
        return torch.empty(0, dtype=first.dtype).set_(storage, 0, (len(tensors), *first.shape))
    return torch.stack(tensors)


def collate_pretraining(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack samples into a batch: `pixel_values`/`valid_mask` (normalised readers) or `raw_values` (raw output)."""
    out = {name: _stack([s[name] for s in samples]) for name in ("pixel_values", "valid_mask", "raw_values")
           if name in samples[0]}
    out["mask_seed"] = torch.tensor([s["mask_seed"] for s in samples], dtype=torch.int64)
    out["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.int64)
    return out


class DeviceNormalizer:
    """Normalise a batch of raw values `(B, T, C, H, W)` where it lives (the GPU, in the training step).

    The same arithmetic as `STSwinMAEImageProcessor.normalize_array` (float32 `x * scale + offset` with
    `scale = rescale / std`, `offset = -mean / std`, after subtracting `dn_offset`), so a batch normalised here equals,
    bit for bit, the samples the processor normalises on the CPU. Returns `pixel_values` float32 `(B, C, T, H, W)`
    (nodata filled with the processor's fill value) and `valid_mask` bool `(B, T, H, W)`: False where any band
    equals `nodata` or the processor's `nodata_value`, or is not finite.
    """

    def __init__(self, processor, band_names: Sequence[str], nodata: float | None = None, dn_offset: float = 0):
        band_names = [canonical_band_name(b) for b in band_names]
        wanted = [canonical_band_name(b) for b in processor.band_names]
        missing = [b for b in wanted if b not in band_names]
        if missing:
            raise DataError(f"the data lack the processor's band(s) {missing} (data bands: {band_names})")
        self.channels = [band_names.index(b) for b in wanted]
        self.identity = self.channels == list(range(len(band_names)))
        scale, offset = processor._affine_normalization(len(wanted))
        self.scale = torch.from_numpy(scale).view(1, -1, 1, 1, 1)
        self.offset = torch.from_numpy(offset).view(1, -1, 1, 1, 1)
        values = {v for v in (nodata, getattr(processor, "nodata_value", None)) if v is not None and not np.isnan(v)}
        self.nodata = sorted(values)
        self.dn_offset = float(dn_offset or 0)
        self.fill_value = float(getattr(processor, "fill_value", 0.0))

    def __call__(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if raw.ndim != 5:
            raise ValueError(f"raw_values must be (B, T, C, H, W), got shape {tuple(raw.shape)}")
        if not self.identity:
            raw = raw[:, :, self.channels]
        device = raw.device
        if self.scale.device != device:
            self.scale, self.offset = self.scale.to(device), self.offset.to(device)
        batch, frames, channels, height, width = raw.shape
        # on the CPU, NumPy's comparisons and masked copies are several times faster than torch's on uint16
        on_cpu = device.type == "cpu"
        if on_cpu:
            array = raw.numpy()
            invalid_np = np.zeros((batch, frames, height, width), dtype=bool)
            for value in self.nodata:
                invalid_np |= (array == value).any(axis=2)
            invalid = torch.from_numpy(invalid_np)
        else:
            invalid = torch.zeros((batch, frames, height, width), dtype=torch.bool, device=device)
            for value in self.nodata:
                invalid |= (raw == value).any(dim=2)
        # one pass casts and transposes to (B, C, T, H, W); then in place: x - dn_offset, x * scale, + offset
        # (separate roundings, as the processor's NumPy code does them)
        values = torch.empty((batch, channels, frames, height, width), dtype=torch.float32, device=device)
        values.copy_(raw.transpose(1, 2))
        if self.dn_offset:
            values.sub_(self.dn_offset)
        values.mul_(self.scale).add_(self.offset)
        # integers times a finite scale stay finite (as in the processor); float data may hold NaN / Inf
        if raw.dtype.is_floating_point or self._integer_bound_overflows(raw.dtype):
            invalid |= ~torch.isfinite(values).all(dim=1)
        if on_cpu:
            np.copyto(values.numpy(), np.float32(self.fill_value), where=invalid.numpy()[:, None])
        else:
            values.masked_fill_(invalid[:, None], self.fill_value)
        return values, ~invalid

    def _integer_bound_overflows(self, dtype: torch.dtype) -> bool:
        info = torch.iinfo(dtype)
        bound = max(abs(info.min), abs(info.max)) + abs(self.dn_offset)
        return not np.isfinite(np.float32(bound * float(self.scale.abs().max()) + float(self.offset.abs().max())))


def _to_float_with_nan(arr: np.ndarray, nodata) -> np.ndarray:
    out = arr.astype(np.float32)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        out[arr == nodata] = np.nan
    return out


@dataclass
class _Series:
    folder: str
    files: list[str]
    dates: list[str | None]
    band_index: list[int]  # 1-based band index in each file, in the dataset's band order
    shape: tuple[int, int]
    nodata: float | None


FRAME_SAMPLING = ("random", "consecutive", "first", "all")


class TimeSeriesFolderDataset(RasterSampleDataset):
    """Pretraining samples from folders of per-date multi-band GeoTIFFs (see the module docstring).

    Args:
        root: the folder; every folder under it (itself included) that directly holds files matching
            `pattern` is one series.
        band_names: bands to return, in this order (matched by name to the files' band descriptions, case and
            zero-padding insensitive: "B2" == "B02").
        num_frames: dates per sample. A series with fewer dates is an error naming the folder.
        frame_sampling: "random" (sorted random subset), "consecutive" (random run), "first", or "all"
            (`num_frames` ignored; every series must then have the same number of dates to be batched).
        crop_size: square crop (random when `random_crop`, else centred); smaller images are padded with
            nodata. None keeps the whole image.
        processor: an `STSwinMAEImageProcessor` (normalisation + valid mask).
        samples_per_series: how many samples (different crops / dates) one series gives per epoch.
        file_band_names: band names of the files, for files without band descriptions.
        nodata: nodata value, overriding the files' own.
        pattern: glob(s) of the files of a series.
        in_memory: keep every file read in memory (per worker process); for small datasets such as the bundled
            sample, where reading dominates the step time.
    """

    def __init__(self, root: str | os.PathLike, band_names: Sequence[str], num_frames: int = 4,
                 frame_sampling: str = "random", crop_size: int | None = 224, processor=None,
                 random_crop: bool = True, seed: int = 0, samples_per_series: int = 1,
                 file_band_names: Sequence[str] | None = None, nodata: float | None = None,
                 pattern: str | Sequence[str] = ("*.tif", "*.tiff"), in_memory: bool = False):
        super().__init__(band_names, crop_size, processor, random_crop, seed, samples_per_series)
        if frame_sampling not in FRAME_SAMPLING:
            raise DataError(f"frame_sampling must be one of {FRAME_SAMPLING}, got {frame_sampling!r}")
        self.root = Path(root)
        self.num_frames = int(num_frames)
        self.frame_sampling = frame_sampling
        self.file_band_names = None if file_band_names is None else [canonical_band_name(b) for b in file_band_names]
        self.nodata_override = nodata
        self.patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        if not self.root.is_dir():
            raise DataError(f"dataset folder {self.root} does not exist or is not a folder")
        self.in_memory = bool(in_memory)
        self._memory: dict[str, np.ndarray] = {}
        self.series = self._scan()

    def _scan(self) -> list[_Series]:
        folders: dict[str, list[str]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            files = sorted({os.path.join(dirpath, f) for p in self.patterns for f in filenames
                            if fnmatch.fnmatch(f, p)})
            if files:
                folders[dirpath] = files
        if not folders:
            raise DataError(f"dataset folder {self.root} holds no files matching {self.patterns}")
        series = [self._scan_series(folder, files) for folder, files in sorted(folders.items())]
        if self.frame_sampling == "all" and len({len(s.files) for s in series}) > 1:
            raise DataError(f"frame_sampling='all' needs the same number of dates in every series under {self.root}")
        return series

    def _scan_series(self, folder: str, files: list[str]) -> _Series:
        dates = [parse_date(Path(f).name) for f in files]
        if all(d is not None for d in dates):
            order = sorted(range(len(files)), key=lambda i: (dates[i], files[i]))
            files, dates = [files[i] for i in order], [dates[i] for i in order]
        need = 1 if self.frame_sampling == "all" else self.num_frames
        if len(files) < need:
            raise DataError(f"series {folder} has {len(files)} date(s), fewer than num_frames={need}")
        band_index = None
        shape = nodata = None
        for f in files:
            with _open(f) as src:
                names = self.file_band_names
                if names is None:
                    if any(d is None or not str(d).strip() for d in src.descriptions):
                        raise DataError(f"{f}: bands have no names (band descriptions); pass file_band_names")
                    names = [canonical_band_name(d) for d in src.descriptions]
                elif len(names) != src.count:
                    raise DataError(f"{f}: {src.count} bands but file_band_names has {len(names)}")
                missing = [b for b in self.band_names if b not in names]
                if missing:
                    raise DataError(f"{f}: missing band(s) {missing}; the file has {names}")
                idx = [names.index(b) + 1 for b in self.band_names]
                if band_index is None:
                    band_index, shape, nodata = idx, (src.height, src.width), src.nodata
                elif idx != band_index or (src.height, src.width) != shape:
                    raise DataError(f"{f}: band order or size {(src.height, src.width)} differs from the other "
                                    f"dates of series {folder} ({shape})")
        if self.nodata_override is not None:
            nodata = self.nodata_override
        return _Series(folder, files, dates, band_index, shape, nodata)

    def num_items(self) -> int:
        return len(self.series)

    def item_shape(self, item: int) -> tuple[int, int]:
        return self.series[item].shape

    def describe_item(self, item: int) -> str:
        return self.series[item].folder

    def choose_frames(self, n_dates: int, rng: np.random.Generator) -> list[int]:
        t = self.num_frames
        if self.frame_sampling == "all":
            return list(range(n_dates))
        if self.frame_sampling == "first":
            return list(range(t))
        if self.frame_sampling == "consecutive":
            start = int(rng.integers(0, n_dates - t + 1))
            return list(range(start, start + t))
        return sorted(int(i) for i in rng.choice(n_dates, size=t, replace=False))

    def read_item(self, item: int, rng: np.random.Generator, window: tuple[int, int, int, int]) -> np.ndarray:
        from rasterio.windows import Window

        s = self.series[item]
        frames = self.choose_frames(len(s.files), rng)
        r0, c0, h, w = window
        out = []
        for t in frames:
            if self.in_memory:
                if s.files[t] not in self._memory:
                    self._memory[s.files[t]] = self._read_file(s, t, None)
                out.append(self._memory[s.files[t]][:, r0:r0 + h, c0:c0 + w])
                continue
            out.append(self._read_file(s, t, Window(c0, r0, w, h)))
        return np.stack(out)

    def _read_file(self, s: _Series, t: int, window) -> np.ndarray:
        with _open(s.files[t]) as src:
            try:
                arr = src.read(s.band_index, window=window)
            except Exception as err:  # noqa: BLE001 - rasterio raises several kinds on corrupt data
                raise DataError(f"cannot read {s.files[t]}: {err}") from err
        return _to_float_with_nan(arr, s.nodata)

    def dates_of(self, index: int, epoch: int | None = None) -> list[str | None]:
        """The dates sample `index` uses (for figures and debugging)."""
        item = index // self.samples_per_item
        rng = _seed_rng(self.seed, self.epoch if epoch is None else epoch, index)
        self._window(self.item_shape(item), rng)
        s = self.series[item]
        return [s.dates[t] for t in self.choose_frames(len(s.files), rng)]
