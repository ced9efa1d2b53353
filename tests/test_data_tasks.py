"""Downstream-task readers on small datasets written here in each dataset's exact on-disk format, plus the real
Sen1Floods11 S2 chip (tests/data/Spain_7370579_S2Hand.tif).

The `write_*` helpers are imported by tests/test_finetune.py.
"""

from __future__ import annotations

import glob
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from degas_hf.data import (
    GeoTIFFSegmentationFolder,
    HLSBurnScars,
    MultiTemporalCropClassification,
    PhilEOBench,
    Sen1Floods11,
    class_weights_from_counts,
)
from degas_hf.data.base import IGNORE_INDEX
from degas_hf.training import SegmentationDataCollator

DATA = Path(__file__).parent / "data"
REAL_S2 = DATA / "Spain_7370579_S2Hand.tif"
SHARED_S2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sen1floods11_sample" / "Spain_7370579_S2Hand.tif"
MODEL_BANDS = ("B02", "B03", "B04", "B8A", "B11", "B12")


# ----------------------------------------------------------------------------------------------------------------
# Writers of the real layouts
# ----------------------------------------------------------------------------------------------------------------
def write_tif(path: Path, array: np.ndarray, nodata=None, crs="EPSG:4326", res=8.983e-5, descriptions=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    profile = dict(driver="GTiff", height=array.shape[1], width=array.shape[2], count=array.shape[0], dtype=array.dtype,
                   crs=crs, transform=Affine(res, 0.0, -3.0, 0.0, -res, 40.0), nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
        if descriptions:
            dst.descriptions = tuple(descriptions)
    return path


def _water_scene(rng, size):
    """A water mask (H, W) bool with a learnable signal: a disk of water."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
    return (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 3) ** 2


def write_sen1floods11(root: Path, size: int = 32, counts=None, seed: int = 0) -> Path:
    """`<root>/v1.1/data/flood_events/HandLabeled/{S1Hand,S2Hand,LabelHand}` + `splits/flood_handlabeled/*.csv`.

    S2Hand: 13 bands int16 (L1C x 10000), nodata 0 (a nodata corner); S1Hand: VV, VH float32 dB, NaN nodata;
    LabelHand: int16 {-1, 0, 1}. Split CSVs without header: `<chip>_S1Hand.tif,<chip>_LabelHand.tif`.
    """
    rng = np.random.default_rng(seed)
    counts = counts or {"train": 4, "valid": 2, "test": 2, "bolivia": 1}
    base = root / "v1.1"
    chips = base / "data" / "flood_events" / "HandLabeled"
    splits = base / "splits" / "flood_handlabeled"
    splits.mkdir(parents=True, exist_ok=True)
    chip_id = 100000
    for split, count in counts.items():
        rows = []
        for _ in range(count):
            event = "Bolivia" if split == "bolivia" else rng.choice(["Spain", "India", "USA"])
            chip_id += 1
            chip = f"{event}_{chip_id}"
            water = _water_scene(rng, size)
            s2 = rng.integers(800, 3000, size=(13, size, size)).astype(np.int16)
            s2[[7, 8]] = np.where(water, 300, 3500).astype(np.int16)  # B08, B8A: dark water
            s2[:, :3, :3] = 0  # nodata corner
            s1 = np.stack([np.where(water, -22.0, -9.0), np.where(water, -28.0, -15.0)]).astype(np.float32)
            s1 += rng.normal(0, 0.5, s1.shape).astype(np.float32)
            s1[:, -2:, -2:] = np.nan
            label = water.astype(np.int16)
            label[:2, :] = -1
            write_tif(chips / "S2Hand" / f"{chip}_S2Hand.tif", s2, nodata=0)
            write_tif(chips / "S1Hand" / f"{chip}_S1Hand.tif", s1, nodata=float("nan"))
            write_tif(chips / "LabelHand" / f"{chip}_LabelHand.tif", label)
            rows.append(f"{chip}_S1Hand.tif,{chip}_LabelHand.tif")
        (splits / f"flood_{split}_data.csv").write_text("\n".join(rows) + "\n")
    return base


def write_hls_burn_scars(root: Path, size: int = 32, counts=None, seed: int = 1) -> Path:
    """`<root>/{training,validation}/subsetted_512x512_HLS.S30.T<tile>.<yyyyddd>.v1.4_{merged,.mask}.tif`:
    6 bands float32 reflectance (nodata -9999), mask int16 {1 burn scar, 0 not burned, -1 missing}."""
    rng = np.random.default_rng(seed)
    counts = counts or {"training": 4, "validation": 2}
    for folder, count in counts.items():
        for i in range(count):
            stem = f"subsetted_512x512_HLS.S30.T10S{'GDX'[i % 3]}{chr(65 + i)}.20182{10 + i:02d}.v1.4"
            burned = _water_scene(rng, size)
            image = rng.uniform(0.02, 0.3, size=(6, size, size)).astype(np.float32)
            image[3] = np.where(burned, 0.08, 0.3)  # NIR drops over burn scars
            image[5] = np.where(burned, 0.25, 0.1)  # SWIR2 rises
            image[:, -3:, :2] = -9999.0
            mask = burned.astype(np.int16)
            mask[0, :4] = -1
            write_tif(root / folder / f"{stem}_merged.tif", image, nodata=-9999.0, crs="EPSG:32610", res=30.0)
            write_tif(root / folder / f"{stem}.mask.tif", mask, crs="EPSG:32610", res=30.0)
    return root


def write_crop_classification(root: Path, size: int = 32, counts=None, seed: int = 2, with_lists: bool = True) -> Path:
    """`<root>/{training,validation}_chips/chip_XXX_YYY_merged.tif` (18 bands = 3 dates x 6, date-major,
    int16 DN, nodata -9999) and `chip_XXX_YYY.mask.tif` (uint8, 0 no data, 1..13), plus `training_data.txt` /
    `validation_data.txt` (one chip id per line)."""
    rng = np.random.default_rng(seed)
    counts = counts or {"training": 4, "validation": 2}
    for folder, count in counts.items():
        ids = []
        for i in range(count):
            chip = f"chip_{rng.integers(0, 400):03d}_{i:03d}"
            ids.append(chip)
            classes = np.zeros((size, size), dtype=np.uint8)
            classes[: size // 2] = 3  # corn
            classes[size // 2 :] = 4  # soybeans
            classes[:, : size // 4] = 2  # forest
            classes[:3, :3] = 0  # no data
            dates = []
            for t in range(3):
                frame = rng.integers(300, 3000, size=(6, size, size)).astype(np.int16)
                frame[3] = np.where(classes == 3, 1000 + 1500 * t, np.where(classes == 4, 3000 - 800 * t, 2500)).astype(np.int16)
                dates.append(frame)
            image = np.concatenate(dates, axis=0)  # (18, H, W): date-major
            image[:, :2, -2:] = -9999
            write_tif(root / f"{folder}_chips" / f"{chip}_merged.tif", image, nodata=-9999, crs="EPSG:5070", res=30.0)
            write_tif(root / f"{folder}_chips" / f"{chip}.mask.tif", classes, crs="EPSG:5070", res=30.0)
        if with_lists:
            (root / f"{folder}_data.txt").write_text("\n".join(ids) + "\n")
    return root


def write_phileo(root: Path, size: int = 32, patches: int = 3, seed: int = 3, regions=("denmark-1", "japan")) -> Path:
    """`<root>/<region>_<tile>_{train,val,test}_s2.npy` (N, H, W, 10) uint16 channels-last in PhilEO order (B02, B03,
    B04, B08, B05, B06, B07, B8A, B11, B12) and `..._label_{lc,building,roads}.npy` (N, H, W, 1): lc uint8
    WorldCover codes, building / roads float32 in % (0-100)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    codes = np.array([10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100])
    for region in regions:
        for tile in ("32VNH", "33UUP"):
            for split in ("train", "val", "test"):
                n = patches if split == "train" else 1
                lc = np.empty((n, size, size, 1), dtype=np.uint8)
                building = np.zeros((n, size, size, 1), dtype=np.float32)
                s2 = rng.integers(200, 4000, size=(n, size, size, 10)).astype(np.uint16)
                for k in range(n):
                    built = _water_scene(rng, size)
                    lc[k, ..., 0] = np.where(built, 50, rng.choice(codes[[0, 3]]))
                    lc[k, 0, 0, 0] = 0  # no data
                    building[k, ..., 0] = np.where(built, rng.uniform(20, 100, (size, size)), 0.0)
                    s2[k, ..., 2] = np.where(built, 3500, 800)  # bright red over built-up
                    s2[k, ..., 7] = np.where(built, 1500, 3800)
                prefix = root / f"{region}_{tile}_{split}"
                np.save(f"{prefix}_s2.npy", s2)
                np.save(f"{prefix}_label_lc.npy", lc)
                np.save(f"{prefix}_label_building.npy", building)
                if region == "japan":  # roads exist for some regions only
                    np.save(f"{prefix}_label_roads.npy", building * 0.1)
    return root


def write_generic(root: Path, size: int = 32, count: int = 3, frames: int = 2, seed: int = 4) -> Path:
    """`<root>/images/<name>.tif` (frames x 6 bands, uint16, nodata 0) and `<root>/labels/<name>.tif` (uint8, 255
    ignored), plus `train.txt` / `val.txt`."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        name = f"field_{i:02d}"
        names.append(name)
        target = _water_scene(rng, size)
        image = rng.integers(100, 3000, size=(frames * 6, size, size)).astype(np.uint16)
        image[3::6] = np.where(target, 300, 3500)
        label = target.astype(np.uint8)
        label[-1, :] = 255
        write_tif(root / "images" / f"{name}.tif", image, nodata=0, crs="EPSG:32631", res=10.0)
        write_tif(root / "labels" / f"{name}.tif", label, crs="EPSG:32631", res=10.0)
    (root / "train.txt").write_text("\n".join(names) + "\n")
    (root / "val.txt").write_text("\n".join(names[:1]) + "\n")
    return root


def _check_item(item, channels, frames, size, regression=False):
    assert item["pixel_values"].shape == (channels, frames, size, size)
    assert item["pixel_values"].dtype == torch.float32
    assert torch.isfinite(item["pixel_values"]).all()
    assert item["valid_mask"].shape == (frames, size, size) and item["valid_mask"].dtype == torch.bool
    assert item["labels"].shape == (size, size)
    assert item["labels"].dtype == (torch.float32 if regression else torch.int64)


# ----------------------------------------------------------------------------------------------------------------
# Sen1Floods11
# ----------------------------------------------------------------------------------------------------------------
def test_sen1floods11_layout_splits_and_items(tmp_path):
    root = write_sen1floods11(tmp_path)
    counts = {"train": 4, "val": 2, "valid": 2, "test": 2, "bolivia": 1}
    for split, count in counts.items():
        ds = Sen1Floods11(root, split, bands=MODEL_BANDS)
        assert len(ds) == count
    bolivia = Sen1Floods11(root, "bolivia", bands=MODEL_BANDS)
    assert all(s.key.startswith("Bolivia_") for s in bolivia.samples)
    ds = Sen1Floods11(root, "train", bands=MODEL_BANDS)
    item = ds[0]
    _check_item(item, 6, 1, 32)
    # nodata 0 corner: invalid, zero-filled, labels ignored there
    assert not item["valid_mask"][0, :3, :3].any() and item["valid_mask"][0, 5:, 5:].all()
    assert (item["pixel_values"][:, 0, :3, :3] == 0).all()
    assert (item["labels"][:3, :3] == IGNORE_INDEX).all()
    # LabelHand -1 rows -> ignore; other values stay 0 / 1
    assert (item["labels"][:2] == IGNORE_INDEX).all()
    assert set(item["labels"][3:].unique().tolist()) <= {0, 1}
    assert ds.info.num_labels == 2 and ds.id2label == {0: "not water", 1: "water"}


def test_sen1floods11_terratorch_data_root_and_txt_split_lists(tmp_path):
    """TerraTorch's `data_root` is the folder holding `v1.1/`; its split lists are
    `v1.1/splits/flood_handlabeled/flood_{train,valid,test}_data.txt`, one chip id per line."""
    base = write_sen1floods11(tmp_path)
    keys = {split: [s.key for s in Sen1Floods11(base, split, bands=MODEL_BANDS).samples] for split in ("train", "val", "bolivia")}
    from_parent = Sen1Floods11(tmp_path, "train", bands=MODEL_BANDS)  # the parent of v1.1/
    assert [s.key for s in from_parent.samples] == keys["train"]
    torch.testing.assert_close(from_parent[0], Sen1Floods11(base, "train", bands=MODEL_BANDS)[0])
    splits = base / "splits" / "flood_handlabeled"
    for csv in splits.glob("*.csv"):
        chips = [row.split(",")[0].removesuffix("_S1Hand.tif") for row in csv.read_text().splitlines()]
        csv.with_suffix(".txt").write_text("\n".join(chips) + "\n\n")
        csv.unlink()
    for split, expected in keys.items():
        assert [s.key for s in Sen1Floods11(tmp_path, split, bands=MODEL_BANDS).samples] == expected
    # File names of a chip are taken as its id; anything else is refused naming the line.
    txt = splits / "flood_valid_data.txt"
    txt.write_text("\n".join(f"{key}_S2Hand.tif" for key in keys["val"]) + "\n")
    assert [s.key for s in Sen1Floods11(tmp_path, "val", bands=MODEL_BANDS).samples] == keys["val"]
    txt.write_text(f"{keys['val'][0]}_S1Hand.tif,{keys['val'][0]}_LabelHand.tif\n")
    with pytest.raises(ValueError, match=r"flood_valid_data\.txt, line 1: expected one chip id per line"):
        Sen1Floods11(tmp_path, "val", bands=MODEL_BANDS)
    txt.unlink()
    with pytest.raises(ValueError, match=r"flood_valid_data\.csv not found under .*, nor flood_valid_data\.txt"):
        Sen1Floods11(tmp_path, "val", bands=MODEL_BANDS)


def test_sen1floods11_s1_and_s1s2(tmp_path):
    root = write_sen1floods11(tmp_path, counts={"train": 2})
    s1 = Sen1Floods11(root, "train", modality="s1")
    item = s1[0]
    _check_item(item, 2, 1, 32)
    assert not item["valid_mask"][0, -2:, -2:].any()  # NaN nodata
    both = Sen1Floods11(root, "train", modality="s1s2", bands=("B02", "B8A", "VV", "VH"))
    item = both[0]
    _check_item(item, 4, 1, 32)
    assert not item["valid_mask"][0, :3, :3].any() and not item["valid_mask"][0, -2:, -2:].any()


def test_sen1floods11_bands_model_cannot_get(tmp_path):
    root = write_sen1floods11(tmp_path, counts={"train": 1})
    with pytest.raises(ValueError, match=r"cannot supply the bands \['B02'"):
        Sen1Floods11(root, "train", modality="s1", bands=MODEL_BANDS)


def test_sen1floods11_split_names_missing_file(tmp_path):
    root = write_sen1floods11(tmp_path, counts={"train": 2})
    csv = root / "splits" / "flood_handlabeled" / "flood_train_data.csv"
    csv.write_text(csv.read_text() + "Ghana_999_S1Hand.tif,Ghana_999_LabelHand.tif\n")
    with pytest.raises(ValueError, match=r"flood_train_data\.csv names chip 'Ghana_999'.*Ghana_999_S2Hand\.tif"):
        Sen1Floods11(root, "train", bands=MODEL_BANDS)


def test_sen1floods11_size_mismatch_and_bad_labels(tmp_path):
    root = write_sen1floods11(tmp_path, counts={"train": 2})
    labels = sorted((root / "data" / "flood_events" / "HandLabeled" / "LabelHand").glob("*.tif"))
    write_tif(labels[0], np.zeros((16, 32), dtype=np.int16))
    with pytest.raises(ValueError, match=rf"sizes differ.*{labels[0].name}"):
        Sen1Floods11(root, "train", bands=MODEL_BANDS)
    write_tif(labels[0], np.full((32, 32), 3, dtype=np.int16))
    ds = Sen1Floods11(root, "train", bands=MODEL_BANDS)
    with pytest.raises(ValueError, match=rf"{labels[0].name}: label values \[3\]"):
        ds.validate_labels()


def test_sen1floods11_real_s2_chip(tmp_path):
    if not REAL_S2.exists():
        if not SHARED_S2.exists():
            pytest.skip("real Sen1Floods11 chip not available")
        REAL_S2.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED_S2, REAL_S2)
    chips = tmp_path / "HandLabeled"
    (chips / "S2Hand").mkdir(parents=True)
    shutil.copyfile(REAL_S2, chips / "S2Hand" / REAL_S2.name)
    with rasterio.open(REAL_S2) as src:
        assert src.count == 13 and src.dtypes[0] == "int16" and src.nodata == 0
        raw = src.read()
    # No LabelHand in the sample: write an all-valid label of the chip's size (ignore on the left half).
    label = np.zeros(raw.shape[1:], dtype=np.int16)
    label[:, :256] = -1
    write_tif(chips / "LabelHand" / "Spain_7370579_LabelHand.tif", label)
    (tmp_path / "flood_test_data.csv").write_text("Spain_7370579_S1Hand.tif,Spain_7370579_LabelHand.tif\n")
    ds = Sen1Floods11(tmp_path, "test", bands=MODEL_BANDS)
    item = ds[0]
    _check_item(item, 6, 1, 512)
    assert item["valid_mask"].all()
    # Band mapping by name: channel 3 of the output is B8A, band 9 of the file (index 8).
    expected = (raw[8].astype(np.float32) * 1e-4 - 0.31420089) / 0.0822221
    np.testing.assert_allclose(item["pixel_values"][3, 0].numpy(), expected, rtol=1e-4, atol=1e-4)
    assert abs(float(item["pixel_values"].mean())) < 5
    assert (item["labels"][:, :256] == IGNORE_INDEX).all() and (item["labels"][:, 256:] == 0).all()
    cropped = Sen1Floods11(tmp_path, "test", bands=MODEL_BANDS, crop_size=64)[0]
    _check_item(cropped, 6, 1, 64)


# ----------------------------------------------------------------------------------------------------------------
# HLS burn scars
# ----------------------------------------------------------------------------------------------------------------
def test_hls_burn_scars(tmp_path):
    root = write_hls_burn_scars(tmp_path / "hls_burn_scars")
    ds = HLSBurnScars(tmp_path, "train")
    assert len(ds) == 4 and len(HLSBurnScars(tmp_path, "val")) == 2 and len(HLSBurnScars(root, "test")) == 2
    item = ds[0]
    _check_item(item, 6, 1, 32)
    assert not item["valid_mask"][0, -3:, :2].any()  # -9999 nodata
    assert (item["labels"][0, :4] == IGNORE_INDEX).all()
    assert set(item["labels"].unique().tolist()) <= {IGNORE_INDEX, 0, 1}
    assert ds.validate_labels()[1] > 0
    # A model band the burn-scar images do not have
    with pytest.raises(ValueError, match=r"cannot supply the bands \['B08'\]"):
        HLSBurnScars(tmp_path, "train", bands=("B02", "B08"))


def test_hls_burn_scars_missing_mask(tmp_path):
    write_hls_burn_scars(tmp_path)
    mask = sorted((tmp_path / "training").glob("*.mask.tif"))[0]
    mask.unlink()
    with pytest.raises(ValueError, match=r"has no mask file .*\.mask\.tif"):
        HLSBurnScars(tmp_path, "train")


# ----------------------------------------------------------------------------------------------------------------
# Multi-temporal crop classification
# ----------------------------------------------------------------------------------------------------------------
def test_crop_classification_date_major_and_zero_label(tmp_path):
    write_crop_classification(tmp_path)
    ds = MultiTemporalCropClassification(tmp_path, "train", bands=MODEL_BANDS)
    assert len(ds) == 4 and len(MultiTemporalCropClassification(tmp_path, "val")) == 2
    item = ds[0]
    _check_item(item, 6, 3, 32)
    assert ds.num_labels == 13
    # mask 0 -> ignore, 1..13 -> 0..12
    assert (item["labels"][:3, :3] == IGNORE_INDEX).all()
    assert set(item["labels"].unique().tolist()) == {IGNORE_INDEX, 1, 2, 3}
    # date-major: raw band 3 + 6 t is the NIR of date t; for corn it rises with t
    with rasterio.open(ds.samples[0].image) as src:
        raw = src.read()
    corn = raw[3::6][:, 5, 20]
    assert corn[0] < corn[1] < corn[2]
    nir = item["pixel_values"][3, :, 5, 20]
    assert nir[0] < nir[1] < nir[2]
    assert not item["valid_mask"][:, :2, -2:].any()


def test_crop_classification_list_names_missing_chip(tmp_path):
    write_crop_classification(tmp_path)
    listing = tmp_path / "training_data.txt"
    listing.write_text(listing.read_text() + "chip_999_999\n")
    with pytest.raises(ValueError, match=r"training_data\.txt names chip 'chip_999_999'"):
        MultiTemporalCropClassification(tmp_path, "train")


def test_crop_classification_label_out_of_range(tmp_path):
    write_crop_classification(tmp_path, counts={"training": 1}, with_lists=False)
    mask = next((tmp_path / "training_chips").glob("*.mask.tif"))
    write_tif(mask, np.full((32, 32), 14, dtype=np.uint8))
    ds = MultiTemporalCropClassification(tmp_path, "train")
    with pytest.raises(ValueError, match=rf"{mask.name}: label values \[14\]"):
        ds[0]


# ----------------------------------------------------------------------------------------------------------------
# PhilEO Bench
# ----------------------------------------------------------------------------------------------------------------
def test_phileo_lc_channels_last_and_band_order(tmp_path):
    write_phileo(tmp_path)
    ds = PhilEOBench(tmp_path, "train", label="lc", bands=MODEL_BANDS)
    assert len(ds) == 2 * 2 * 3 and ds.num_labels == 11 and ds.task == "phileo_lc"
    item = ds[0]
    _check_item(item, 6, 1, 32)
    # B8A is channel 7 of PhilEO's order (B08 comes before the red edge)
    raw = np.load(ds.samples[0].image)[0]
    expected = (raw[..., 7].astype(np.float32) - 2581.64687018) / 1439.3086061
    np.testing.assert_allclose(item["pixel_values"][3, 0].numpy(), expected, rtol=1e-4, atol=1e-4)
    labels = item["labels"]
    assert labels[0, 0] == IGNORE_INDEX  # WorldCover 0 = no data
    assert set(labels.unique().tolist()) <= {IGNORE_INDEX, 0, 3, 4}  # tree, cropland, built-up


def test_phileo_building_regression_nshot_and_missing_roads(tmp_path):
    write_phileo(tmp_path)
    ds = PhilEOBench(tmp_path, "train", label="building", bands=MODEL_BANDS)
    item = ds[0]
    _check_item(item, 6, 1, 32, regression=True)
    assert ds.problem_type == "regression" and ds.num_labels == 1
    assert 0 <= float(item["labels"].min()) and 0.2 <= float(item["labels"].max()) <= 1.0  # fractions by default
    few = PhilEOBench(tmp_path, "train", label="building", n_shot=2, seed=0)
    assert len(few) == 2 * 2  # 2 per region
    assert len(PhilEOBench(tmp_path, "val", label="building", n_shot=2)) == 2  # ceil(2 * 0.2) = 1 per region
    roads = PhilEOBench(tmp_path, "train", label="roads")
    assert {s.key.split("_")[0] for s in roads.samples} == {"japan"}
    percent = PhilEOBench(tmp_path, "train", label="building", target_scale=1.0)[0]
    torch.testing.assert_close(percent["labels"] * 0.01, item["labels"])


def test_phileo_mismatched_label_file(tmp_path):
    write_phileo(tmp_path, regions=("japan",))
    bad = tmp_path / "japan_32VNH_train_label_lc.npy"
    np.save(bad, np.zeros((3, 16, 32, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"sizes differ.*japan_32VNH_train_label_lc\.npy"):
        PhilEOBench(tmp_path, "train", label="lc")
    np.save(bad, np.full((3, 32, 32, 1), 15, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"japan_32VNH_train_label_lc\.npy \(patch 0\): label values \[15\]"):
        PhilEOBench(tmp_path, "train", label="lc").validate_labels()


# The PhilEO Bench protocol (phileo-bench utils/data_protocol.py) on files laid out and named as the bench's are:
# `<sub-region>_<tile number>_{train,val,test}_s2.npy` (tile numbers as in train_test_location_downstream.json).
BENCH_LAYOUT = {  # sub-region -> {tile: training patches}; validation files hold 2 patches, test files 1
    "europe": {"3": 2}, "denmark-1": {"1": 1, "10": 2, "2": 1}, "denmark-2": {"4": 2},
    "tanzania-1": {"7": 3}, "uganda-1": {"5": 1},
    "ghana-1": {"8": 1}, "isreal-1": {"6": 1},
    "japan": {"9": 6},
}
_BENCH_BUCKETS = {  # REGIONS_BUCKETS of the bench, restricted to the sub-regions of BENCH_LAYOUT
    "europe": ["europe", "denmark-1", "denmark-2"], "east-africa": ["tanzania-1", "uganda-1"],
    "northwest-africa": ["ghana-1", "isreal-1"], "japan": ["japan"],
}


def write_phileo_bench_layout(root: Path, size: int = 8, empty_buildings=()) -> Path:
    """Tiny patches (8 x 8) in the bench's layout; lc labels are cropland, building labels random % cover (zero
    in every other patch of the `empty_buildings` sub-regions). Tests identify patches by their sample keys."""
    rng = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    for sub, tiles in BENCH_LAYOUT.items():
        for tile, count in tiles.items():
            for split, n in (("train", count), ("val", 2), ("test", 1)):
                prefix = root / f"{sub}_{tile}_{split}"
                np.save(f"{prefix}_s2.npy", rng.integers(200, 4000, size=(n, size, size, 10)).astype(np.uint16))
                np.save(f"{prefix}_label_lc.npy", np.full((n, size, size, 1), 40, dtype=np.uint8))
                building = rng.uniform(0, 50, size=(n, size, size, 1)).astype(np.float32)
                if sub in empty_buildings:
                    building[::2] = 0.0  # every other patch holds no building
                np.save(f"{prefix}_label_building.npy", building)
    return root


def _bench_bucket_rows(root: Path, split: str, bucket: str) -> list[str]:
    """The bench's concatenated rows of one bucket: sub-regions in bucket order, files sorted by path."""
    rows = []
    for sub in _BENCH_BUCKETS[bucket]:
        for train in sorted(glob.glob(str(root / f"{sub}*train_s2.npy"))):
            path = Path(train.replace("train", split))
            rows += [f"{path.stem}[{i}]" for i in range(len(np.load(path, mmap_mode="r")))]
    return rows


def test_phileo_nshot_counts_and_draw_equal_the_bench_per_region_bucket(tmp_path):
    root = write_phileo_bench_layout(tmp_path)
    with pytest.warns(UserWarning, match=r"northwest-africa \(2 of 3\)"):
        train = PhilEOBench(root, "train", label="lc", n_shot=3)
    val = PhilEOBench(root, "val", label="lc", n_shot=3)
    expected_train, expected_val = {}, {}
    for bucket in _BENCH_BUCKETS:  # protocol_fewshot_memmapped: random.Random(12345).sample per bucket
        rows, val_rows = _bench_bucket_rows(root, "train", bucket), _bench_bucket_rows(root, "val", bucket)
        expected_train[bucket] = [rows[i] for i in random.Random(12345).sample(range(len(rows)), min(3, len(rows)))]
        expected_val[bucket] = [val_rows[i] for i in random.Random(12345).sample(range(len(val_rows)), 1)]
    assert [s.key for s in train.samples] == [k for keys in expected_train.values() for k in keys]
    assert [s.key for s in val.samples] == [k for keys in expected_val.values() for k in keys]
    # 3 per bucket: europe 3 (of 8 over 3 sub-regions), east-africa 3 (of 4), northwest-africa 2 (of 2), japan 3.
    assert train.protocol["patches_per_region"] == {"europe": 3, "east-africa": 3, "northwest-africa": 2, "japan": 3}
    assert train.protocol["regions"]["europe"] == ["denmark-1", "denmark-2", "europe"]
    assert val.protocol["patches_per_region"] == {"europe": 1, "east-africa": 1, "northwest-africa": 1, "japan": 1}
    json.dumps(train.protocol)
    # The bench's region names select buckets; unknown names are refused.
    only = PhilEOBench(root, "train", label="lc", n_shot=2, regions=["northwest-africa"])
    assert {s.key.split("_")[0] for s in only.samples} == {"ghana-1", "isreal-1"}
    with pytest.raises(ValueError, match=r"unknown region 'atlantis'.*'northwest-africa'"):
        PhilEOBench(root, "train", label="lc", regions=["atlantis"])


def test_phileo_nshot_larger_than_a_bucket_warns_with_counts(tmp_path):
    root = write_phileo_bench_layout(tmp_path)
    with pytest.warns(UserWarning, match=r"n_shot=4 \(train\).*northwest-africa \(2 of 4\)"):
        ds = PhilEOBench(root, "train", label="lc", n_shot=4)
    assert ds.protocol["patches_per_region"]["northwest-africa"] == 2
    with pytest.raises(ValueError, match="n_shot must be a positive integer"):
        PhilEOBench(root, "train", label="lc", n_shot=0)


def test_phileo_test_split_leaves_out_tanzania_1_as_the_bench_does(tmp_path):
    root = write_phileo_bench_layout(tmp_path)
    test = PhilEOBench(root, "test", label="lc")
    subs = {s.key.split("_")[0] for s in test.samples}
    assert subs == set(BENCH_LAYOUT) - {"tanzania-1"}
    assert test.protocol["excluded_regions"] == ["tanzania-1"]
    assert len(PhilEOBench(root, "train", label="lc")) == sum(sum(t.values()) for t in BENCH_LAYOUT.values())


def test_phileo_bench_index_file_gives_the_fixed_selection(tmp_path):
    root = write_phileo_bench_layout(tmp_path)
    lengths = {b: (len(_bench_bucket_rows(root, "train", b)), len(_bench_bucket_rows(root, "val", b))) for b in _BENCH_BUCKETS}
    chosen = {"europe": [7, 0], "east-africa": [3, 1], "northwest-africa": [1, 0], "japan": [5, 4]}
    entries = {b: {"train_indices": chosen[b], "val_indices": [0], "length_multi_array_train": n, "length_multi_array_val": m}
               for b, (n, m) in lengths.items()}
    folder = tmp_path / "indices"
    folder.mkdir()
    (folder / "indices_12122023_8_10m_lc_2.json").write_text(json.dumps(entries))
    # The bench names selections by patch size (`_128_10m_`; these patches are 8 px): the other size is not taken.
    (folder / "indices_16012024_224_30m_lc_2.json").write_text("{}")
    train = PhilEOBench(root, "train", label="lc", n_shot=2, indices=folder)
    rows = {b: _bench_bucket_rows(root, "train", b) for b in _BENCH_BUCKETS}
    assert [s.key for s in train.samples] == [rows[b][i] for b in _BENCH_BUCKETS for i in chosen[b]]
    assert train.protocol["selection"] == "indices file indices_12122023_8_10m_lc_2.json"
    val = PhilEOBench(root, "val", label="lc", indices=folder / "indices_12122023_8_10m_lc_2.json")
    assert len(val) == 4 and val.protocol["n_shot"] == 2
    with pytest.raises(ValueError, match=r"index file for label 'lc', not 'building'"):
        PhilEOBench(root, "train", label="building", indices=folder / "indices_12122023_8_10m_lc_2.json")
    entries["japan"]["length_multi_array_train"] = 60
    (folder / "indices_12122023_8_10m_lc_2.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"made for 60 train patches in region 'japan', found 6"):
        PhilEOBench(root, "train", label="lc", n_shot=2, indices=folder)


def test_phileo_protocol_is_recorded_in_results_json(tmp_path):
    from degas_hf.training.finetune import FinetuneConfig, finetune

    data = write_phileo(tmp_path / "data", regions=("denmark-2", "japan"))
    finetune(FinetuneConfig(
        task="phileo_lc", data_dir=str(data), model="degas-tiny", output_dir=str(tmp_path / "out"), max_steps=1,
        per_device_train_batch_size=2, per_device_eval_batch_size=2, eval_strategy="no", figures=False,
        save_model=False, dataset_kwargs={"n_shot": 2},
    ))
    protocol = json.loads((tmp_path / "out" / "results.json").read_text())["training"]["data_protocol"]
    assert protocol["train"]["patches_per_region"] == {"europe": 2, "japan": 2}
    assert protocol["val"]["patches_per_region"] == {"europe": 1, "japan": 1}
    assert protocol["train"]["selection"].startswith("PhilEO Bench draw")
    assert protocol["test"]["excluded_regions"] == ["tanzania-1"] and protocol["test"]["n_shot"] is None


def test_phileo_building_nshot_prefers_patches_with_buildings_as_the_bench_does(tmp_path):
    root = write_phileo_bench_layout(tmp_path, empty_buildings=("japan",))
    ds = PhilEOBench(root, "train", label="building", n_shot=2, regions=["japan"])
    labels = np.load(root / "japan_9_train_label_building.npy")
    coin, expected = random.Random(156), []
    for i in random.Random(12345).sample(range(6), 6):  # the bench's "representative" walk
        if len(expected) == 2:
            break
        if labels[i].mean() > 0.005 or coin.random() > 0.75:
            expected.append(f"japan_9_train_s2[{i}]")
    assert [s.key for s in ds.samples] == expected
    plain = [f"japan_9_train_s2[{i}]" for i in random.Random(12345).sample(range(6), 2)]
    assert expected != plain  # the fixture exercises the preference for patches with buildings


# ----------------------------------------------------------------------------------------------------------------
# Generic folder, collator, datasets, class weights
# ----------------------------------------------------------------------------------------------------------------
def test_generic_folder(tmp_path):
    write_generic(tmp_path)
    ds = GeoTIFFSegmentationFolder(tmp_path, "train", band_names=MODEL_BANDS, num_frames=2, num_classes=2, bands=MODEL_BANDS[::-1])
    assert len(ds) == 3 and len(GeoTIFFSegmentationFolder(tmp_path, "val", band_names=MODEL_BANDS, num_frames=2, num_classes=2)) == 1
    item = ds[0]
    _check_item(item, 6, 2, 32)
    assert (item["labels"][-1] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match=r"label values \[1\] outside the class range 0\.\.0"):
        GeoTIFFSegmentationFolder(tmp_path, "train", band_names=MODEL_BANDS, num_frames=2, num_classes=1)[0]
    with pytest.raises(ValueError, match=r"expected 6 bands"):
        GeoTIFFSegmentationFolder(tmp_path, "train", band_names=MODEL_BANDS, num_frames=1, num_classes=2)
    reg = GeoTIFFSegmentationFolder(tmp_path, "train", band_names=MODEL_BANDS, num_frames=2, regression=True)
    assert reg[0]["labels"].dtype == torch.float32 and torch.isnan(reg[0]["labels"][-1]).all()


def test_collator_pads_and_stacks(tmp_path):
    write_sen1floods11(tmp_path, counts={"train": 2})
    ds = Sen1Floods11(tmp_path / "v1.1", "train", bands=MODEL_BANDS)
    small = {k: v[..., :20, :24] for k, v in ds[1].items()}
    batch = SegmentationDataCollator()([ds[0], small])
    assert batch["pixel_values"].shape == (2, 6, 1, 32, 32)
    assert batch["valid_mask"].shape == (2, 1, 32, 32) and not batch["valid_mask"][1, 0, 20:].any()
    assert batch["labels"].dtype == torch.int64 and (batch["labels"][1, 20:] == IGNORE_INDEX).all()


def test_hf_datasets_view(tmp_path):
    write_hls_burn_scars(tmp_path)
    ds = HLSBurnScars(tmp_path, "train")
    hf = ds.to_hf_dataset()
    assert len(hf) == 4 and hf.column_names == ["index", "key", "image", "label"]
    row = hf[1]
    torch.testing.assert_close(torch.as_tensor(np.asarray(row["pixel_values"])), ds[1]["pixel_values"])


def test_class_weights():
    weights = class_weights_from_counts({0: 900, 1: 100, 2: 0}, "inverse")
    assert weights[2] == 0.0 and weights[1] == pytest.approx(9 * weights[0])
    assert np.mean(weights[:2]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="Unknown class-weight method"):
        class_weights_from_counts([1, 2], "nope")
