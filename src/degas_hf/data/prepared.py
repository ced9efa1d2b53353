"""The prepared pretraining format: fixed-size samples, already on one grid, in large WebDataset-style tar shards.

Written once by `degas-hf prepare-ssl4eo SRC DST` (:func:`prepare_ssl4eo`), read many times by
:class:`PreparedDataset` (`data.format: prepared`). Layout::

    DST/
      prepare.json            what is being prepared (source, modality, bands, grid, shard size); written first
      shard-000000.tar        tar (ustar) of `<key>.npy` (T, C, H, W) + `<key>.json` (location, dates) members
      shard-000000.json       that shard's index: keys, byte offsets of each array, size and SHA-256 of the tar
      ...
      manifest.json           written last: every shard entry, sample and skip counts; its presence = complete

Why tar shards of raw `.npy` arrays (see docs/pretraining.md): a sample is one contiguous run of bytes at a known
offset, so a reader maps the shard (`mmap`) and copies only the crop it needs - no decompression, no per-sample
file open, no new dependency - while a shard is still a plain WebDataset shard that `tar`, `webdataset` or
`datasets` (`load_dataset("webdataset", ...)`) read as they are. Shards are written to a temporary name, fsynced,
verified against the SHA-256 computed while writing, then renamed: an interrupted or disk-full run leaves only
complete shards, and running the same command again resumes after them.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import mmap
import os
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from degas_hf.data.timeseries_folder import DataError, RasterSampleDataset, canonical_band_name

__all__ = ["FORMAT", "PreparedDataset", "PrepareError", "read_manifest", "verify_prepared", "write_shard",
           "prepare_ssl4eo"]

FORMAT = "degas-hf-prepared"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SETTINGS = "prepare.json"
_NPY_MAGIC = b"\x93NUMPY"


class PrepareError(DataError):
    """Preparation cannot go on (destination in use, disk full, ...); the message says what to do."""


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes what goes through it (the checksum of the bytes meant to be on disk)."""

    def __init__(self, f):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        n = self.f.write(b)
        self.sha.update(memoryview(b)[:n])
        self.size += n
        return n


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_shard(path: str | os.PathLike, samples: Iterable[tuple[str, np.ndarray, dict]],
                extra: dict | None = None) -> dict[str, Any]:
    """Write `samples` (`key`, array, metadata; any iterable, consumed as it is written, so a shard never sits in
    memory whole) as one tar shard at `path`, atomically, and return its index entry
    (`name`, `size`, `sha256`, `keys`, `offsets` of each array's first byte, `meta`).

    The tar is written under a temporary name, fsynced, read back and checked against the SHA-256 computed while
    writing (and its member offsets against the index), then renamed. On any error (ENOSPC included) the temporary
    file is removed and the error raised: a shard exists complete or not at all."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    keys, offsets, metas = [], [], []
    layout = None
    try:
        with open(tmp, "wb") as raw:
            hashing = _HashingWriter(raw)
            with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
                for key, array, meta in samples:
                    if layout is None:
                        layout = (tuple(array.shape), np.dtype(array.dtype).str)
                    elif (tuple(array.shape), np.dtype(array.dtype).str) != layout:
                        raise DataError(f"{path}: sample {key} has shape {array.shape} {array.dtype}, the shard's "
                                        f"samples {layout}")
                    buf = io.BytesIO()
                    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
                    blob = buf.getvalue()
                    header_len = 10 + int.from_bytes(blob[8:10], "little")  # npy v1.0: magic, version, HEADER_LEN
                    info = tarfile.TarInfo(f"{key}.npy")
                    info.size, info.mtime, info.mode = len(blob), 0, 0o644
                    member_start = tar.offset
                    tar.addfile(info, io.BytesIO(blob))
                    keys.append(str(key))
                    offsets.append(member_start + tarfile.BLOCKSIZE + header_len)
                    text = json.dumps(meta, sort_keys=True).encode()
                    info = tarfile.TarInfo(f"{key}.json")
                    info.size, info.mtime, info.mode = len(text), 0, 0o644
                    tar.addfile(info, io.BytesIO(text))
                    metas.append(meta)
            raw.flush()
            os.fsync(raw.fileno())
        expected = hashing.sha.hexdigest()
        if _sha256_file(tmp) != expected:
            raise OSError(errno.EIO, f"{tmp}: the bytes read back differ from the bytes written")
        with tarfile.open(tmp) as tar:
            found = {m.name: m.offset_data for m in tar.getmembers()}
        for key, offset in zip(keys, offsets):
            start = found.get(f"{key}.npy")
            if start is None or not start < offset < start + 128 + 10:
                raise OSError(errno.EIO, f"{tmp}: member {key}.npy is not where the index says")
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    entry = {"name": path.name, "size": path.stat().st_size, "sha256": expected, "keys": keys, "offsets": offsets,
             "meta": metas, "shape": list(layout[0]) if layout else [], "dtype": layout[1] if layout else None}
    entry.update(extra or {})  # e.g. the samples the caller skipped while `samples` was consumed
    _write_json_atomic(path.with_suffix(".json"), entry)
    return entry


# ---------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a complete prepared folder (DataError naming the folder otherwise)."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise DataError(f"prepared dataset folder {root} does not exist")
    if not path.is_file():
        if (root / SETTINGS).is_file():
            raise DataError(f"{root} is an unfinished preparation (no {MANIFEST}); run the same "
                            "`degas-hf prepare-ssl4eo` command again to finish it")
        raise DataError(f"{root} is not a prepared dataset (no {MANIFEST}; make one with `degas-hf prepare-ssl4eo`)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is unreadable: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not a {FORMAT} manifest")
    if manifest.get("version", 0) > FORMAT_VERSION:
        raise DataError(f"{path} has format version {manifest.get('version')}; this degas-hf reads up to "
                        f"{FORMAT_VERSION} (upgrade degas-hf)")
    return manifest


def verify_prepared(root: str | os.PathLike, checksums: bool = True,
                    progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Check every shard of a prepared folder against the manifest (size, and SHA-256 when `checksums`); raise a
    DataError naming the first bad shard. Returns the manifest."""
    root = Path(root)
    manifest = read_manifest(root)
    for entry in manifest["shards"]:
        _check_shard(root, entry, checksums)
        if progress is not None:
            progress(len(entry["keys"]))
    return manifest


def _check_shard(root: Path, entry: dict, checksums: bool) -> None:
    path = root / entry["name"]
    if not path.is_file():
        raise DataError(f"shard {path} is missing (listed in {root / MANIFEST})")
    size = path.stat().st_size
    if size != entry["size"]:
        raise DataError(f"shard {path} has {size} bytes, the manifest says {entry['size']} (truncated or replaced)")
    if checksums and _sha256_file(path) != entry["sha256"]:
        raise DataError(f"shard {path} does not match its SHA-256 in the manifest (corrupt)")


class PreparedDataset(RasterSampleDataset):
    """Pretraining samples from a prepared folder (see the module docstring): random crops of fixed-size
    `(T, C, H, W)` samples, read by mapping the shard and copying only the crop.

    Args:
        root: the prepared folder (holding `manifest.json`).
        band_names: bands to return, a subset of the prepared bands, in this order (default: all of them).
        crop_size, processor, random_crop, seed, samples_per_item: as for every pretraining reader
            (:class:`~degas_hf.data.timeseries_folder.RasterSampleDataset`).
        validate: "auto"/"quick" check that every shard exists with the size of the manifest; "full" also checks
            every shard's SHA-256 (reads the whole dataset); "none" skips both. Every read also checks the array
            header at the indexed offset, so a damaged shard raises a DataError naming it.
        output: "normalized" or "raw" (`raw_values` in the stored dtype, normalised on the accelerator by
            :class:`~degas_hf.data.timeseries_folder.DeviceNormalizer`; what `degas-hf pretrain` uses).
    """

    supports_raw = True

    def __init__(self, root: str | os.PathLike, band_names: Sequence[str] | None = None, crop_size: int | None = 224,
                 processor=None, random_crop: bool = True, seed: int = 0, samples_per_item: int = 1,
                 validate: str = "auto", output: str = "normalized"):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        stored = [canonical_band_name(b) for b in self.manifest["band_names"]]
        band_names = stored if band_names is None else band_names
        super().__init__(band_names, crop_size, processor, random_crop, seed, samples_per_item, output=output)
        missing = [b for b in self.band_names if b not in stored]
        if missing:
            raise DataError(f"{self.root} holds bands {stored}; missing band(s) {missing} (prepare them with "
                            "`degas-hf prepare-ssl4eo --bands ...`)")
        self.channels = [stored.index(b) for b in self.band_names]
        self.all_channels = self.channels == list(range(len(stored)))
        self.sample_shape = tuple(int(x) for x in self.manifest["sample_shape"])  # (T, C, H, W)
        self.dtype = np.dtype(self.manifest["dtype"])
        self.raw_nodata = self.manifest.get("nodata")
        self.dn_offset = self.manifest.get("dn_offset", 0) or 0
        self.modality = self.manifest.get("modality")
        self.shards = self.manifest["shards"]
        if validate not in ("auto", "full", "quick", "none"):
            raise DataError(f"validate must be auto, full, quick or none, got {validate!r}")
        if validate != "none":
            for entry in self.shards:
                _check_shard(self.root, entry, checksums=validate == "full")
        self._items = [(si, off) for si, entry in enumerate(self.shards) for off in entry["offsets"]]
        if not self._items:
            raise DataError(f"{self.root} holds no samples")
        self._maps: dict[int, mmap.mmap] = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_maps"] = {}  # every worker maps the shards again
        return state

    def shard_ranges(self) -> list[tuple[int, int]]:
        """`[start, stop)` sample-index ranges of each shard (for :class:`ShardedBatchSampler`'s locality)."""
        out, start = [], 0
        for entry in self.shards:
            stop = start + len(entry["offsets"]) * self.samples_per_item
            out.append((start, stop))
            start = stop
        return out

    def _map(self, si: int) -> mmap.mmap:
        if si not in self._maps:
            path = self.root / self.shards[si]["name"]
            try:
                with open(path, "rb") as f:
                    self._maps[si] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as err:
                raise DataError(f"cannot open shard {path}: {err}") from err
        return self._maps[si]

    def num_items(self) -> int:
        return len(self._items)

    def item_shape(self, item: int) -> tuple[int, int]:
        return self.sample_shape[2], self.sample_shape[3]

    def describe_item(self, item: int) -> str:
        si, off = self._items[item]
        entry = self.shards[si]
        return f"{self.root / entry['name']} sample {entry['keys'][entry['offsets'].index(off)]}"

    def sample_meta(self, item: int) -> dict:
        si, off = self._items[item]
        entry = self.shards[si]
        return entry["meta"][entry["offsets"].index(off)]

    def read_item_raw(self, item: int, rng: np.random.Generator, window: tuple[int, int, int, int],
                      out: np.ndarray | None = None) -> np.ndarray:
        si, off = self._items[item]
        mm = self._map(si)
        r0, c0, h, w = window
        try:
            # the array header sits just before the data (64-byte aligned): check its magic, so an index that does
            # not match the shard (replaced, damaged) is an error naming it, not garbage pixels
            if mm.rfind(_NPY_MAGIC, max(0, off - 4096), off) < 0:
                raise ValueError("no array header at the indexed offset")
            sample = np.ndarray(self.sample_shape, dtype=self.dtype, buffer=mm, offset=off)
        except (TypeError, ValueError) as err:
            raise DataError(f"shard {self.root / self.shards[si]['name']} is damaged at sample "
                            f"{self.describe_item(item)}: {err}") from err
        view = sample[:, :, r0:r0 + h, c0:c0 + w]  # no copy yet: the mapped pages of the crop only
        if out is None:
            out = np.empty((view.shape[0], len(self.channels), h, w), dtype=self.dtype)
        if self.all_channels:
            np.copyto(out, view)
        else:
            np.take(view, self.channels, axis=1, out=out)
        return out


# ---------------------------------------------------------------------------------------------------------------
# Preparation of SSL4EO-S12
# ---------------------------------------------------------------------------------------------------------------


def _source_kind(src: Path) -> str:
    if src.is_file() and src.name.endswith(".zarr.zip"):
        return "ssl4eo_s12_zarr"
    if not src.is_dir():
        raise PrepareError(f"source {src} does not exist")
    if any((src / m).is_dir() for m in ("s2a", "s2c", "s1")):
        return "ssl4eo_s12"
    subdirs = [p for p in src.iterdir() if p.is_dir()][:3]
    if subdirs and all(p.name.isdigit() for p in subdirs):
        return "ssl4eo_s12"  # a modality folder itself: <7-digit id>/<season>/<BAND>.tif
    if next(src.rglob("*.zarr.zip"), None) is not None:
        return "ssl4eo_s12_zarr"
    raise PrepareError(f"source {src} is not SSL4EO-S12: expected the raw release ({src}/s2a/<7-digit id>/<season>/"
                       f"<BAND>.tif) or the v1.1 zarr chunks (*.zarr.zip)")


_READER = None


def _make_reader(settings: dict):
    from degas_hf.data.ssl4eo import SSL4EOS12Dataset, SSL4EOS12ZarrDataset

    if settings["source_format"] == "ssl4eo_s12":
        return SSL4EOS12Dataset(settings["source"], modality=settings["modality"], band_names=settings["band_names"],
                                crop_size=None, validate="none", grid_size=settings.get("grid_size"), output="raw")
    return SSL4EOS12ZarrDataset(settings["source"], band_names=settings["band_names"], modality=settings["modality"],
                                crop_size=None, split=settings.get("split"), dn_offset=settings.get("dn_offset"),
                                output="raw")


def _init_worker(settings: dict) -> None:
    global _READER
    _READER = _make_reader(settings)


def _read_sample(reader, item: int, shape: tuple[int, int]) -> tuple[str, np.ndarray, dict]:
    window = (0, 0, *shape)
    if hasattr(reader, "locations"):  # raw GeoTIFF release
        key = reader.locations[item]
        meta = {"location": key, "dates": reader.season_dates(item)}
        if reader.item_shape(item) != shape and reader.grid_size is None:
            raise DataError(f"{reader.describe_item(item)}: grid {reader.item_shape(item)}, the others have {shape}")
    else:
        fi, s = reader._index[item]
        key = f"{Path(reader.files[fi]).name.removesuffix('.zarr.zip')}_{s:03d}"
        meta = {"file": Path(reader.files[fi]).name, "sample": s}
    array = reader.read_item_raw(item, None, window)
    if array.shape[-2:] != tuple(shape):
        raise DataError(f"{reader.describe_item(item)}: grid {array.shape[-2:]}, the others have {tuple(shape)}")
    return key, array, meta


def _build_shard(task: tuple[int, list[int], str, tuple[int, int], bool]) -> dict:
    """Read the samples of one shard and write it; returns its entry plus the skipped items and their reasons."""
    index, items, dst, shape, skip_bad = task
    skipped = []

    def samples():
        for item in items:
            try:
                sample = _read_sample(_READER, item, shape)
            except DataError as err:
                if not skip_bad:
                    raise
                skipped.append({"item": _READER.describe_item(item), "reason": str(err)})
                continue
            yield sample

    return write_shard(Path(dst) / f"shard-{index:06d}.tar", samples(), extra={"skipped": skipped})


def _check_destination(dst: Path, settings: dict) -> None:
    """Refuse a destination that holds anything but an earlier run of this very preparation."""
    if not dst.exists():
        return
    if not dst.is_dir():
        raise PrepareError(f"destination {dst} exists and is not a folder")
    existing = dst / SETTINGS
    if existing.is_file():
        try:
            old = json.loads(existing.read_text())
        except (OSError, ValueError):
            old = None
        if old != settings:
            what = {k: (old or {}).get(k) for k in ("source", "modality", "band_names", "split", "grid_size",
                                                    "samples_per_shard")}
            raise PrepareError(f"destination {dst} already holds another prepared dataset ({what}); choose an empty "
                               "folder (or repeat that preparation's exact command to resume it)")
        return
    if any(dst.iterdir()):
        raise PrepareError(f"destination {dst} is not empty and holds no prepared dataset; choose an empty folder")


def prepare_ssl4eo(src: str | os.PathLike, dst: str | os.PathLike, band_names: Sequence[str] | None = None,
                   modality: str = "s2a", split: str | None = None, workers: int = 0, samples_per_shard: int = 128,
                   grid_size: int | None = None, skip_bad: bool = True, dn_offset: int | None = None,
                   progress: bool = True, limit: int | None = None) -> dict[str, Any]:
    """Prepare SSL4EO-S12 (raw GeoTIFF release or v1.1 zarr chunks) in `src` into the prepared format in `dst`.

    Resumable: complete shards of an earlier, interrupted run with the same arguments are kept (checked against
    their SHA-256) and the rest is written. Locations with missing bands or seasons (or unreadable files) are
    skipped and counted when `skip_bad` (listed in the manifest with the reason), else the run stops at the
    first. `limit` prepares only the first `limit` samples (trials). Returns the manifest (with `samples`,
    `skipped`, `shards`)."""
    from degas_hf.data.ssl4eo import DEFAULT_BANDS, SSL4EO_BANDS, _modality

    src, dst = Path(src).resolve(), Path(dst).resolve()
    kind = _source_kind(src)
    mod = _modality(modality)
    bands = [canonical_band_name(b) for b in (band_names or DEFAULT_BANDS[mod])]
    unknown = [b for b in bands if b not in SSL4EO_BANDS[mod]]
    if unknown:
        raise PrepareError(f"band(s) {unknown} do not exist in SSL4EO-S12 {mod} (bands: {list(SSL4EO_BANDS[mod])})")
    if samples_per_shard < 1:
        raise PrepareError(f"samples per shard must be >= 1, got {samples_per_shard}")
    settings = {"format": FORMAT, "version": FORMAT_VERSION, "source": str(src), "source_format": kind,
                "modality": mod, "band_names": bands, "split": split, "grid_size": grid_size,
                "samples_per_shard": int(samples_per_shard), "skip_bad": bool(skip_bad), "dn_offset": dn_offset,
                "limit": limit}
    _check_destination(dst, settings)
    try:
        reader = _make_reader(settings)
    except DataError as err:
        raise PrepareError(f"source {src}: {err}") from err
    n_items = reader.num_items() if limit is None else min(int(limit), reader.num_items())
    # the grid of every sample: the one asked for, else the first readable location's (the 10 m grid)
    shape = None
    for item in range(n_items):
        try:
            shape = tuple(reader.item_shape(item))  # raw layout: also checks the location's seasons and bands
            break
        except DataError:
            continue
    if shape is None:
        raise PrepareError(f"source {src}: no readable sample among {n_items}")
    dst.mkdir(parents=True, exist_ok=True)
    if (dst / MANIFEST).is_file():
        manifest = verify_prepared(dst, checksums=False)
        manifest["already_complete"] = True
        return manifest
    _write_json_atomic(dst / SETTINGS, settings)
    for leftover in dst.glob(".shard-*.tmp"):
        leftover.unlink()

    tasks, done = [], {}
    for index, start in enumerate(range(0, n_items, samples_per_shard)):
        items = list(range(start, min(start + samples_per_shard, n_items)))
        sidecar, tar = dst / f"shard-{index:06d}.json", dst / f"shard-{index:06d}.tar"
        if sidecar.is_file() and tar.is_file():
            try:
                entry = json.loads(sidecar.read_text())
                _check_shard(dst, entry, checksums=False)  # verified when written, then renamed
                done[index] = entry
                continue
            except (DataError, ValueError, KeyError, OSError):
                pass  # redo it
        tasks.append((index, items, str(dst), shape, skip_bad))

    from tqdm.auto import tqdm

    bar = tqdm(total=n_items, initial=sum(len(e["keys"]) + len(e.get("skipped", [])) for e in done.values()),
               desc=f"prepare {src.name} -> {dst.name}", unit="sample", disable=not progress, dynamic_ncols=True)
    t0 = time.time()
    try:
        if workers and workers > 0 and len(tasks) > 1:
            import multiprocessing

            ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
            with ctx.Pool(int(workers), initializer=_init_worker, initargs=(settings,)) as pool:
                for entry in pool.imap_unordered(_build_shard, tasks):
                    done[int(entry["name"][6:12])] = entry
                    bar.update(len(entry["keys"]) + len(entry["skipped"]))
        else:
            global _READER
            _READER = reader
            for task in tasks:
                entry = _build_shard(task)
                done[task[0]] = entry
                bar.update(len(entry["keys"]) + len(entry["skipped"]))
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise PrepareError(f"no space left on device while writing to {dst}: {len(done)} complete shard(s) are "
                               "kept and valid; free some space and run the same command again to resume") from None
        raise PrepareError(f"cannot write to {dst}: {err.strerror or err}") from None
    finally:
        bar.close()
    shards = [done[i] for i in sorted(done)]
    skipped = [s for e in shards for s in e.pop("skipped", [])]
    for e in shards:
        e.pop("skipped", None)
    layouts = {(tuple(e["shape"]), e["dtype"]) for e in shards if e["keys"]}
    if len(layouts) > 1:
        raise PrepareError(f"{dst}: shards hold samples of different shapes or dtypes {sorted(layouts)}")
    n_samples = sum(len(e["keys"]) for e in shards)
    if n_samples == 0 or not layouts:
        raise PrepareError(f"source {src}: every one of the {n_items} samples was skipped; first reason: "
                           f"{skipped[0]['reason'] if skipped else '?'}")
    normalization = {"s2a": "ssl4eo-s12-l2a", "s2c": "ssl4eo-s12-l1c", "s1": "ssl4eo-s12-s1"}[mod]
    if kind == "ssl4eo_s12_zarr" and mod != "s1":
        normalization = {"s2a": "ssl4eo-s12-v1.1-l2a", "s2c": "ssl4eo-s12-v1.1-l1c"}[mod]
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "dataset": "SSL4EO-S12", "source": str(src),
        "source_format": kind, "modality": mod, "band_names": bands,
        "sample_shape": list(next(iter(layouts))[0]), "dtype": next(iter(layouts))[1],
        "nodata": reader.raw_nodata, "dn_offset": reader.dn_offset, "normalization": normalization,
        "samples": n_samples, "skipped": len(skipped), "skipped_items": skipped, "shards": shards,
        "bytes": sum(e["size"] for e in shards), "seconds": round(time.time() - t0, 1),
    }
    _write_json_atomic(dst / MANIFEST, manifest)
    return manifest
