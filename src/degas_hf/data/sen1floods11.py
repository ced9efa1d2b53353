"""Sen1Floods11 hand-labelled flood chips (Bonafilia et al., CVPRW 2020; cloudtostreet/Sen1Floods11).

On-disk layout (v1.1, as in the `gs://sen1floods11` bucket)::

    <root>/data/flood_events/HandLabeled/S2Hand/<EVENT>_<CHIP>_S2Hand.tif      13 bands, int16, L1C TOA x 10000, nodata 0
    <root>/data/flood_events/HandLabeled/S1Hand/<EVENT>_<CHIP>_S1Hand.tif      2 bands (VV, VH), float32 dB, NaN nodata
    <root>/data/flood_events/HandLabeled/LabelHand/<EVENT>_<CHIP>_LabelHand.tif  int16: -1 no data, 0 not water, 1 water
    <root>/splits/flood_handlabeled/flood_{train,valid,test,bolivia}_data.csv

The split CSVs have no header; each row is `<EVENT>_<CHIP>_S1Hand.tif,<EVENT>_<CHIP>_LabelHand.tif`. The `.txt`
split lists TerraTorch and Prithvi users keep next to them (`flood_{train,valid,test,bolivia}_data.txt`) hold one chip
id per line (`Bolivia_103757`); they are read when no CSV of that split is found.

`root` is the `v1.1` folder, or the folder holding `v1.1/` (the `data_root` of TerraTorch's `Sen1Floods11NonGeo`), or
the `HandLabeled` folder itself (or any folder holding `S1Hand/`, `S2Hand/`, `LabelHand/`), with the split lists in
`root`, `root/splits` or `root/splits/flood_handlabeled`.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from .base import CLASSIFICATION, IGNORE_INDEX, GeoSegmentationDataset, Sample, check_label_values, nodata_mask, read_geotiff

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
S1_BANDS = ("VV", "VH")

# Statistics in file units. B02, B03, B04, B8A, B11, B12: the Prithvi Sen1Floods11 config (x 10000); the other S2
# bands: SSL4EO-S12 L1C; S1: SSL4EO-S12 S1 GRD (datasets.md).
_S2_STATS = {
    "B01": (1605.575, 786.787), "B02": (1424.550, 403.623), "B03": (1392.148, 418.698), "B04": (1243.463, 526.765),
    "B05": (1549.444, 1122.178), "B06": (2091.749, 1161.592), "B07": (2371.717, 1274.392), "B08": (2299.905, 1248.429),
    "B8A": (3142.009, 822.221), "B09": (830.066, 577.316), "B10": (22.104, 51.154), "B11": (2074.353, 683.477),
    "B12": (1204.650, 529.421),
}
_S1_STATS = {"VV": (-12.548, 5.257), "VH": (-20.192, 5.912)}

SPLIT_FILES = {
    "train": "flood_train_data.csv",
    "val": "flood_valid_data.csv",
    "test": "flood_test_data.csv",
    "bolivia": "flood_bolivia_data.csv",
}
_LAYER_SUFFIX = re.compile(r"_(S1Hand|S2Hand|LabelHand)\.tif$")


def read_split_csv(path: Path) -> list[tuple[str, str]]:
    """Rows `(S1Hand file name, LabelHand file name)` of a Sen1Floods11 split CSV (no header)."""
    rows = []
    with open(path, newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle), start=1):
            row = [cell.strip() for cell in row if cell.strip()]
            if not row:
                continue
            if len(row) != 2 or not row[0].endswith(".tif"):
                raise ValueError(f"{path}, line {line_number}: expected '<chip>_S1Hand.tif,<chip>_LabelHand.tif', got {row}")
            rows.append((row[0], row[1]))
    return rows


def read_split_txt(path: Path) -> list[tuple[str, str]]:
    """Rows `(S1Hand file name, LabelHand file name)` from a `.txt` split list: one chip id per line
    (`Bolivia_103757`; a chip's file name, e.g. `Bolivia_103757_S2Hand.tif`, is taken as its chip id)."""
    rows = []
    for line_number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        chip = _LAYER_SUFFIX.sub("", line.strip())
        if not chip:
            continue
        if re.search(r"[\s,;/\\]", chip) or chip.endswith(".tif"):
            raise ValueError(f"{path}, line {line_number}: expected one chip id per line (e.g. 'Bolivia_103757'), got {line.strip()!r}")
        rows.append((f"{chip}_S1Hand.tif", f"{chip}_LabelHand.tif"))
    return rows


class Sen1Floods11(GeoSegmentationDataset):
    """Sen1Floods11 hand-labelled chips: binary water segmentation, 512 x 512, one frame.

    Args:
        root: see the module docstring.
        split (`str`): `"train"`, `"val"` (`"valid"`), `"test"` or `"bolivia"` (the held-out event).
        modality (`str`, defaults to `"s2"`): `"s2"` (S2Hand, 13 bands), `"s1"` (S1Hand, VV and VH) or `"s1s2"`
            (both, 15 channels; a pixel is valid when both hold data).
        **kwargs: see `GeoSegmentationDataset`.

    Labels: -1 becomes the ignore index, 0 = not water, 1 = water.
    """

    task = "sen1floods11"
    dataset_name = "Sen1Floods11"
    num_frames = 1
    problem_type = CLASSIFICATION
    id2label = {0: "not water", 1: "water"}
    splits = ("train", "val", "test", "bolivia")
    normalization_preset = "sen1floods11"

    def __init__(self, root, split: str = "train", *, modality: str = "s2", **kwargs):
        if modality not in ("s1", "s2", "s1s2"):
            raise ValueError(f"Sen1Floods11: modality must be 's1', 's2' or 's1s2', got {modality!r}")
        self.modality = modality
        self.all_bands = {"s2": S2_BANDS, "s1": S1_BANDS, "s1s2": S2_BANDS + S1_BANDS}[modality]
        self.band_stats = {**_S2_STATS, **_S1_STATS}
        # Processor presets: S2Hand (Prithvi statistics) and S1 (SSL4EO-S12); s1s2 uses the reader's statistics.
        self.normalization_preset = {"s2": "sen1floods11", "s1": "ssl4eo-s12-s1", "s1s2": None}[modality]
        super().__init__(root, split, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    def _chips_dir(self) -> Path:
        for base in (self.root / "v1.1", self.root):
            for candidate in (base / "data" / "flood_events" / "HandLabeled", base / "flood_events" / "HandLabeled", base / "HandLabeled", base):
                if (candidate / "LabelHand").is_dir():
                    return candidate
        raise ValueError(f"Sen1Floods11: no LabelHand/ folder found under {self.root} (expected [v1.1/]data/flood_events/HandLabeled/LabelHand)")

    def _split_file(self) -> Path:
        """The split list: the CSV of the bucket, else the `.txt` list of the same name (TerraTorch, Prithvi)."""
        csv_name = SPLIT_FILES[self.split]
        folders = [base / sub for base in (self.root / "v1.1", self.root)
                   for sub in (Path("splits") / "flood_handlabeled", Path("splits"), Path("."))]
        for name in (csv_name, csv_name.replace(".csv", ".txt")):
            for folder in folders:
                if (folder / name).is_file():
                    return folder / name
        raise ValueError(
            f"Sen1Floods11: split file {csv_name} not found under {self.root}, nor {csv_name.replace('.csv', '.txt')} "
            f"(expected [v1.1/]splits/flood_handlabeled/{csv_name})"
        )

    def _find_samples(self) -> list[Sample]:
        chips = self._chips_dir()
        split_file = self._split_file()
        read = read_split_txt if split_file.suffix == ".txt" else read_split_csv
        samples = []
        for s1_name, label_name in read(split_file):
            if not s1_name.endswith("_S1Hand.tif"):
                raise ValueError(f"{split_file}: expected an S1Hand file name in the first column, got {s1_name!r}")
            chip = s1_name[: -len("_S1Hand.tif")]
            paths = {"s1": (chips / "S1Hand" / s1_name,), "s2": (chips / "S2Hand" / f"{chip}_S2Hand.tif",)}
            paths["s1s2"] = paths["s2"] + paths["s1"]
            image = paths[self.modality]
            label = chips / "LabelHand" / label_name
            for path in (*image, label):
                if not path.is_file():
                    raise ValueError(f"{split_file} names chip {chip!r} but the file {path} does not exist")
            samples.append(Sample(key=chip, image=image if len(image) > 1 else image[0], label=label))
        return samples

    def _expected_image_bands(self):
        return None  # checked per file in _check_headers below

    def _check_headers(self):
        super()._check_headers()
        from .base import geotiff_shape

        for sample in self.samples:
            for path in sample.image_paths:
                expected = len(S1_BANDS) if path.name.endswith("_S1Hand.tif") else len(S2_BANDS)
                count = geotiff_shape(path)[0]
                if count != expected:
                    raise ValueError(f"{path}: expected {expected} bands for Sen1Floods11, found {count}")

    def _load_sample(self, sample: Sample):
        arrays, masks = [], []
        for path in sample.image_paths:
            array, nodata = read_geotiff(path)
            if path.name.endswith("_S2Hand.tif"):
                valid = nodata_mask(array, 0 if nodata is None else nodata)
            else:  # S1: NaN nodata
                valid = nodata_mask(array, nodata)
            arrays.append(array.astype(np.float32))
            masks.append(valid)
        image = np.concatenate(arrays, axis=0)[None]  # (1, C, H, W)
        valid = np.concatenate(masks, axis=0)[None]
        return image, valid, self._load_raw_label(sample)

    def encode_labels(self, raw: np.ndarray, sample: Sample) -> np.ndarray:
        check_label_values(raw, (-1, 0, 1), sample.label)
        return np.where(raw == -1, IGNORE_INDEX, raw).astype(np.int64)
