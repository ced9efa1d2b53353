"""Pretraining readers: SSL4EO-S12 raw GeoTIFF layout (written here, exact layout), the GeoTIFF time-series folder
(on the bundled real Sentinel-2 series), the v1.1 zarr reader (+1000 offset), and their errors on bad input."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")

from degas_hf.data.ssl4eo import SSL4EO_BANDS, SSL4EOS12Dataset, SSL4EOS12ZarrDataset  # noqa: E402
from degas_hf.data.timeseries_folder import (  # noqa: E402
    DataError,
    TimeSeriesFolderDataset,
    _seed_rng,
    canonical_band_name,
    collate_pretraining,
    parse_date,
)
from degas_hf.models.st_swin_mae.image_processing_st_swin_mae import STSwinMAEImageProcessor  # noqa: E402

MODEL_BANDS = ["B02", "B03", "B04", "B8A", "B11", "B12"]
RES = {"B01": 60, "B09": 60, "B10": 60, "B05": 20, "B06": 20, "B07": 20, "B8A": 20, "B11": 20, "B12": 20}
SEASON_IDS = [  # GEE system:index of 4 seasons, deliberately not in date order
    "20210621T103031_20210621T103416_T31UES",
    "20201221T105441_20201221T105437_T31UES",
    "20210922T103639_20210922T104127_T31UES",
    "20210320T104021_20210320T104316_T31UES",
]
DATE_ORDER = sorted(range(4), key=lambda i: SEASON_IDS[i][:8])  # on-disk index of season rank 0..3


def _value(band: str, season_rank: int) -> int:
    """Encodes band and season into the DN, so that order and selection can be checked."""
    return 1000 + 100 * season_rank + list(SSL4EO_BANDS["s2a"]).index(band)


def write_ssl4eo(root: Path, n_locations: int = 2, size10: int = 24, modality: str = "s2a", nodata_corner: bool = True,
                 random_values: bool = False):
    """Raw SSL4EO-S12 layout: ROOT/s2a/<7-digit id>/<season system:index>/B1.tif ... (native resolutions).
    `random_values`: random DN (so that resampling and cropping are checked pixel by pixel) instead of one value per
    band and season."""
    rng = np.random.default_rng(1)
    for loc in range(n_locations):
        for s, season in enumerate(SEASON_IDS):
            rank = DATE_ORDER.index(s)
            d = root / modality / f"{loc * 37 + 5:07d}" / season
            d.mkdir(parents=True)
            for band in SSL4EO_BANDS[modality]:
                size = size10 * 10 // RES.get(band, 10)
                arr = np.full((size, size), _value(band, rank), dtype=np.uint16)
                if random_values:
                    arr = rng.integers(1, 9000, (size, size), dtype=np.uint16)
                if nodata_corner:
                    arr[0, 0] = 0  # nodata
                name = ("B8A" if band == "B8A" else f"B{int(band[1:])}") + ".tif"  # GEE names: B1.tif, B8A.tif
                with rasterio.open(d / name, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint16",
                                   crs="+proj=latlong", transform=rasterio.Affine(0.0024 / size, 0, 4.0, 0, -0.0024 / size, 51.0)) as dst:
                    dst.write(arr, 1)
    return root


@pytest.fixture(scope="module")
def processor():
    return STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l2a", band_names=MODEL_BANDS)


def test_band_and_date_names():
    assert canonical_band_name("B2") == "B02" and canonical_band_name("b8a") == "B8A" and canonical_band_name("vv") == "VV"
    assert parse_date("20210621T103031_20210621T103416_T31UES") == "2021-06-21"
    assert parse_date("S1A_IW_GRDH_1SDV_20200329T001515_20200329T001540_031882_03ADC3_9BAF") == "2020-03-29"
    assert parse_date("2019-05-16.tif") == "2019-05-16"
    assert parse_date("no_date_here") is None


def test_ssl4eo_raw_layout(tmp_path, processor):
    root = write_ssl4eo(tmp_path / "ssl4eo")
    ds = SSL4EOS12Dataset(root, modality="s2a", band_names=MODEL_BANDS, crop_size=16, processor=processor, seed=3)
    assert len(ds) == 2 and ds.locations == ["0000005", "0000042"]
    sample = ds[(0, 1)]
    assert sample["pixel_values"].shape == (6, 4, 16, 16) and sample["pixel_values"].dtype == torch.float32
    assert sample["valid_mask"].shape == (4, 16, 16) and sample["valid_mask"].dtype == torch.bool
    # un-normalise and check band selection + season order (seasons sorted by date, not by listdir)
    mean = torch.tensor(processor.image_mean).view(6, 1, 1, 1)
    std = torch.tensor(processor.image_std).view(6, 1, 1, 1)
    raw = sample["pixel_values"] * std + mean
    valid = sample["valid_mask"]
    for c, band in enumerate(MODEL_BANDS):
        for t in range(4):
            vals = raw[c, t][valid[t]]
            assert torch.allclose(vals, torch.full_like(vals, _value(band, t)), atol=0.05), (band, t)
    # the 20 m bands were resampled to the 10 m grid: full-size reads are 24 px
    full = SSL4EOS12Dataset(root, crop_size=None, processor=processor, validate="none")[0]
    assert full["pixel_values"].shape == (6, 4, 24, 24)
    assert not full["valid_mask"][:, 0, 0].any() and full["valid_mask"][:, 5, 5].all()  # DN 0 is nodata
    # determinism: the same key is the same sample; another epoch crops elsewhere
    again = ds[(0, 1)]
    assert torch.equal(sample["pixel_values"], again["pixel_values"]) and sample["mask_seed"] == again["mask_seed"]
    assert ds[(1, 1)]["mask_seed"] != sample["mask_seed"]
    # collate + DataLoader with a worker gives the same batch as in-process
    batch = collate_pretraining([ds[(0, 0)], ds[(0, 1)]])
    assert batch["pixel_values"].shape == (2, 6, 4, 16, 16) and batch["mask_seed"].dtype == torch.int64
    loader = torch.utils.data.DataLoader(ds, batch_sampler=[[(0, 0), (0, 1)]], collate_fn=collate_pretraining,
                                         num_workers=1)
    assert torch.equal(next(iter(loader))["pixel_values"], batch["pixel_values"])


def test_ssl4eo_bad_inputs(tmp_path, processor):
    root = write_ssl4eo(tmp_path / "ssl4eo", nodata_corner=False)
    locs = sorted((root / "s2a").iterdir())
    # missing band file -> names the season folder and band
    missing = locs[0] / SEASON_IDS[2] / "B11.tif"
    missing.unlink()
    with pytest.raises(DataError, match=r"missing band file.*B11") as err:
        SSL4EOS12Dataset(root, processor=processor)
    assert str(missing.parent) in str(err.value)
    # the band is not needed when not selected
    SSL4EOS12Dataset(root, band_names=["B02", "B03", "B04"], processor=processor)
    # missing season
    import shutil

    shutil.rmtree(locs[1] / SEASON_IDS[0])
    with pytest.raises(DataError, match=r"3 season folder\(s\).*expected 4") as err:
        SSL4EOS12Dataset(root, band_names=["B02"], processor=processor)
    assert str(locs[1]) in str(err.value)
    # corrupt file -> names the file
    root2 = write_ssl4eo(tmp_path / "ssl4eo2", n_locations=1)
    bad = next((root2 / "s2a").iterdir()) / SEASON_IDS[1] / "B4.tif"
    bad.write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(DataError, match="B4.tif"):
        SSL4EOS12Dataset(root2, processor=processor)
    # empty folder / missing folder / unknown band or modality
    (tmp_path / "empty" / "s2a").mkdir(parents=True)
    with pytest.raises(DataError, match="no location folders"):
        SSL4EOS12Dataset(tmp_path / "empty", processor=processor)
    with pytest.raises(DataError, match="does not exist"):
        SSL4EOS12Dataset(tmp_path / "nowhere", processor=processor)
    with pytest.raises(DataError, match="B10"):
        SSL4EOS12Dataset(root2, band_names=["B10"], processor=processor)
    with pytest.raises(DataError, match="modality"):
        SSL4EOS12Dataset(root2, modality="s3", processor=processor)


def sample_series() -> Path:
    import degas_hf

    return Path(degas_hf.__file__).parent / "sample_data" / "worldcereal_flanders" / "s2"


def test_timeseries_folder_on_bundled_sentinel2(processor):
    ds = TimeSeriesFolderDataset(sample_series(), MODEL_BANDS, num_frames=4, crop_size=32, processor=processor,
                                 samples_per_series=8, seed=1)
    assert len(ds) == 8 and len(ds.series) == 1 and len(ds.series[0].files) == 35
    s = ds[(0, 3)]
    assert s["pixel_values"].shape == (6, 4, 32, 32)
    assert torch.isfinite(s["pixel_values"]).all()
    dates = ds.dates_of(3, epoch=0)
    assert dates == sorted(dates) and len(set(dates)) == 4
    # real clouds of the bundled data are nodata (0) and come out invalid somewhere in the series
    full = TimeSeriesFolderDataset(sample_series(), MODEL_BANDS, frame_sampling="all", crop_size=None,
                                   processor=processor)[0]
    assert full["valid_mask"].shape == (35, 64, 64) and 0.9 < full["valid_mask"].float().mean() < 1.0
    # in-memory cache gives the same samples
    mem = TimeSeriesFolderDataset(sample_series(), MODEL_BANDS, num_frames=4, crop_size=32, processor=processor,
                                  samples_per_series=8, seed=1, in_memory=True)
    assert torch.equal(mem[(0, 3)]["pixel_values"], s["pixel_values"])


def test_as_hugging_face_dataset(tmp_path, processor):
    ds = TimeSeriesFolderDataset(sample_series(), MODEL_BANDS, num_frames=4, crop_size=16, processor=processor,
                                 samples_per_series=4)
    hf = ds.to_hf_dataset(2, cache_dir=str(tmp_path))
    assert len(hf) == 2 and set(hf.column_names) == {"pixel_values", "valid_mask", "mask_seed", "index"}
    row = hf.with_format("torch")[1]
    assert torch.equal(row["pixel_values"], ds[(0, 1)]["pixel_values"])


def _write_series(folder: Path, n_dates: int, bands, size=16, descriptions=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for t in range(n_dates):
        with rasterio.open(folder / f"2020-0{t + 1}-01.tif", "w", driver="GTiff", width=size, height=size,
                           count=len(bands), dtype="uint16", crs="EPSG:32631", transform=rasterio.Affine(10, 0, 0, 0, -10, 0),
                           nodata=0) as dst:
            dst.write(rng.integers(1, 5000, (len(bands), size, size), dtype=np.uint16))
            if descriptions:
                dst.descriptions = tuple(bands)


def test_timeseries_folder_bad_inputs(tmp_path, processor):
    with pytest.raises(DataError, match="does not exist"):
        TimeSeriesFolderDataset(tmp_path / "nope", MODEL_BANDS, processor=processor)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no files"):
        TimeSeriesFolderDataset(tmp_path / "empty", MODEL_BANDS, processor=processor)
    _write_series(tmp_path / "few" / "a", 3, MODEL_BANDS)
    with pytest.raises(DataError, match=r"few/a has 3 date\(s\), fewer than num_frames=4"):
        TimeSeriesFolderDataset(tmp_path / "few", MODEL_BANDS, num_frames=4, processor=processor)
    _write_series(tmp_path / "bands" / "a", 4, MODEL_BANDS[:5])
    with pytest.raises(DataError, match=r"2020-01-01.tif: missing band\(s\) \['B12'\]"):
        TimeSeriesFolderDataset(tmp_path / "bands", MODEL_BANDS, processor=processor)
    _write_series(tmp_path / "nodesc" / "a", 4, MODEL_BANDS, descriptions=False)
    with pytest.raises(DataError, match="no names"):
        TimeSeriesFolderDataset(tmp_path / "nodesc", MODEL_BANDS, processor=processor)
    ok = TimeSeriesFolderDataset(tmp_path / "nodesc", MODEL_BANDS, processor=processor, file_band_names=MODEL_BANDS,
                                 crop_size=8)
    assert ok[0]["pixel_values"].shape == (6, 4, 8, 8)
    _write_series(tmp_path / "corrupt" / "a", 4, MODEL_BANDS)
    (tmp_path / "corrupt" / "a" / "2020-02-01.tif").write_bytes(b"not a tiff")
    with pytest.raises(DataError, match="2020-02-01.tif"):
        TimeSeriesFolderDataset(tmp_path / "corrupt", MODEL_BANDS, processor=processor)


def test_ssl4eo_zarr_offset(tmp_path, processor):
    zarr = pytest.importorskip("zarr")
    bands = list(SSL4EO_BANDS["s2a"])
    data = np.zeros((2, 4, len(bands), 20, 20), dtype=np.int16)
    for b, name in enumerate(bands):
        data[:, :, b] = 500 + b + 1000  # stored with the +1000 offset
    data[0, 0, :, 0, 0] = 0  # fill
    path = tmp_path / "ssl4eos12_val_seasonal_data_000001.zarr.zip"
    store = zarr.storage.ZipStore(str(path), mode="w")
    group = zarr.group(store=store)  # the layout xarray writes: arrays + _ARRAY_DIMENSIONS
    group.create_dataset("bands", data=data, chunks=(1, 4, len(bands), 20, 20))
    group["bands"].attrs["_ARRAY_DIMENSIONS"] = ["sample", "time", "band", "y", "x"]
    group.create_dataset("band", data=np.array(bands, dtype="<U3"))
    group["band"].attrs["_ARRAY_DIMENSIONS"] = ["band"]
    store.close()
    z = SSL4EOS12ZarrDataset(path, band_names=MODEL_BANDS, crop_size=None, processor=processor)
    assert len(z) == 2 and z.dn_offset == 1000
    s = z[0]
    mean = torch.tensor(processor.image_mean).view(6, 1, 1, 1)
    std = torch.tensor(processor.image_std).view(6, 1, 1, 1)
    raw = s["pixel_values"] * std + mean
    expected = torch.tensor([500 + bands.index(b) for b in MODEL_BANDS], dtype=torch.float32).view(6, 1, 1, 1)
    assert torch.allclose(raw[:, :, 1:, 1:], expected.expand(6, 4, 19, 19), atol=0.05)
    assert not s["valid_mask"][0, 0, 0] and s["valid_mask"][1, 0, 0]
    with pytest.raises(DataError, match=r"missing band\(s\) \['B99'\]"):
        SSL4EOS12ZarrDataset(path, band_names=["B99"], processor=processor)
    (tmp_path / "broken.zarr.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="broken.zarr.zip"):
        SSL4EOS12ZarrDataset(tmp_path / "broken.zarr.zip", processor=processor)


def test_ssl4eo_raw_grid_is_10m_whatever_bands(tmp_path, processor):
    """Only 20 m bands selected: the samples are still on the 10 m grid (24 px here, 264 px in the release), not the
    20 m one; `grid_size` names another grid."""
    root = write_ssl4eo(tmp_path / "ssl4eo", n_locations=1)
    proc = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l2a", band_names=["B11", "B12"])
    ds = SSL4EOS12Dataset(root, band_names=["B11", "B12"], crop_size=None, processor=proc)
    assert ds.item_shape(0) == (24, 24) and ds[0]["pixel_values"].shape == (2, 4, 24, 24)
    sixty = SSL4EOS12Dataset(root, band_names=["B01"], crop_size=None, validate="none",
                             processor=STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l2a", band_names=["B01"]))
    assert sixty.item_shape(0) == (24, 24)
    named = SSL4EOS12Dataset(root, band_names=["B11", "B12"], crop_size=None, processor=proc, grid_size=30)
    assert named[0]["pixel_values"].shape == (2, 4, 30, 30)
    with pytest.raises(DataError, match="grid_size"):
        SSL4EOS12Dataset(root, processor=proc, band_names=["B11"], grid_size=0)
    with pytest.raises(DataError, match="crop_size"):
        SSL4EOS12Dataset(root, processor=proc, band_names=["B11"], crop_size=-3)


def test_ssl4eo_windowed_reads_match_whole_band_resampling_and_device_normalisation(tmp_path, processor):
    """The raw reader reads only the crop (fractional windows of the 20 / 60 m bands): the pixels equal a bilinear
    resampling of the whole band followed by the crop (the reference loader's order). Raw output normalised by
    DeviceNormalizer equals the processor's normalisation on the CPU, bit for bit."""
    from rasterio.enums import Resampling

    from degas_hf.data.timeseries_folder import DeviceNormalizer

    root = write_ssl4eo(tmp_path / "ssl4eo", n_locations=1, size10=36, random_values=True)
    raw = SSL4EOS12Dataset(root, band_names=MODEL_BANDS, crop_size=20, processor=processor, seed=2, output="raw")
    loc = root / "s2a" / raw.locations[0]
    seasons = sorted(os.listdir(loc), key=lambda s: s[:8])
    for key in [(0, 0), (3, 0), (5, 0)]:
        r0, c0, h, w = raw._window((36, 36), _seed_rng(2, key[0], key[1]))  # the crop the reader draws
        sample = raw[key]["raw_values"].numpy()
        assert sample.dtype == np.uint16 and sample.shape == (4, 6, 20, 20)
        for t, season in enumerate(seasons):
            for c, band in enumerate(MODEL_BANDS):
                name = ("B8A" if band == "B8A" else f"B{int(band[1:])}") + ".tif"
                with rasterio.open(loc / season / name) as src:
                    whole = src.read(1, out_shape=(36, 36), resampling=Resampling.bilinear)
                np.testing.assert_array_equal(sample[t, c], whole[r0:r0 + h, c0:c0 + w], err_msg=f"{band} {t}")
    normalized = SSL4EOS12Dataset(root, band_names=MODEL_BANDS, crop_size=20, processor=processor, seed=2)
    batch = collate_pretraining([raw[(1, 0)], raw[(2, 0)]])
    assert batch["raw_values"].dtype == torch.uint16
    pixel_values, valid = raw.device_normalizer()(batch["raw_values"])
    reference = collate_pretraining([normalized[(1, 0)], normalized[(2, 0)]])
    assert torch.equal(pixel_values, reference["pixel_values"]) and torch.equal(valid, reference["valid_mask"])
    # the normaliser picks the processor's bands by name, whatever the order of the data
    shuffled = SSL4EOS12Dataset(root, band_names=MODEL_BANDS[::-1], crop_size=20, processor=processor, seed=2,
                                output="raw")
    again, _ = shuffled.device_normalizer()(collate_pretraining([shuffled[(1, 0)], shuffled[(2, 0)]])["raw_values"])
    assert torch.equal(again, pixel_values)
    with pytest.raises(DataError, match=r"lack the processor's band\(s\) \['B12'\]"):
        DeviceNormalizer(processor, MODEL_BANDS[:5])


def _write_zarr(path: Path, bands, n: int = 2, size: int = 20, value: int = 1500):
    zarr = pytest.importorskip("zarr")
    data = np.full((n, 4, len(bands), size, size), value, dtype=np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = zarr.storage.ZipStore(str(path), mode="w")
    group = zarr.group(store=store)
    group.create_dataset("bands", data=data, chunks=(1, 4, len(bands), size, size))
    group["bands"].attrs["_ARRAY_DIMENSIONS"] = ["sample", "time", "band", "y", "x"]
    group.create_dataset("band", data=np.array(bands, dtype="<U3"))
    group["band"].attrs["_ARRAY_DIMENSIONS"] = ["band"]
    store.close()
    return path


def test_ssl4eo_zarr_one_product_one_split(tmp_path, processor):
    """The v1.1 layout {train,val}/{S2L1C,S2L2A}/...: the modality's product is taken, never the other one; a folder
    holding both splits is refused naming them, unless `split` picks one; an L1C file in an L2A folder is refused."""
    pytest.importorskip("zarr")
    l2a, l1c = list(SSL4EO_BANDS["s2a"]), list(SSL4EO_BANDS["s2c"])
    for split in ("train", "val"):
        _write_zarr(tmp_path / "v11" / split / "S2L2A" / f"ssl4eos12_{split}_seasonal_data_000001.zarr.zip", l2a)
        _write_zarr(tmp_path / "v11" / split / "S2L1C" / f"ssl4eos12_{split}_seasonal_data_000001.zarr.zip", l1c,
                    value=6000)
    val = SSL4EOS12ZarrDataset(tmp_path / "v11" / "val", band_names=MODEL_BANDS, processor=processor, crop_size=None)
    assert [Path(f).parts[-2:] for f in val.files] == [("S2L2A", "ssl4eos12_val_seasonal_data_000001.zarr.zip")]
    with pytest.raises(DataError, match=r"mixes splits \(train: 1 file\(s\), val: 1 file\(s\)\) of S2L2A"):
        SSL4EOS12ZarrDataset(tmp_path / "v11", band_names=MODEL_BANDS, processor=processor)
    train = SSL4EOS12ZarrDataset(tmp_path / "v11", band_names=MODEL_BANDS, processor=processor, split="train",
                                 crop_size=None)
    assert len(train) == 2 and "train" in train.files[0] and "S2L2A" in train.files[0]
    assert train.read_item_raw(0, None, (0, 0, 20, 20)).max() == 1500  # L2A values, no L1C file mixed in
    with pytest.raises(DataError, match="no S2L2A files of split 'test'"):
        SSL4EOS12ZarrDataset(tmp_path / "v11", band_names=MODEL_BANDS, processor=processor, split="test")
    flat = tmp_path / "flat"
    _write_zarr(flat / "ssl4eos12_train_seasonal_data_000001.zarr.zip", l2a)
    _write_zarr(flat / "ssl4eos12_train_seasonal_data_000002.zarr.zip", l1c)
    with pytest.raises(DataError, match=r"000002.zarr.zip is an S2L1C file"):
        SSL4EOS12ZarrDataset(flat, band_names=MODEL_BANDS, processor=processor)
