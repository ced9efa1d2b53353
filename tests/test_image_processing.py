"""STSwinMAEImageProcessor: bands by name, presets, nodata, shapes, save/load, post-processing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import torch
from _helpers_io import BANDS6, LSTS, S1_CHIP, S2_CHIP, write_series
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from degas_hf.models.st_swin_mae.image_processing_st_swin_mae import (
    NORMALIZATION_PRESETS,
    STSwinMAEImageProcessor,
    canonical_band_name,
)


def test_canonical_band_names():
    assert canonical_band_name("B2") == canonical_band_name("b02") == "B02"
    assert canonical_band_name("b8a") == "B8A"
    assert canonical_band_name(" vv ") == "VV"


@pytest.mark.parametrize("name", sorted(NORMALIZATION_PRESETS))
def test_every_preset_builds(name):
    processor = STSwinMAEImageProcessor.from_preset(name)
    assert len(processor.image_mean) == len(processor.band_names) == len(processor.image_std)
    assert processor.preset == name


def test_preset_statistics_follow_band_names():
    full = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c")
    picked = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=["B12", "b4", "B8A"])
    lookup = dict(zip(full.band_names, zip(full.image_mean, full.image_std)))
    assert picked.band_names == ["B12", "b4", "B8A"]
    assert list(zip(picked.image_mean, picked.image_std)) == [lookup["B12"], lookup["B04"], lookup["B8A"]]


def test_preset_errors():
    with pytest.raises(ValueError, match="Unknown normalisation preset"):
        STSwinMAEImageProcessor.from_preset("nope")
    with pytest.raises(ValueError, match=r"no statistics for bands \['B10'\]"):
        STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l2a", band_names=["B02", "B10"])


def test_real_s2_chip_selects_and_normalises_bands():
    processor = STSwinMAEImageProcessor.from_preset("sen1floods11")
    batch = processor(str(S2_CHIP), return_tensors="pt")  # band descriptions B1..B12, B8A in file order
    assert batch["pixel_values"].shape == (1, 6, 1, 512, 512)
    assert batch["pixel_values"].dtype == torch.float32
    assert batch["valid_mask"].shape == (1, 1, 512, 512) and batch["valid_mask"].all()
    with rasterio.open(S2_CHIP) as src:
        b8a = src.read(src.descriptions.index("B8A") + 1).astype(np.float64)
    expected = (b8a * 1e-4 - 0.31420089) / 0.0822221
    np.testing.assert_allclose(batch["pixel_values"][0, 3, 0].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_band_order_of_input_does_not_matter():
    rng = np.random.default_rng(0)
    array = rng.integers(1, 4000, size=(2, 6, 8, 8)).astype(np.int16)
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=BANDS6)
    reference = processor(array, band_names=BANDS6)["pixel_values"]
    order = [5, 2, 0, 4, 1, 3]
    shuffled = processor(array[:, order], band_names=[BANDS6[i] for i in order])["pixel_values"]
    np.testing.assert_array_equal(reference, shuffled)


def test_missing_band_and_unnamed_wrong_count():
    processor = STSwinMAEImageProcessor(band_names=BANDS6)
    with pytest.raises(ValueError, match=r"Missing bands \['B11', 'B12'\].*input has"):
        processor(np.zeros((4, 8, 8)), band_names=["B02", "B03", "B04", "B8A"])
    with pytest.raises(ValueError, match="Expected 6 bands .* found 13 unnamed channels"):
        processor(np.zeros((13, 8, 8)))
    with pytest.raises(ValueError, match="names 3 channels"):
        processor(np.zeros((6, 8, 8)), band_names=["B02", "B03", "B04"])


def test_empty_and_bad_inputs(tmp_path):
    processor = STSwinMAEImageProcessor(band_names=BANDS6)
    with pytest.raises(ValueError, match="empty list"):
        processor([])
    with pytest.raises(ValueError, match="does not exist"):
        processor(str(tmp_path / "missing.tif"))
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(ValueError, match="not a readable raster"):
        processor(str(text))
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(S2_CHIP.read_bytes()[:5000])
    with pytest.raises(ValueError):
        processor(str(corrupt))
    with pytest.raises(ValueError, match="shape"):
        processor(np.zeros((6, 8)))


def test_integer_overflow_prone_dtypes():
    processor = STSwinMAEImageProcessor(band_names=["B02"], image_mean=[30000.0], image_std=[1.0])
    with pytest.raises(ValueError, match=r"int64 holds values .* beyond \+-2\*\*24"):
        processor(np.full((1, 4, 4), 2**40, dtype=np.int64))
    with pytest.raises(ValueError, match="dtype bool"):
        processor(np.ones((1, 4, 4), dtype=bool))
    # uint16 above the int16 range: computed in float32, no wrap-around.
    out = processor(np.full((1, 4, 4), 40000, dtype=np.uint16))["pixel_values"]
    assert np.allclose(out, 10000.0)
    small = processor(np.full((1, 4, 4), 7, dtype=np.int64))["pixel_values"]  # small int64 is fine
    assert np.allclose(small, 7 - 30000.0)


def test_nan_and_nodata_become_mask_and_fill():
    processor = STSwinMAEImageProcessor(band_names=["VV", "VH"], image_mean=[-12.0, -20.0], image_std=[5.0, 6.0],
                                        nodata_value=-9999, fill_value=0.0)
    array = np.full((3, 2, 4, 5), -10.0, dtype=np.float32)
    array[0, 1, 0, 0] = np.nan  # one band NaN: the pixel is invalid
    array[1, :, 2, 3] = -9999  # nodata
    array[2, 0, 3, 4] = np.inf
    batch = processor(array, return_tensors="pt")
    valid = batch["valid_mask"][0]
    assert not valid[0, 0, 0] and not valid[1, 2, 3] and not valid[2, 3, 4]
    assert valid.sum() == 3 * 4 * 5 - 3
    assert torch.isfinite(batch["pixel_values"]).all()
    assert batch["pixel_values"][0, :, 0, 0, 0].eq(0).all()


def test_real_s1_chip_nan_nodata(tmp_path):
    with rasterio.open(S1_CHIP) as src:
        profile, data, names = src.profile, src.read(), src.descriptions
    assert np.isnan(profile["nodata"])
    data[:, 5:9, :] = np.nan  # a NaN stripe, as at swath edges
    path = tmp_path / "s1.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(names, 1):
            dst.set_band_description(i, name)
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-s1", band_names=["VH", "VV"])
    batch = processor(str(path), return_tensors="pt")
    assert batch["pixel_values"].shape == (1, 2, 1, 128, 128)
    assert torch.isfinite(batch["pixel_values"]).all()
    assert not batch["valid_mask"][0, 0, 5:9].any() and batch["valid_mask"][0, 0, 9:].all()
    # channel 0 is VH (the second band of the file)
    np.testing.assert_allclose(batch["pixel_values"][0, 0, 0, 20], (data[1, 20] + 20.19237134) / 5.91150917, rtol=1e-5)


def test_real_landsat_series_with_slc_off_stripes():
    processor = STSwinMAEImageProcessor(band_names=["RED"], image_mean=[1000.0], image_std=[800.0])
    batch = processor([str(p) for p in LSTS], band_names=["RED"], return_tensors="pt")
    assert batch["pixel_values"].shape == (1, 1, 4, 61, 61)
    invalid = 1 - batch["valid_mask"].float().mean(dim=(0, 2, 3))
    assert ((invalid > 0.1) & (invalid < 0.3)).all()  # 16-21 % SLC-off nodata per date
    assert torch.isfinite(batch["pixel_values"]).all()


def test_grid_mismatch_across_dates(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    first = write_series(tmp_path / "a", num_dates=1, height=16, width=16)
    other_crs = write_series(tmp_path / "b", num_dates=1, height=16, width=16, crs="EPSG:32632")
    other_size = write_series(tmp_path / "c", num_dates=1, height=16, width=20)
    processor = STSwinMAEImageProcessor(band_names=BANDS6)
    with pytest.raises(ValueError, match="crs"):
        processor([str(first[0]), str(other_crs[0])])
    with pytest.raises(ValueError, match="shape"):
        processor([str(first[0]), str(other_size[0])])


def test_date_major_stack_file(tmp_path):
    from degas_hf.io import write_geotiff

    rng = np.random.default_rng(1)
    stack = rng.integers(1, 3000, size=(3, 6, 8, 8)).astype(np.uint16)
    names = [f"{b}_t{t}" for t in range(3) for b in BANDS6]
    path = tmp_path / "stack.tif"
    write_geotiff(path, stack.reshape(18, 8, 8), crs="EPSG:32633", band_names=names)
    processor = STSwinMAEImageProcessor(band_names=BANDS6[::-1])
    batch = processor(str(path), frames_per_file=3)
    assert batch["pixel_values"].shape == (1, 6, 3, 8, 8)
    np.testing.assert_array_equal(batch["pixel_values"][0, 0], stack[:, 5].astype(np.float32))
    with pytest.raises(ValueError, match="cannot be split"):
        processor(str(path), frames_per_file=4)
    plain = tmp_path / "plain.tif"  # descriptions repeated per date, without a date suffix
    write_geotiff(plain, stack.reshape(18, 8, 8), crs="EPSG:32633", band_names=BANDS6 * 3)
    np.testing.assert_array_equal(processor(str(plain), frames_per_file=3)["pixel_values"], batch["pixel_values"])


def test_date_major_descriptions_repeated_per_date_are_kept(tmp_path):
    """Regression: with frames_per_file > 1, band names repeated per date without a date suffix were cut at their
    trailing number ("SWIR_1" -> "SWIR", "B02" -> "B"), so the bands were not found."""
    from degas_hf.io import GeoTiffTimeSeries, write_geotiff
    from degas_hf.models.st_swin_mae.image_processing_st_swin_mae import date_major_band_names

    bands = ["BLUE", "GREEN", "RED", "NIR", "SWIR_1", "SWIR_2"]
    rng = np.random.default_rng(2)
    stack = rng.integers(1, 3000, size=(2, 6, 8, 8)).astype(np.uint16)
    plain = tmp_path / "plain.tif"
    write_geotiff(plain, stack.reshape(12, 8, 8), crs="EPSG:32633", band_names=bands * 2)
    processor = STSwinMAEImageProcessor(band_names=bands[::-1])
    batch = processor(str(plain), frames_per_file=2)
    assert batch["pixel_values"].shape == (1, 6, 2, 8, 8)
    np.testing.assert_array_equal(batch["pixel_values"][0, 0], stack[:, 5].astype(np.float32))
    suffixed = tmp_path / "suffixed.tif"
    write_geotiff(suffixed, stack.reshape(12, 8, 8), crs="EPSG:32633",
                  band_names=[f"{b}_t{t}" for t in range(2) for b in bands])
    np.testing.assert_array_equal(processor(str(suffixed), frames_per_file=2)["pixel_values"], batch["pixel_values"])
    assert GeoTiffTimeSeries(plain, frames_per_file=2).band_names == bands
    assert GeoTiffTimeSeries(suffixed, frames_per_file=2).band_names == bands
    assert date_major_band_names(BANDS6 * 3, 3) == list(BANDS6)
    assert date_major_band_names([f"{b}_t{t}" for t in range(3) for b in BANDS6], 3) == list(BANDS6)
    assert date_major_band_names(["B02", None, "B02", "B03"], 2) is None


def test_crop_and_pad():
    processor = STSwinMAEImageProcessor(band_names=BANDS6, crop_size=(8, 12))
    batch = processor(np.ones((2, 6, 10, 10), dtype=np.float32))
    assert batch["pixel_values"].shape == (1, 6, 2, 8, 12)
    assert batch["valid_mask"][0, 0, :, 0].sum() == 0 and batch["valid_mask"][0, 0, :, 1].all()
    batch = STSwinMAEImageProcessor(band_names=BANDS6, pad_size_divisor=16)(np.ones((6, 10, 17)))
    assert batch["pixel_values"].shape == (1, 6, 1, 16, 32)
    assert batch["valid_mask"].sum() == 10 * 17


def test_batches_and_lists_of_dates():
    processor = STSwinMAEImageProcessor(band_names=BANDS6)
    dates = [np.ones((6, 5, 7)) * t for t in range(3)]
    assert processor(dates)["pixel_values"].shape == (1, 6, 3, 5, 7)
    assert processor(np.ones((2, 3, 6, 5, 7)))["pixel_values"].shape == (2, 6, 3, 5, 7)
    assert processor([np.ones((3, 6, 5, 7)), dates])["pixel_values"].shape == (2, 6, 3, 5, 7)
    with pytest.raises(ValueError, match=r"share \(T, H, W\)"):
        processor([np.ones((3, 6, 5, 7)), np.ones((2, 6, 5, 7))])
    with pytest.raises(ValueError, match="Dates differ in shape"):
        processor([np.ones((6, 5, 7)), np.ones((6, 5, 8))])


def test_all_nodata_warns_not_crashes():
    processor = STSwinMAEImageProcessor(band_names=BANDS6, nodata_value=0)
    with pytest.warns(UserWarning, match="no valid pixel"):
        batch = processor(np.zeros((6, 4, 4), dtype=np.int16))
    assert not batch["valid_mask"].any() and np.all(batch["pixel_values"] == 0)


def test_save_pretrained_auto_image_processor_round_trip(tmp_path):
    from transformers import AutoImageProcessor

    processor = STSwinMAEImageProcessor.from_preset("hls-burn-scars", band_names=BANDS6[::-1], crop_size=224)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file()
    loaded = AutoImageProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__ == "STSwinMAEImageProcessor"
    ignore = ("auto_map", "image_processor_type")
    assert {k: v for k, v in loaded.to_dict().items() if k not in ignore} == {
        k: v for k, v in processor.to_dict().items() if k not in ignore
    }
    array = np.random.default_rng(0).random((6, 230, 230)).astype(np.float32)
    np.testing.assert_array_equal(loaded(array)["pixel_values"], processor(array)["pixel_values"])


def test_post_process_semantic_segmentation_and_regression():
    processor = STSwinMAEImageProcessor(band_names=BANDS6)
    logits = torch.zeros(2, 3, 4, 4)
    logits[:, 2] = 1.0
    logits[1, 0, 0, 0] = 5.0
    valid = torch.ones(2, 2, 4, 4, dtype=torch.bool)
    valid[0, :, 3, 3] = False
    maps = processor.post_process_semantic_segmentation({"logits": logits}, valid_mask=valid)
    assert [m.shape for m in maps] == [(4, 4), (4, 4)] and maps[0].dtype == torch.int64
    assert maps[0][3, 3] == -1 and maps[0][0, 0] == 2 and maps[1][0, 0] == 0
    resized = processor.post_process_semantic_segmentation({"logits": logits}, target_sizes=[(8, 6), (2, 2)])
    assert resized[0].shape == (8, 6) and resized[1].shape == (2, 2)
    values = processor.post_process_regression({"logits": logits[:, :1] + 0.5}, valid_mask=valid)
    assert values[0].shape == (4, 4) and torch.isnan(values[0][3, 3]) and values[1][0, 0] == 5.5
    with pytest.raises(ValueError, match="target sizes"):
        processor.post_process_semantic_segmentation({"logits": logits}, target_sizes=[(4, 4)])


_DTYPES = st.sampled_from(["uint8", "int16", "uint16", "int32", "float32", "float64"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.integers(1, 3),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    dtype=_DTYPES,
    extra_bands=st.integers(0, 3),
    permutation_seed=st.integers(0, 2**16),
    nan_fraction=st.floats(0, 1),
    nodata=st.one_of(st.none(), st.sampled_from([0, -9999, 255])),
    crop=st.one_of(st.none(), st.tuples(st.integers(1, 16), st.integers(1, 16))),
)
def test_any_valid_input_gives_finite_pixel_values(
    frames, height, width, dtype, extra_bands, permutation_seed, nan_fraction, nodata, crop
):
    rng = np.random.default_rng(permutation_seed)
    names = BANDS6 + [f"X{i}" for i in range(extra_bands)]
    order = rng.permutation(len(names))
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    high = min(info.max, 20000) if info else 1e6
    low = max(info.min, -20000) if info else -1e6
    array = rng.uniform(low, high, size=(frames, len(names), height, width)).astype(dtype)
    if np.dtype(dtype).kind == "f":
        array[rng.random(array.shape) < nan_fraction] = np.nan
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=BANDS6, nodata_value=nodata,
                                                    crop_size=crop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = processor(array[:, order], band_names=[names[i] for i in order], return_tensors="pt")
    out_h, out_w = crop if crop else (height, width)
    assert batch["pixel_values"].shape == (1, 6, frames, out_h, out_w)
    assert batch["pixel_values"].dtype == torch.float32
    assert batch["valid_mask"].shape == (1, frames, out_h, out_w) and batch["valid_mask"].dtype == torch.bool
    assert torch.isfinite(batch["pixel_values"]).all()
    if crop is None:
        has_nan = np.isnan(array[:, :6].astype(np.float64)).any(axis=1) if np.dtype(dtype).kind == "f" else None
        if has_nan is not None:
            wanted = array[:, [names.index(b) for b in BANDS6]]
            assert not batch["valid_mask"][0].numpy()[np.isnan(wanted.astype(np.float64)).any(axis=1)].any()


def test_band_descriptions_are_matched_or_refused_never_taken_in_file_order_silently(tmp_path):
    """Date-suffixed names in a single-date file are matched by name; generic names fall back to file order with a
    warning; real names that match nothing are an error; B2 and B02 are the same band across dates."""
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=BANDS6)

    def one_date(name, band_names, seed=0):
        folder = tmp_path / name
        folder.mkdir()
        return str(write_series(folder, num_dates=1, band_names=band_names, stripe=None, seed=seed)[0])

    reversed_bands = list(reversed(BANDS6))
    suffixed = one_date("suffixed", [f"{b}_t0" for b in reversed_bands])
    plain = one_date("plain", reversed_bands)
    torch.testing.assert_close(processor(suffixed)["pixel_values"], processor(plain)["pixel_values"])

    generic = one_date("generic", [f"Band {i + 1}" for i in range(6)])
    with pytest.warns(UserWarning, match="name no band"):
        processor(generic)

    foreign = one_date("foreign", ["VV", "VH", "X1", "X2", "X3", "X4"])
    with pytest.raises(ValueError, match="B02"):
        processor(foreign)

    short = one_date("short", ["B2", "B3", "B4", "B8A", "B11", "B12"])
    long = one_date("long", BANDS6, seed=1)
    assert processor([[short, long]])["pixel_values"].shape[2] == 2


# ---------------------------------------------------------------------------------------------------------------
# transformers conventions: per-call statistics, input_data_format, segmentation scores (issue 14 item 4)
# ---------------------------------------------------------------------------------------------------------------
def test_per_call_image_mean_and_std_override_the_statistics_for_that_call_only():
    processor = STSwinMAEImageProcessor.from_preset("hls-burn-scars")
    array = np.random.default_rng(0).uniform(0.0, 0.4, size=(2, 6, 5, 7)).astype(np.float32)
    mean, std = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.5, 0.5, 1.0, 1.0, 2.0, 2.0]
    reference = STSwinMAEImageProcessor(band_names=BANDS6, image_mean=mean, image_std=std, nodata_value=-9999.0)
    own = processor(array)["pixel_values"]
    out = processor(array, image_mean=mean, image_std=std)["pixel_values"]
    np.testing.assert_array_equal(out, reference(array)["pixel_values"])
    np.testing.assert_array_equal(processor(array)["pixel_values"], own)  # the processor itself is unchanged
    # The statistics follow the processor's (selected) bands, not the input's order.
    shuffled = [5, 0, 3, 1, 4, 2]
    out = processor(array[:, shuffled], band_names=[BANDS6[i] for i in shuffled], image_mean=mean, image_std=std)
    np.testing.assert_array_equal(out["pixel_values"], reference(array)["pixel_values"])
    raw = processor(array, do_normalize=False, do_rescale=False)["pixel_values"]
    np.testing.assert_array_equal(raw[0], array.transpose(1, 0, 2, 3))
    with pytest.raises(ValueError, match=r"`image_mean` needs one value per band: expected 6 .* found 3"):
        processor(array, image_mean=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"`image_std` needs one value per band: expected a list of 6"):
        processor(array, image_std=2.0)
    with pytest.raises(ValueError, match="`image_std` must be positive"):
        processor(array, image_std=[1.0, 1.0, 0.0, 1.0, 1.0, 1.0])


def test_input_data_format_channels_last_matches_channels_first():
    from transformers.image_utils import ChannelDimension

    processor = STSwinMAEImageProcessor.from_preset("hls-burn-scars")
    rng = np.random.default_rng(1)
    series = rng.uniform(0, 0.4, size=(3, 6, 5, 7)).astype(np.float32)  # (T, C, H, W)
    expected = processor(series)["pixel_values"]
    last = series.transpose(0, 2, 3, 1)  # (T, H, W, C)
    np.testing.assert_array_equal(processor(last, input_data_format="channels_last")["pixel_values"], expected)
    np.testing.assert_array_equal(processor(last, input_data_format=ChannelDimension.LAST)["pixel_values"], expected)
    np.testing.assert_array_equal(
        processor(torch.from_numpy(last), input_data_format="channels_last")["pixel_values"], expected
    )
    # One date (H, W, C), a list of dates [(H, W, C), ...] and a 5-D batch (B, T, H, W, C).
    one = processor(series[0], input_data_format=ChannelDimension.FIRST)["pixel_values"]
    np.testing.assert_array_equal(processor(last[0], input_data_format="channels_last")["pixel_values"], one)
    np.testing.assert_array_equal(processor(list(last), input_data_format="channels_last")["pixel_values"], expected)
    batch = np.stack([last, last[::-1]])
    out = processor(batch, input_data_format="channels_last")["pixel_values"]
    np.testing.assert_array_equal(out, processor(np.stack([series, series[::-1]]))["pixel_values"])


def test_input_data_format_that_contradicts_the_shape_is_refused():
    processor = STSwinMAEImageProcessor(band_names=BANDS6)
    channels_last = np.zeros((2, 8, 9, 6), dtype=np.float32)
    with pytest.raises(ValueError, match="looks channels_last: pass input_data_format='channels_last'"):
        processor(channels_last)
    with pytest.raises(ValueError, match="looks channels_first: pass input_data_format='channels_first'"):
        processor(channels_last.transpose(0, 3, 1, 2), input_data_format="channels_last")
    with pytest.raises(ValueError, match="input_data_format"):
        processor(channels_last, input_data_format="last")
    with pytest.raises(ValueError, match="data_format='channels_last' is not supported"):
        processor(channels_last, input_data_format="channels_last", data_format="channels_last")


def test_post_process_semantic_segmentation_returns_scores_like_transformers():
    processor = STSwinMAEImageProcessor(band_names=BANDS6)
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    valid = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    valid[0, :, 0, 0] = False
    plain = processor.post_process_semantic_segmentation({"logits": logits}, valid_mask=valid)
    scored = processor.post_process_semantic_segmentation({"logits": logits}, None, True, valid_mask=valid)
    assert [type(s).__name__ for s in scored] == ["SemanticSegmentationPostProcessorOutput"] * 2
    for item, classes, raw in zip(scored, plain, logits):
        torch.testing.assert_close(item.segmentation, classes)
        torch.testing.assert_close(item.segmentation_scores, raw)
    assert scored[0].segmentation[0, 0] == -1
    resized = processor.post_process_semantic_segmentation(
        {"logits": logits}, target_sizes=[(8, 6), (2, 2)], return_segmentation_scores=True
    )
    assert resized[0].segmentation_scores.shape == (3, 8, 6) and resized[1].segmentation.shape == (2, 2)
    torch.testing.assert_close(resized[0].segmentation, resized[0].segmentation_scores.argmax(0))
    with pytest.raises(ValueError, match="must be a bool"):  # the old positional valid_mask
        processor.post_process_semantic_segmentation({"logits": logits}, None, valid)


def test_duplicate_input_band_names_are_refused():
    processor = STSwinMAEImageProcessor(band_names=["B02", "B03"])
    array = np.zeros((3, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"Input band names must be unique, found \['B02'\] more than once"):
        processor(array, band_names=["B02", "B03", "B02"])
    with pytest.raises(ValueError, match=r"found \['B02', 'b2'\] more than once"):
        processor(array, band_names=["b2", "B03", "B02"])
