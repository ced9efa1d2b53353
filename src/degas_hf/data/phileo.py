"""PhilEO Bench downstream patches (Fibaek et al. 2024; HF `PhilEO-community/PhilEO-downstream`, MIT).

On-disk layout (the extracted `downstream_dataset_patches_np*` zips)::

    <root>/<region>_<tile>_{train|val|test}_s2.npy              (N, 128, 128, 10) channels-last, S2 L2A DN
    <root>/<region>_<tile>_{train|val|test}_label_lc.npy        (N, 128, 128, 1) ESA WorldCover codes
    <root>/<region>_<tile>_{train|val|test}_label_building.npy  (N, 128, 128, 1) float, building cover 0-100
    <root>/<region>_<tile>_{train|val|test}_label_roads.npy     (N, 128, 128, 1) float, road cover 0-100

The 10 channels are in PhilEO's own order, B08 before the red edge: B02, B03, B04, B08, B05, B06, B07, B8A, B11,
B12. Land cover codes {10, 20, ..., 90, 95, 100} map to classes 0..10; 0 (no data) is ignored. Building and roads
are regression targets stored in % cover (0-100); by default they are returned as fractions (`target_scale=0.01`,
0-1), which keeps the MSE on the scale PhilEO Bench reports; `target_scale=1.0` keeps percent. Files whose label file is
missing are skipped, as PhilEO Bench does (roads exist for 8 regions only).

Regions. Files are named by sub-region (20: `denmark-1`, `isreal-2`, `tanzania-3`, ... spelled as the bench spells
them); PhilEO Bench groups them into 6 region buckets (`PHILEO_REGION_BUCKETS`: `europe` = europe, denmark-1 and
denmark-2; `east-africa`; `northwest-africa`; `north-america`; `south-america`; `japan`). `regions=` takes bucket names
(a bucket selects all its sub-regions) and sub-region names (`europe` is the bucket).

n-shot protocol (phileo-bench `utils/data_protocol.py`, `protocol_fewshot_memmapped`, as its `training_script.py`
runs it): `n_shot=n` keeps n training patches per region bucket (so at most 6n in all), drawn from the bucket's
training files taken sub-region by sub-region in the bucket's order and sorted by name within one, concatenated; for
`split="val"`, ceil(n * val_ratio) per bucket from the validation files of the same tiles. The draw is the bench's:
`random.Random(12345).sample(range(N), n)`; for building and roads the bench walks a `random.Random(12345)`
permutation and keeps a patch when its mean label exceeds 0.005 (0.01 for validation) or, otherwise, with
probability 1/4 (`random.Random(156)`), so the same data gives the same patches as the bench. `indices=` takes the
bench's fixed selections (`indices/indices_<date>[_128_10m]_<label>_<n>.json`, or the folder holding them: there,
the one named for the patches' size when several match), which list the patches per bucket; their recorded bucket sizes must match the data. A bucket with fewer patches than asked
keeps all of them (as the bench does) and a warning gives the counts.

Test split: every sub-region but tanzania-1, which the bench's test list leaves out (it is spelled `tanzanipa-1`
there, so no file matches). `protocol` (a dict) records all of this for `results.json`.
"""

from __future__ import annotations

import json
import math
import random
import re
import warnings
from pathlib import Path

import numpy as np

from .base import CLASSIFICATION, IGNORE_INDEX, REGRESSION, GeoSegmentationDataset, Sample, check_label_values

PHILEO_BANDS = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12")
WORLDCOVER_CODES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)
WORLDCOVER_CLASSES = (
    "Tree cover", "Shrubland", "Grassland", "Cropland", "Built-up", "Bare / sparse vegetation", "Snow and ice",
    "Permanent water bodies", "Herbaceous wetland", "Mangroves", "Moss and lichen",
)
PHILEO_TASKS = ("lc", "building", "roads")
# SSL4EO-S12 L2A statistics (DN), by band name.
_STATS = {
    "B02": (884.297, 1155.152), "B03": (1144.162, 1183.629), "B04": (1297.473, 1368.114), "B05": (1624.910, 1370.265),
    "B06": (2194.642, 1355.554), "B07": (2422.212, 1416.515), "B08": (2517.761, 1474.789), "B8A": (2581.647, 1439.309),
    "B11": (2368.512, 1455.521), "B12": (1805.068, 1343.484),
}
_FILE_PATTERN = re.compile(r"^(?P<region>.+?)_(?P<tile>[^_]+)_(?P<split>train|val|test)_s2\.npy$")

#: PhilEO Bench's region buckets (`REGIONS_BUCKETS` of phileo-bench utils/data_protocol.py): n-shot draws n per bucket.
PHILEO_REGION_BUCKETS: dict[str, tuple[str, ...]] = {
    "europe": ("europe", "denmark-1", "denmark-2"),
    "east-africa": ("east-africa", "tanzania-1", "tanzania-2", "tanzania-3", "tanzania-4", "tanzania-5", "uganda-1"),
    "northwest-africa": ("eq-guinea", "ghana-1", "egypt-1", "isreal-1", "isreal-2", "nigeria", "senegal"),
    "north-america": ("north-america",),
    "south-america": ("south-america",),
    "japan": ("japan",),
}
#: The 20 sub-regions of the file names, spelled as the bench spells them.
PHILEO_SUBREGIONS = tuple(sub for subs in PHILEO_REGION_BUCKETS.values() for sub in subs)
#: Sub-regions the bench's test set leaves out.
PHILEO_TEST_EXCLUDED = ("tanzania-1",)
#: Seeds of the bench's n-shot draw and of its "representative" building / roads selection.
PHILEO_NSHOT_SEED = 12345
_REPRESENTATIVE_SEED = 156
_BUCKET_OF = {sub: bucket for bucket, subs in PHILEO_REGION_BUCKETS.items() for sub in subs}
_INDICES_NAME = re.compile(r"^indices_.*_(?P<label>[a-z]+)_(?P<n>\d+)\.json$")


class PhilEOBench(GeoSegmentationDataset):
    """PhilEO Bench patches: land cover (11 classes), building density or road density (regression).

    Args:
        root: folder of the npy patches (see the module docstring).
        split (`str`): `"train"`, `"val"` or `"test"`.
        label (`str`, defaults to `"lc"`): `"lc"`, `"building"` or `"roads"`.
        n_shot (`int`, *optional*): n patches per PhilEO Bench region bucket (training split; validation gets
            ceil(n * val_ratio) per bucket), drawn as the bench draws them (module docstring).
        val_ratio (`float`, defaults to 0.2): see `n_shot`.
        regions (`Sequence[str]`, *optional*): keep only these bench regions (`"europe"`, `"northwest-africa"`, ...)
            or sub-regions (`"denmark-1"`, ...).
        indices (`str` or `Path`, *optional*): a PhilEO Bench index file (`indices_*_<label>_<n>.json`) or the folder
            holding them: the fixed n-shot selection instead of a draw (training and validation splits).
        n_shot_seed (`int`, defaults to 12345, the bench's): seed of the n-shot draw.
        target_scale (`float`, defaults to 0.01): multiplies regression targets (percent -> fraction; 1.0 keeps %).
        **kwargs: see `GeoSegmentationDataset`.

    Attributes:
        protocol (`dict`): how the samples were chosen (split, label, n-shot, selection, patches per region bucket,
            test regions), JSON-serialisable, for `results.json`.
    """

    dataset_name = "PhilEO Bench"
    all_bands = PHILEO_BANDS
    num_frames = 1
    splits = ("train", "val", "test")
    normalization_preset = "ssl4eo-s12-l2a"
    band_stats = _STATS

    def __init__(self, root, split: str = "train", *, label: str = "lc", n_shot: int | None = None,
                 val_ratio: float = 0.2, regions=None, indices=None, n_shot_seed: int = PHILEO_NSHOT_SEED,
                 target_scale: float = 0.01, **kwargs):
        if label not in PHILEO_TASKS:
            raise ValueError(f"PhilEO Bench: label must be one of {PHILEO_TASKS}, got {label!r}")
        self.label_name = label
        self.task = {"lc": "phileo_lc", "building": "phileo_building", "roads": "phileo_roads"}[label]
        if label == "lc":
            self.problem_type = CLASSIFICATION
            self.id2label = dict(enumerate(WORLDCOVER_CLASSES))
        else:
            self.problem_type = REGRESSION
            self.id2label = {0: f"{label} density"}
        if n_shot is not None and (isinstance(n_shot, bool) or int(n_shot) != n_shot or n_shot < 1):
            raise ValueError(f"PhilEO Bench: n_shot must be a positive integer, got {n_shot!r}")
        if not 0.0 < float(val_ratio) <= 1.0:
            raise ValueError(f"PhilEO Bench: val_ratio must be in (0, 1], got {val_ratio!r}")
        self.n_shot = None if n_shot is None else int(n_shot)
        self.val_ratio = float(val_ratio)
        self.regions = tuple(regions) if regions else None
        self.indices = Path(indices) if indices is not None else None
        self.n_shot_seed = int(n_shot_seed)
        self.target_scale = float(target_scale)
        self._arrays: dict[Path, np.ndarray] = {}
        self.protocol: dict = {}
        super().__init__(root, split, **kwargs)

    def _array(self, path: Path) -> np.ndarray:
        if path not in self._arrays:
            try:
                self._arrays[path] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise ValueError(f"Cannot read npy file {path}: {err}") from err
        return self._arrays[path]

    # ------------------------------------------------------------------------------------------------ regions
    def _files_by_subregion(self, split: str) -> dict[str, list[Path]]:
        """`<sub-region>_<tile>_<split>_s2.npy` files per sub-region, sorted by name (the bench's glob order)."""
        found: dict[str, list[Path]] = {}
        for image in sorted(self.root.glob(f"*_{split}_s2.npy"), key=lambda p: p.name):
            match = _FILE_PATTERN.match(image.name)
            if match is not None:
                found.setdefault(match["region"], []).append(image)
        return found

    def _selected_subregions(self, present) -> set[str] | None:
        """The sub-regions `regions=` selects (None: all); unknown names raise."""
        if self.regions is None:
            return None
        selected = set()
        for name in self.regions:
            if name in PHILEO_REGION_BUCKETS:
                selected.update(PHILEO_REGION_BUCKETS[name])
            elif name in PHILEO_SUBREGIONS or name in present:
                selected.add(name)
            else:
                raise ValueError(
                    f"PhilEO Bench: unknown region {name!r}; expected a bench region {list(PHILEO_REGION_BUCKETS)} "
                    f"or a sub-region {list(PHILEO_SUBREGIONS)}"
                )
        return selected

    @staticmethod
    def _bucket(subregion: str) -> str:
        """The bench's region bucket of a sub-region; a sub-region the bench does not know is its own bucket."""
        return _BUCKET_OF.get(subregion, subregion)

    def _label_path(self, image: Path) -> Path:
        return image.with_name(image.name.replace("_s2.npy", f"_label_{self.label_name}.npy"))

    def _rows(self, image: Path, label: Path) -> list[Sample]:
        x, y = self._array(image), self._array(label)
        self._check_pair(image, x, label, y)
        return [Sample(key=f"{image.stem}[{row}]", image=image, label=label, extra={"row": row}) for row in range(len(x))]

    # ------------------------------------------------------------------------------------------------ samples
    def _find_samples(self) -> list[Sample]:
        files = self._files_by_subregion(self.split)
        selected = self._selected_subregions(set(files) | set(self._files_by_subregion("train")))
        self.protocol = {
            "benchmark": "PhilEO Bench", "split": self.split, "label": self.label_name,
            "n_shot": self.n_shot if self.split != "test" else None,
            "regions_requested": list(self.regions) if self.regions else None,
        }
        if self.split in ("train", "val") and (self.n_shot is not None or self.indices is not None):
            return self._few_shot_samples(selected)
        excluded = PHILEO_TEST_EXCLUDED if self.split == "test" else ()
        by_bucket: dict[str, list[str]] = {}
        samples: list[Sample] = []
        for sub in sorted(files):
            if (selected is not None and sub not in selected) or sub in excluded:
                continue
            for image in files[sub]:
                label = self._label_path(image)
                if label.is_file():  # PhilEO Bench skips files without this label (sanity_check_labels_exist)
                    samples.extend(self._rows(image, label))
                    by_bucket.setdefault(self._bucket(sub), []).append(sub)
        self.protocol.update(
            selection="all patches",
            regions={bucket: sorted(set(subs)) for bucket, subs in sorted(by_bucket.items())},
            excluded_regions=list(excluded),
            samples=len(samples),
        )
        return samples

    def _bucket_files(self, selected: set[str] | None) -> dict[str, list[Path]]:
        """Training s2 files per bench bucket, in the bench's order: sub-regions in bucket order, names sorted."""
        files = self._files_by_subregion("train")
        buckets: dict[str, list[Path]] = {}
        known = [(bucket, sub) for bucket, subs in PHILEO_REGION_BUCKETS.items() for sub in subs]
        extra = [(sub, sub) for sub in sorted(files) if sub not in _BUCKET_OF]
        for bucket, sub in known + extra:
            if sub in files and (selected is None or sub in selected):
                buckets.setdefault(bucket, []).extend(files[sub])
        return buckets

    def _concatenated(self, images: list[Path]) -> list[Sample]:
        """The rows of the files whose label exists, concatenated (the bench's MultiArray of a bucket)."""
        rows: list[Sample] = []
        for image in images:
            label = self._label_path(image)
            if label.is_file():
                if not image.is_file():
                    raise ValueError(f"PhilEO Bench: {label} has no image file {image.name} next to it")
                rows.extend(self._rows(image, label))
        return rows

    def _few_shot_samples(self, selected: set[str] | None) -> list[Sample]:
        fixed = self._load_indices() if self.indices is not None else None
        per_bucket_val = None if self.n_shot is None else math.ceil(self.n_shot * self.val_ratio)
        samples: list[Sample] = []
        counts, regions, short = {}, {}, []
        for bucket, train_images in self._bucket_files(selected).items():
            train_rows = self._concatenated(train_images)
            if not train_rows:
                continue  # the bench drops buckets without labelled training files (check_region_validity)
            val_rows = self._concatenated([p.with_name(p.name.replace("_train_s2.npy", "_val_s2.npy")) for p in train_images])
            if fixed is not None:
                train_idx, val_idx = self._fixed_selection(fixed, bucket, len(train_rows), len(val_rows))
            else:
                train_idx, val_idx = self._bench_draw(train_rows, val_rows)
            rows, picked, wanted = (
                (train_rows, train_idx, self.n_shot) if self.split == "train" else (val_rows, val_idx, per_bucket_val)
            )
            if wanted is not None and len(rows) < wanted:
                short.append(f"{bucket} ({len(rows)} of {wanted})")
            samples.extend(rows[i] for i in picked)
            counts[bucket] = len(picked)
            regions[bucket] = sorted({_FILE_PATTERN.match(p.name)["region"] for p in train_images})
        if short:
            warnings.warn(
                f"PhilEO Bench n_shot={self.n_shot} ({self.split}): fewer {self.split} patches than asked in "
                f"{', '.join(short)}; all of them are used, as the bench does",
                stacklevel=5,  # the caller of PhilEOBench(...)
            )
        self.protocol.update(
            selection=(f"indices file {self.indices.name}" if fixed is not None else
                       f"PhilEO Bench draw (random.Random({self.n_shot_seed}) per region bucket)"),
            n_shot_seed=None if fixed is not None else self.n_shot_seed,
            val_ratio=self.val_ratio,
            regions=regions,
            patches_per_region=counts,
            samples=len(samples),
        )
        return samples

    def _bench_draw(self, train_rows: list[Sample], val_rows: list[Sample]) -> tuple[list[int], list[int]]:
        """The bench's n-shot draw for one bucket: indices into its concatenated training and validation rows."""
        n_train = min(self.n_shot, len(train_rows))
        n_val = min(math.ceil(self.n_shot * self.val_ratio), len(val_rows))
        if self.problem_type != REGRESSION:
            train = random.Random(self.n_shot_seed).sample(range(len(train_rows)), n_train)
            val = random.Random(self.n_shot_seed).sample(range(len(val_rows)), n_val)
            return train, val
        # Building and roads: the bench walks a permutation and prefers patches whose mean label (raw %) is above a
        # threshold, taking the others with probability 1/4; one coin generator serves training, then validation.
        coin = random.Random(_REPRESENTATIVE_SEED)
        picked = []
        for rows, wanted, threshold in ((train_rows, n_train, 0.005), (val_rows, n_val, 0.01)):
            chosen: list[int] = []
            for i in random.Random(self.n_shot_seed).sample(range(len(rows)), len(rows)):
                if len(chosen) == wanted:
                    break
                if float(np.mean(self._load_raw_label(rows[i]))) > threshold or coin.random() > 0.75:
                    chosen.append(i)
            picked.append(chosen)
        return picked[0], picked[1]

    # ------------------------------------------------------------------------------------------------ index files
    def _load_indices(self) -> dict:
        path = self.indices
        if path.is_dir():
            pattern = f"indices_*_{self.label_name}_{self.n_shot if self.n_shot is not None else '*'}.json"
            found = sorted(path.glob(pattern))
            if len(found) > 1:  # the bench names its selections by patch size too (`_128_10m_`): take that one
                sized = [p for p in found if f"_{self._patch_size()}_" in p.name]
                found = sized if len(sized) == 1 else found
            if len(found) != 1:
                raise ValueError(
                    f"PhilEO Bench: expected one index file {pattern} in {path}, found "
                    f"{[p.name for p in found] or 'none'}; pass the file itself"
                )
            path = found[0]
        if not path.is_file():
            raise ValueError(f"PhilEO Bench: index file {path} not found")
        match = _INDICES_NAME.match(path.name)
        if match and match["label"] != self.label_name:
            raise ValueError(f"PhilEO Bench: {path.name} is an index file for label {match['label']!r}, not {self.label_name!r}")
        if match and self.n_shot is not None and int(match["n"]) != self.n_shot:
            raise ValueError(f"PhilEO Bench: {path.name} selects n_shot={match['n']}, but n_shot={self.n_shot} was asked")
        try:
            fixed = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"PhilEO Bench: cannot read index file {path}: {err}") from err
        keys = ("train_indices", "val_indices", "length_multi_array_train", "length_multi_array_val")
        if not isinstance(fixed, dict) or not all(isinstance(v, dict) and all(k in v for k in keys) for v in fixed.values()):
            raise ValueError(f"PhilEO Bench: {path} is not a PhilEO Bench index file (region -> {{{', '.join(keys)}}})")
        self.indices = path
        if self.n_shot is None and match:
            self.n_shot = int(match["n"])
            self.protocol["n_shot"] = self.n_shot
        return fixed

    def _patch_size(self) -> int | None:
        """Height of the training patches (the first training file's), or None when there is none."""
        for images in self._files_by_subregion("train").values():
            return int(self._array(images[0]).shape[1])
        return None

    def _fixed_selection(self, fixed: dict, bucket: str, num_train: int, num_val: int) -> tuple[list[int], list[int]]:
        if bucket not in fixed:
            raise ValueError(f"PhilEO Bench: index file {self.indices.name} has no region {bucket!r}; it has {sorted(fixed)}")
        entry = fixed[bucket]
        for split, expected, found in (("train", entry["length_multi_array_train"], num_train),
                                       ("val", entry["length_multi_array_val"], num_val)):
            if int(expected) != found:
                raise ValueError(
                    f"PhilEO Bench: index file {self.indices.name} was made for {expected} {split} patches in region "
                    f"{bucket!r}, found {found} under {self.root} (the data or the region selection differs from the "
                    "bench's)"
                )
        picked = []
        for split, values, size in (("train", entry["train_indices"], num_train), ("val", entry["val_indices"], num_val)):
            values = [int(i) for i in values]
            bad = [i for i in values if not 0 <= i < size]
            if bad:
                raise ValueError(
                    f"PhilEO Bench: index file {self.indices.name} lists {split} patches {bad[:5]} outside 0..{size - 1} "
                    f"for region {bucket!r}"
                )
            picked.append(values)
        return picked[0], picked[1]

    def _check_pair(self, image_path: Path, x: np.ndarray, label_path: Path, y: np.ndarray) -> None:
        if x.ndim != 4 or x.shape[-1] != len(PHILEO_BANDS):
            raise ValueError(f"{image_path}: expected (N, H, W, {len(PHILEO_BANDS)}) channels-last patches, found {x.shape}")
        y_shape = y.shape[:3] if y.ndim == 4 else y.shape
        if y.ndim not in (3, 4) or (y.ndim == 4 and y.shape[-1] != 1) or tuple(y_shape) != tuple(x.shape[:3]):
            raise ValueError(
                f"Image and label sizes differ: {image_path} has {x.shape}, {label_path} has {y.shape}"
            )

    def _check_headers(self) -> None:
        pass  # shapes were checked per file in _find_samples

    def _load_raw_label(self, sample: Sample) -> np.ndarray:
        y = np.asarray(self._array(sample.label)[sample.extra["row"]])
        return y[..., 0] if y.ndim == 3 else y

    def _load_sample(self, sample: Sample):
        x = np.asarray(self._array(sample.image)[sample.extra["row"]], dtype=np.float32)  # (H, W, C)
        image = x.transpose(2, 0, 1)[None]  # (1, C, H, W)
        valid = np.isfinite(image)
        return image, valid, self._load_raw_label(sample)

    def encode_labels(self, raw: np.ndarray, sample: Sample) -> np.ndarray:
        where = f"{sample.label} (patch {sample.extra['row']})"
        if self.problem_type == REGRESSION:
            labels = raw.astype(np.float32)
            finite = labels[np.isfinite(labels)]
            if finite.size and (finite.min() < 0 or finite.max() > 100):
                raise ValueError(f"{where}: {self.label_name} values must lie in [0, 100], found [{finite.min()}, {finite.max()}]")
            return labels * self.target_scale
        raw = raw.astype(np.int64)
        check_label_values(raw, (0, *WORLDCOVER_CODES), where)
        lut = np.full(max(WORLDCOVER_CODES) + 1, IGNORE_INDEX, dtype=np.int64)
        lut[list(WORLDCOVER_CODES)] = np.arange(len(WORLDCOVER_CODES))
        return lut[raw]
