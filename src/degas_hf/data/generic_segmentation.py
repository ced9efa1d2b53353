"""A folder of image GeoTIFFs with matching label GeoTIFFs, for users' own data.

Two layouts::

    <root>/<images>/<name>.tif     T x C bands, date-major (all bands of date 1, then date 2, ...)
    <root>/<labels>/<name>.tif     1 band, same size; the label file may carry a suffix (`label_suffix`)

or the pairs side by side in one folder (used when `<root>/<images>/` does not exist)::

    <root>/<name>_input.tif        the image (suffix `input_suffix`)
    <root>/<name>_label.tif        its label (suffix `label_suffix`, default `_label` in this layout)

Splits: `<root>/<split>.txt` (one <name> per line); a split without a file holds the images that no split file
names. Without any split file, a fixed-seed split holds out `holdout_fraction` of the images (at least one) as
`val` and `test` (the same images) and says so: evaluation never silently runs on training images. With
`split_dirs=True`, each split is a sub-folder `<root>/<split>/` in either layout.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .base import CLASSIFICATION, IGNORE_INDEX, REGRESSION, GeoSegmentationDataset, Sample, nodata_mask, read_geotiff

logger = logging.getLogger(__name__)

_TIF_SUFFIXES = (".tif", ".tiff")
_SPLITS = ("train", "val", "test")


class GeoTIFFSegmentationFolder(GeoSegmentationDataset):
    """Generic image/label GeoTIFF folder: classification (`num_classes`) or regression (`regression=True`).

    Args:
        root: see the module docstring.
        split (`str`, defaults to `"train"`): `"train"`, `"val"` or `"test"`.
        band_names (`Sequence[str]`): names of the bands of one date, in file order (e.g. `["B02", "B03", ...]`).
            When the image files' band descriptions name other bands, the reader refuses them (as `predict` does).
        num_frames (`int`, defaults to 1): dates per image; the file holds `num_frames * len(band_names)` bands.
        num_classes (`int`, *optional*): classes 0..num_classes-1 (classification). Label values listed in
            `label_ignore_values` are ignored; any other value raises.
        class_names (`Sequence[str]`, *optional*): names of the classes.
        regression (`bool`, defaults to `False`): float targets; values in `label_ignore_values` and NaN ignored.
        label_ignore_values (`Sequence[float]`, defaults to `(-1, 255)`): label values to ignore.
        image_nodata (`Sequence[float]`, *optional*): image nodata values (besides NaN and the file's tag).
        images, labels (`str`, defaults to `"images"`, `"labels"`): sub-folder names.
        label_suffix (`str`, *optional*): label file = `<name><label_suffix>.tif` (default `""` in the sub-folder
            layout, `"_label"` in the side-by-side layout).
        input_suffix (`str`, defaults to `"_input"`): image file = `<name><input_suffix>.tif` (side-by-side layout).
        split_dirs (`bool`, defaults to `False`): one sub-folder per split.
        holdout_fraction (`float`, defaults to 0.2): share of the images held out when there is no split file.
        split_seed (`int`, defaults to 0): seed of that split (fixed, so every split sees the same partition).
        band_stats (`dict[str, (mean, std)]`, *optional*): normalisation statistics in file units (otherwise the
            processor given, or per-band mean 0 / std 1; `degas-hf finetune` passes a processor that inherits
            the pretrained statistics and estimates the others, see `estimate_band_stats`).
        **kwargs: see `GeoSegmentationDataset`.
    """

    task = "generic"
    dataset_name = "GeoTIFF folder"

    def __init__(self, root, split: str = "train", *, band_names: Sequence[str], num_frames: int = 1,
                 num_classes: int | None = None, class_names: Sequence[str] | None = None, regression: bool = False,
                 label_ignore_values: Sequence[float] = (-1, 255), image_nodata: Sequence[float] = (),
                 images: str = "images", labels: str = "labels", label_suffix: str | None = None,
                 input_suffix: str = "_input", split_dirs: bool = False, holdout_fraction: float = 0.2,
                 split_seed: int = 0, band_stats: dict | None = None, **kwargs):
        if regression == (num_classes is not None):
            raise ValueError("GeoTIFF folder: give either a number of classes (classification) or regression, not "
                             f"{'both' if regression else 'neither'}")
        band_names = [str(b) for b in (band_names or [])]
        if not band_names:
            raise ValueError("GeoTIFF folder: the band names of one date are needed, found none")
        if len(set(band_names)) != len(band_names):
            raise ValueError(f"GeoTIFF folder: band names must be unique, found {band_names}")
        if isinstance(num_frames, bool) or int(num_frames) != num_frames or num_frames < 1:
            raise ValueError(f"GeoTIFF folder: the number of dates per image must be a positive integer, found {num_frames!r}")
        if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1):
            raise ValueError(f"GeoTIFF folder: the number of classes must be a positive integer, found {num_classes!r}")
        if not 0.0 < float(holdout_fraction) < 1.0:
            raise ValueError(f"GeoTIFF folder: holdout_fraction must be in (0, 1), found {holdout_fraction!r}")
        self.all_bands = tuple(band_names)
        self.num_frames = int(num_frames)
        self.problem_type = REGRESSION if regression else CLASSIFICATION
        if regression:
            self.id2label = {0: "target"}
        else:
            names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
            if len(names) != num_classes:
                raise ValueError(f"GeoTIFF folder: {len(names)} class names given for {num_classes} classes")
            self.id2label = dict(enumerate(names))
        self.label_ignore_values = tuple(label_ignore_values)
        self.image_nodata = tuple(image_nodata)
        self.images_dir, self.labels_dir, self.split_dirs = images, labels, split_dirs
        self.label_suffix_arg, self.input_suffix = label_suffix, input_suffix
        self.holdout_fraction, self.split_seed = float(holdout_fraction), int(split_seed)
        self.band_stats = dict(band_stats or {})
        self.automatic_split: dict | None = None  # set when the split was made here (no split files)
        super().__init__(root, split, **kwargs)
        self._check_band_descriptions()

    # ------------------------------------------------------------------------------------------------ layout
    def _base(self) -> Path:
        return self.root / self.split if self.split_dirs else self.root

    def _paired_layout(self, base: Path) -> bool:
        if (base / self.images_dir).is_dir():
            return False
        return base.is_dir() and any(
            p.name.lower().endswith(tuple(f"{self.input_suffix}{s}".lower() for s in _TIF_SUFFIXES)) for p in base.iterdir()
        )

    def _all_names(self, base: Path, paired: bool) -> list[str]:
        if paired:
            names = []
            for p in base.iterdir():
                if p.suffix.lower() in _TIF_SUFFIXES and p.stem.endswith(self.input_suffix):
                    names.append(p.stem[: len(p.stem) - len(self.input_suffix)])
            return sorted(names)
        return sorted(p.stem for p in (base / self.images_dir).iterdir() if p.suffix.lower() in _TIF_SUFFIXES)

    def _read_split_file(self, path: Path) -> list[str]:
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        names = [Path(n).stem if n.lower().endswith(_TIF_SUFFIXES) else n for n in names]
        return [n[: len(n) - len(self.input_suffix)] if self.input_suffix and n.endswith(self.input_suffix) else n
                for n in names]

    def _split_names(self, all_names: list[str]) -> tuple[list[str], str]:
        """The names of this split and where they came from (for error messages)."""
        files = {s: self.root / f"{s}.txt" for s in _SPLITS}
        present = {s: p for s, p in files.items() if p.is_file()}
        if self.split in present:
            return self._read_split_file(present[self.split]), str(present[self.split])
        if present:
            listed = {n for p in present.values() for n in self._read_split_file(p)}
            names = [n for n in all_names if n not in listed]
            if not names:
                raise ValueError(
                    f"GeoTIFF folder {self.root}: no {self.split}.txt, and every image is named by "
                    f"{', '.join(p.name for p in present.values())}; add {self.split}.txt (evaluating on training "
                    "images would report a fit, not an accuracy)"
                )
            return names, f"{self.root} (images in no split file)"
        # No split file at all: a fixed-seed hold-out, the same for every split built from this folder.
        if len(all_names) < 2:
            raise ValueError(
                f"GeoTIFF folder {self.root}: {len(all_names)} image(s) and no train.txt / val.txt: at least 2 are "
                "needed to hold one out for evaluation"
            )
        order = np.random.default_rng(self.split_seed).permutation(len(all_names))
        held = max(1, int(round(self.holdout_fraction * len(all_names))))
        held = min(held, len(all_names) - 1)
        held_out = sorted(all_names[i] for i in order[:held])
        training = sorted(all_names[i] for i in order[held:])
        self.automatic_split = {"seed": self.split_seed, "holdout_fraction": self.holdout_fraction,
                                "train": len(training), "held_out": held_out}
        if self.split == "train":
            logger.warning(
                "GeoTIFF folder %s has no split files: holding out %d of %d images (seed %d) as val and test: %s. "
                "Add train.txt / val.txt / test.txt to choose.", self.root, held, len(all_names), self.split_seed,
                ", ".join(held_out[:5]) + (" ..." if held > 5 else ""),
            )
        return (training if self.split == "train" else held_out), f"{self.root} (automatic split)"

    def _find_samples(self) -> list[Sample]:
        base = self._base()
        paired = self._paired_layout(base)
        self.paired_layout = paired
        if paired:
            image_dir = label_dir = base
            input_suffix = self.input_suffix
            label_suffix = "_label" if self.label_suffix_arg is None else self.label_suffix_arg
        else:
            image_dir, label_dir = base / self.images_dir, base / self.labels_dir
            input_suffix, label_suffix = "", (self.label_suffix_arg or "")
            for folder in (image_dir, label_dir):
                if not folder.is_dir():
                    raise ValueError(
                        f"GeoTIFF folder: {folder} not found (expected {base}/{self.images_dir}/ and "
                        f"{base}/{self.labels_dir}/, or <name>{self.input_suffix}.tif / <name>_label.tif pairs in {base})"
                    )
        self.label_suffix = label_suffix
        all_names = self._all_names(base, paired)
        if self.split_dirs:
            names, source = all_names, str(base)
        else:
            names, source = self._split_names(all_names)
        samples = []
        for name in names:
            image = self._find_file(image_dir, f"{name}{input_suffix}")
            label = self._find_file(label_dir, f"{name}{label_suffix}")
            for path, kind in ((image, image_dir / f"{name}{input_suffix}.tif"), (label, label_dir / f"{name}{label_suffix}.tif")):
                if path is None:
                    raise ValueError(f"{source} names {name!r} but the file {kind} does not exist")
            samples.append(Sample(key=name, image=image, label=label))
        return samples

    def _check_band_descriptions(self) -> None:
        """Refuse band names that the first image's band descriptions contradict (generic or missing
        descriptions such as "Band 1" say nothing and are accepted)."""
        import rasterio

        from ..models.st_swin_mae.image_processing_st_swin_mae import (
            _GENERIC_BAND_NAME,
            canonical_band_name,
            date_major_band_names,
        )

        with rasterio.open(self.samples[0].image_paths[0]) as src:
            descriptions = list(src.descriptions)
        names = date_major_band_names(descriptions, self.num_frames)
        if names is None or all(_GENERIC_BAND_NAME.match(n) for n in names):
            return
        given = [canonical_band_name(b) for b in self.all_bands]
        found = [canonical_band_name(n) for n in names]
        if given != found:
            raise ValueError(
                f"the band names {list(self.all_bands)} contradict the band descriptions of "
                f"{self.samples[0].image_paths[0]}: {names} (one date); give the names in file order, as the file "
                "describes them"
            )

    def estimate_band_stats(self, bands: Sequence[str] | None = None, max_samples: int = 64) -> dict[str, tuple[float, float]]:
        """Per-band mean and standard deviation in file units over the valid pixels of (up to `max_samples`
        evenly spaced) images of this split. A band without spread gets std 1."""
        bands = list(bands or self.all_bands)
        index = [self.all_bands.index(b) for b in bands]
        count = np.zeros(len(bands)); total = np.zeros(len(bands)); squares = np.zeros(len(bands))
        step = max(1, len(self.samples) // max(1, max_samples))
        for sample in self.samples[::step][:max_samples]:
            array, nodata = read_geotiff(sample.image_paths[0])
            frames = array.reshape(self.num_frames, len(self.all_bands), *array.shape[-2:])[:, index]
            frames = frames.astype(np.float64)
            valid = nodata_mask(frames, [nodata, *self.image_nodata])
            for c in range(len(bands)):
                values = frames[:, c][valid[:, c]]
                count[c] += values.size
                total[c] += values.sum()
                squares[c] += np.square(values).sum()
        stats = {}
        for c, band in enumerate(bands):
            if count[c] == 0:
                raise ValueError(f"GeoTIFF folder {self.root}: band {band} holds no valid pixel in the {self.split} images")
            mean = total[c] / count[c]
            std = float(np.sqrt(max(squares[c] / count[c] - mean * mean, 0.0)))
            stats[band] = (float(mean), std if std > 1e-6 * max(1.0, abs(mean)) else 1.0)
        return stats

    @staticmethod
    def _find_file(folder: Path, stem: str) -> Path | None:
        for suffix in (".tif", ".tiff", ".TIF", ".TIFF"):
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
        return None

    def encode_labels(self, raw: np.ndarray, sample: Sample) -> np.ndarray:
        ignore = np.isin(raw, self.label_ignore_values)
        if self.problem_type == REGRESSION:
            return np.where(ignore, np.nan, raw).astype(np.float32)
        if np.issubdtype(raw.dtype, np.floating):
            if not np.all(np.isnan(raw) | ignore | (raw == np.round(raw))):
                raise ValueError(f"{sample.label}: classification labels must be integers")
            ignore |= np.isnan(raw)
            raw = np.where(ignore, 0, raw)
        labels = raw.astype(np.int64)
        bad = (~ignore) & ((labels < 0) | (labels >= len(self.id2label)))
        if bad.any():
            values = sorted(set(np.unique(labels[bad]).tolist()))[:10]
            raise ValueError(
                f"{sample.label}: label values {values} outside the class range 0..{len(self.id2label) - 1} "
                f"(ignored values: {list(self.label_ignore_values)})"
            )
        return np.where(ignore, IGNORE_INDEX, labels)
