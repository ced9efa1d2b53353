"""Large-scene prediction: blending, streaming, agreement with one forward, `degas-hf predict` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from _helpers_io import BANDS6, LSTS, PointwiseModel, save_tiny_model, tiny_segmentation_model, write_series

from degas_hf.cli import main as cli_main
from degas_hf.inference import ArraySink, SlidingWindowPredictor, blend_ramp, window_starts
from degas_hf.models.st_swin_mae.image_processing_st_swin_mae import STSwinMAEImageProcessor


def test_window_starts_cover_the_scene():
    assert window_starts(100, 128, 96) == [0]
    starts = window_starts(300, 128, 96)
    assert starts == [0, 96, 172] and starts[-1] + 128 == 300
    with pytest.raises(ValueError, match="stride"):
        window_starts(300, 128, 0)


def test_cosine_ramp_is_a_partition_of_unity_in_the_overlap():
    ramp = blend_ramp(128, 32)
    assert ramp.min() > 0 and ramp.max() == 1
    np.testing.assert_allclose(ramp[-32:] + ramp[:32], 1.0, atol=1e-6)  # neighbour's rising edge
    np.testing.assert_array_equal(blend_ramp(128, 32, ramp_start=False)[:32], 1.0)
    assert np.all(np.diff(ramp[:32]) > 0)  # smooth rise, no step
    with pytest.raises(ValueError, match="Unknown blend"):
        blend_ramp(8, 2, kind="gauss")


@pytest.mark.parametrize("blend", ["cosine", "linear", "none"])
def test_sliding_windows_reproduce_one_forward_without_seams(blend):
    """A pointwise model gives the same value at a pixel whatever window holds it: the blended large-scene
    prediction must equal one forward over the whole scene, to float precision."""
    rng = np.random.default_rng(0)
    scene = rng.random((4, 6, 150, 210)).astype(np.float32) * 3000
    scene[:, :, 20:25] = np.nan  # a nodata stripe in every date
    scene[1, :, 60:70, 100:120] = np.nan  # missing in one date only: still predicted
    model = PointwiseModel()
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=BANDS6)
    predictor = SlidingWindowPredictor(model, processor, window_size=64, overlap=16, batch_size=3, blend=blend,
                                       probabilities=True, progress=False)
    result = predictor.predict(scene)
    batch = processor(scene, return_tensors="pt")
    with torch.no_grad():
        reference = model(batch["pixel_values"])["logits"].softmax(dim=1)[0].numpy()
    has_data = np.isfinite(result["probabilities"][0])
    assert not has_data[20:25].any() and has_data[60:70, 100:120].all()
    assert has_data.sum() == 150 * 210 - 5 * 210
    np.testing.assert_allclose(result["probabilities"][:, has_data], reference[:, has_data], atol=2e-6)
    assert (result["classes"][~has_data] == 255).all()
    np.testing.assert_array_equal(result["classes"][has_data], reference.argmax(0)[has_data])


def test_streams_rows_in_order_with_a_strip_sized_accumulator():
    class RecordingSink(ArraySink):
        def __init__(self):
            super().__init__()
            self.calls = []

        def write(self, name, block, row_off):
            self.calls.append((row_off, block.shape[-2]))
            super().write(name, block, row_off)

    sink = RecordingSink()
    predictor = SlidingWindowPredictor(PointwiseModel(), STSwinMAEImageProcessor(band_names=BANDS6), window_size=32,
                                       overlap=8, batch_size=4, progress=False, prefetch=False)
    predictor.predict(np.random.rand(4, 6, 200, 50).astype(np.float32), sink=sink)
    starts = [start for start, _ in sink.calls]
    assert len(sink.calls) == len(window_starts(200, 32, 24)) and starts == sorted(starts)
    assert max(rows for _, rows in sink.calls) <= 32  # never more than one window of rows held
    assert sum(rows for _, rows in sink.calls) == 200


def test_real_model_one_window_equals_one_forward():
    model = tiny_segmentation_model(num_labels=3)
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=BANDS6)
    scene = (np.random.default_rng(1).random((4, 6, 40, 56)) * 3000).astype(np.uint16)
    result = SlidingWindowPredictor(model, processor, window_size=64, overlap=16, progress=False).predict(scene)
    batch = processor(scene, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    np.testing.assert_array_equal(result["classes"], logits.argmax(1)[0].numpy())


def test_real_model_over_several_windows_is_smooth_and_complete():
    model = tiny_segmentation_model(num_labels=4, temporal_aggregation="mean")
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=BANDS6)
    scene = (np.random.default_rng(2).random((3, 6, 80, 90)) * 3000).astype(np.uint16)
    predictor = SlidingWindowPredictor(model, processor, window_size=48, overlap=16, batch_size=4,
                                       probabilities=True, progress=False)
    result = predictor.predict(scene)
    probabilities = result["probabilities"]
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert result["classes"].max() < 4


def test_regression_model_values_and_nodata():
    model = tiny_segmentation_model(num_labels=1, problem_type="regression")
    processor = STSwinMAEImageProcessor(band_names=BANDS6, nodata_value=0)
    scene = np.random.default_rng(3).random((4, 6, 40, 40)).astype(np.float32) + 1
    scene[:, :, :5] = 0
    result = SlidingWindowPredictor(model, processor, window_size=32, overlap=8, progress=False).predict(scene)
    assert result["values"].shape == (40, 40) and result["values"].dtype == np.float32
    assert np.isnan(result["values"][:5]).all() and np.isfinite(result["values"][5:]).all()


def test_wrong_number_of_dates_for_concat_model():
    model = tiny_segmentation_model(num_labels=2)  # concat over 4 dates
    predictor = SlidingWindowPredictor(model, STSwinMAEImageProcessor(band_names=BANDS6), progress=False)
    with pytest.raises(ValueError, match="built for 4 dates.*has 2"):
        predictor.predict(np.ones((2, 6, 16, 16), np.float32))


# ---------------------------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"), num_labels=3)


def _run(*argv) -> int:
    return cli_main(["predict", *map(str, argv), "--no-progress"])


def test_cli_writes_georeferenced_classes_probabilities_and_quicklook(model_dir, tmp_path):
    inputs = write_series(tmp_path, num_dates=4, height=100, width=140, stripe=(10, 14))
    out = tmp_path / "out" / "pred.tif"
    out.parent.mkdir()
    assert _run("--model", model_dir, "--output", out, *inputs, "--window", 64, "--overlap", 16, "--probabilities") == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["pred.png", "pred.probabilities.tif", "pred.tif"]
    with rasterio.open(inputs[0]) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform and dst.shape == src.shape
        assert dst.nodata == 255 and dst.dtypes[0] == "uint8"
        classes = dst.read(1)
    assert (classes[10:14] == 255).all() and (classes[14:] < 3).all()
    with rasterio.open(out.parent / "pred.probabilities.tif") as dst:
        assert dst.count == 3 and np.isnan(dst.nodata)
        np.testing.assert_allclose(dst.read()[:, 20:].sum(axis=0), 1.0, atol=1e-5)
    assert (out.parent / "pred.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"



def test_cli_keeps_existing_outputs_unless_overwrite(model_dir, tmp_path, capsys):
    """A second run into the same --output must not silently replace the first run's class map or quicklook."""
    inputs = write_series(tmp_path, num_dates=4, height=40, width=40)
    out = tmp_path / "pred.tif"
    assert _run("--model", model_dir, "--output", out, *inputs, "--window", 32, "--overlap", 8) == 0
    before = {p.name: p.read_bytes() for p in (out, out.with_suffix(".png"))}
    capsys.readouterr()
    assert _run("--model", model_dir, "--output", out, *inputs, "--window", 32, "--overlap", 8) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0] and "pred.tif" in err[0], err
    assert {p.name: p.read_bytes() for p in (out, out.with_suffix(".png"))} == before
    assert _run("--model", model_dir, "--output", out, *inputs, "--window", 32, "--overlap", 8, "--overwrite") == 0

def test_cli_on_real_landsat_series(tmp_path):
    model_dir = tmp_path / "model"
    model = tiny_segmentation_model(num_labels=2, band_names=("RED", "NIR", "SWIR1"))
    model.save_pretrained(model_dir)
    STSwinMAEImageProcessor(band_names=["RED", "NIR", "SWIR1"], image_mean=[800, 2500, 2000],
                            image_std=[600, 900, 900]).save_pretrained(model_dir)
    stacks = []
    for red in LSTS:  # one 3-band file per date, from the per-band files
        bands = [red, red.with_name(red.name.replace("_b3", "_b4")), red.with_name(red.name.replace("_b3", "_b5"))]
        arrays = [rasterio.open(b).read(1) for b in bands]
        with rasterio.open(red) as src:
            profile = src.profile | {"count": 3}
        path = tmp_path / red.name.replace("_b3", "")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.stack(arrays))
        stacks.append(path)
    out = tmp_path / "landsat.tif"
    assert _run("--model", model_dir, "--output", out, *stacks, "--band-names", "RED,NIR,SWIR1",
                "--window", 32, "--overlap", 8) == 0
    with rasterio.open(out) as dst, rasterio.open(LSTS[0]) as src:
        classes = dst.read(1)
        assert dst.crs == src.crs and dst.transform == src.transform
    all_missing = np.all([rasterio.open(p).read(1) == -9999 for p in stacks], axis=0)
    assert (classes[all_missing] == 255).all() and (classes[~all_missing] < 2).all()


def test_cli_bad_inputs_leave_no_output(model_dir, tmp_path, capsys):
    good = write_series(tmp_path, num_dates=4, height=40, width=40)
    (tmp_path / "other").mkdir()
    other_crs = write_series(tmp_path / "other", num_dates=1, height=40, width=40, crs="EPSG:4326")
    (tmp_path / "few").mkdir()
    few_bands = write_series(tmp_path / "few", num_dates=4, height=40, width=40, band_names=BANDS6[:4])
    out = tmp_path / "results" / "pred.tif"
    out.parent.mkdir()
    cases = [
        ([*good[:3], other_crs[0]], "CRS"),
        (few_bands, "Missing bands"),
        ([tmp_path / "nope.tif"], "does not exist"),
        (good[:2], "built for 4 dates"),
    ]
    for inputs, message in cases:
        assert _run("--model", model_dir, "--output", out, *inputs) == 2
        assert message in capsys.readouterr().err
        assert list(out.parent.iterdir()) == []
    assert _run("--model", model_dir, "--output", tmp_path / "missing" / "pred.tif", *good) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _run("--model", tmp_path, "--output", out, *good) == 2
    assert "config.json" in capsys.readouterr().err


def test_cli_all_nodata_warns_and_writes_all_nodata(model_dir, tmp_path):
    inputs = write_series(tmp_path, num_dates=4, height=30, width=30, stripe=(0, 30))
    out = tmp_path / "empty.tif"
    with pytest.warns(UserWarning, match="nodata"):
        assert _run("--model", model_dir, "--output", out, *inputs, "--no-quicklook") == 0
    with rasterio.open(out) as dst:
        assert (dst.read(1) == 255).all()


def test_predictor_runs_a_bf16_model_and_generic_band_descriptions(tmp_path):
    import warnings as _warnings

    from _helpers_io import tiny_segmentation_model, write_series

    from degas_hf.inference import SlidingWindowPredictor, predict_geotiff
    from degas_hf.models.st_swin_mae.image_processing_st_swin_mae import STSwinMAEImageProcessor

    model = tiny_segmentation_model(num_labels=3).eval()
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=model.config.band_names)
    scene = np.random.default_rng(0).integers(1, 3000, (4, 6, 40, 40)).astype(np.uint16)
    result = SlidingWindowPredictor(model.to(torch.bfloat16), processor, window_size=32, overlap=8,
                                    progress=False).predict(scene)
    assert result["classes"].shape == (40, 40)

    paths = write_series(tmp_path, num_dates=4, height=40, width=40,
                         band_names=[f"Band {i + 1}" for i in range(6)], stripe=None)
    with _warnings.catch_warnings(record=True):
        _warnings.simplefilter("always")
        written = predict_geotiff(model.float(), processor, paths, tmp_path / "out.tif", window_size=32, overlap=8,
                                  quicklook=False, progress=False)
    assert written["main"].exists()


# ------------------------------------------------------------------------------------ issue 11: the fast pipeline


def test_split_window_rows_covers_each_row_once():
    from degas_hf.inference import split_window_rows

    assert split_window_rows(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert split_window_rows(2, 4) == [(0, 1), (1, 2)]  # never more groups than rows
    assert split_window_rows(5, 1) == [(0, 5)]


@pytest.mark.parametrize("overlap,blend", [(16, "numpy"), (40, "torch")])  # 40: rows under up to 3 window rows
def test_several_devices_give_the_one_device_result_bit_for_bit(overlap, blend):
    """Fake devices (three CPU entries) run the real split: each group also runs the window rows above it that
    reach into its rows, so every output row sums the same windows in the same order. With blend="torch" the
    GPU code path (blend on the device, windows cut as views) runs on the CPU against numpy's blend."""
    model = tiny_segmentation_model(num_labels=3)
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=BANDS6)
    scene = (np.random.default_rng(4).random((4, 6, 150 if overlap == 16 else 90, 70)) * 3000 + 1).astype(np.uint16)
    scene[:, :, 40:60] = 0
    processor.nodata_value = 0
    kwargs = dict(window_size=48, overlap=overlap, batch_size=2, probabilities=True, progress=False)
    one = SlidingWindowPredictor(model, processor, **kwargs).predict(scene)

    class RecordingSink(ArraySink):
        def __init__(self):
            super().__init__()
            self.rows = []

        def write(self, name, block, row_off):
            if name == "classes":
                self.rows.extend(range(row_off, row_off + block.shape[-2]))
            super().write(name, block, row_off)

    sink = RecordingSink()
    split = SlidingWindowPredictor(model, processor, devices=["cpu", "cpu", "cpu"], **kwargs)
    split.cpu_blend = blend
    split.predict(scene, sink=sink)
    assert sorted(sink.rows) == list(range(scene.shape[2]))  # every row written exactly once
    for name in one:
        np.testing.assert_array_equal(sink.result[name], one[name])


def test_windows_are_views_of_one_strip_when_evenly_spaced():
    strip = torch.arange(2 * 3 * 40, dtype=torch.float32).reshape(2, 3, 40)
    windows = SlidingWindowPredictor._cut(strip, [0, 12, 24], 16)
    assert windows.shape == (3, 2, 3, 16) and windows.data_ptr() == strip.data_ptr()  # no copy
    np.testing.assert_array_equal(windows[2].numpy(), strip[..., 24:40].numpy())
    uneven = SlidingWindowPredictor._cut(strip, [0, 12, 20], 16)  # the flush-right last window
    np.testing.assert_array_equal(uneven[2].numpy(), strip[..., 20:36].numpy())
    from degas_hf.inference.sliding_window import _NumpyStrip  # the CPU path

    array = strip.numpy()
    views = _NumpyStrip._cut(array, [0, 12, 24], 16)
    assert views.shape == (3, 2, 3, 16) and np.shares_memory(views, array)
    for index, offset in enumerate([0, 12, 24]):
        np.testing.assert_array_equal(views[index], array[..., offset : offset + 16])


def test_bf16_precision_on_the_cpu_agrees_with_fp32(monkeypatch):
    from degas_hf.inference import resolve_precision
    from degas_hf.inference import sliding_window

    model = tiny_segmentation_model(num_labels=3)
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=BANDS6)
    assert resolve_precision(None, "cpu") == "fp32"
    if not sliding_window._cpu_supports("bf16"):
        pytest.skip("this CPU has no bf16 support")
    scene = (np.random.default_rng(5).random((4, 6, 64, 64)) * 3000 + 1).astype(np.uint16)
    kwargs = dict(window_size=32, overlap=8, probabilities=True, progress=False)
    fp32 = SlidingWindowPredictor(model, processor, **kwargs).predict(scene)
    bf16 = SlidingWindowPredictor(model, processor, precision="bf16", **kwargs).predict(scene)
    assert bf16["probabilities"].dtype == np.float32
    np.testing.assert_allclose(bf16["probabilities"], fp32["probabilities"], atol=0.05)
    monkeypatch.setattr(sliding_window, "_cpu_supports", lambda precision: False)
    with pytest.raises(ValueError, match="no bf16 support"):
        SlidingWindowPredictor(model, processor, precision="bf16")


def test_quicklook_sampler_equals_a_decimated_read_without_reading_twice():
    """The quicklook is filled from the prediction's own reads: it must equal a nearest-neighbour decimation of
    the input and of the output, with every grid pixel filled."""
    from degas_hf.inference import ArraySource, QuicklookSampler

    rng = np.random.default_rng(6)
    scene = (rng.random((3, 6, 170, 130)) * 3000 + 1).astype(np.uint16)
    reads = []

    class CountingSource(ArraySource):
        def read(self, *args, out_shape=None, **kwargs):
            reads.append(out_shape)
            return super().read(*args, out_shape=out_shape, **kwargs)

    source = CountingSource(scene, band_names=BANDS6)
    sampler = QuicklookSampler(170, 130, num_frames=3, num_rgb=3, max_size=50)
    model = PointwiseModel(num_frames=3)
    result = SlidingWindowPredictor(model, STSwinMAEImageProcessor(band_names=BANDS6), window_size=40, overlap=8,
                                    batch_size=3, progress=False).predict(source, quicklook=sampler,
                                                                          rgb_bands=[2, 1, 0])
    assert reads and all(shape is None for shape in reads)  # no decimated second pass
    expected = ArraySource(scene).read(bands=[2, 1, 0], out_shape=sampler.shape).astype(np.float32)
    np.testing.assert_array_equal(sampler.rgb, expected)
    np.testing.assert_array_equal(sampler.prediction, ArraySource(result["classes"][None, None]).read(
        out_shape=sampler.shape)[0, 0])


# ---------------------------------------------------------------------------- the CLI: outputs and bad input


def test_cli_cog_colour_table_and_class_names(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model", num_labels=3, id2label={0: "land", 1: "water", 2: "cloud"})
    inputs = write_series(tmp_path, num_dates=4, height=40, width=56)
    out = tmp_path / "map.tif"
    assert _run("--model", model_dir, "--output", out, *inputs, "--window", 32, "--overlap", 8, "--cog",
                "--band-names", *BANDS6) == 0
    with rasterio.open(out) as dst:
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert dst.colormap(1)[1] == (255, 127, 14, 255)  # the quicklook palette
        assert json.loads(dst.tags()["CLASS_NAMES"]) == {"0": "land", "1": "water", "2": "cloud"}
        assert dst.tags(1)["CLASS_2"] == "cloud" and dst.nodata == 255
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_cli_output_must_be_a_geotiff_name(model_dir, tmp_path, capsys):
    inputs = write_series(tmp_path, num_dates=4, height=20, width=20)
    before = sorted(p.name for p in tmp_path.iterdir())
    for name in ("X.png", "X"):
        assert _run("--model", model_dir, "--output", tmp_path / name, *inputs) == 2
        err = capsys.readouterr().err
        assert "--output" in err and ".tif or .tiff" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cli_device_precision_and_devices_errors(model_dir, tmp_path, capsys, monkeypatch):
    from degas_hf.inference import sliding_window

    inputs = write_series(tmp_path, num_dates=4, height=20, width=20)
    out = tmp_path / "o.tif"
    if not torch.cuda.is_available():
        assert _run("--model", model_dir, "--output", out, *inputs, "--device", "cuda") == 2
        err = capsys.readouterr().err
        assert "--device cuda" in err and "CUDA" in err and len(err.strip().splitlines()) == 1
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert _run("--model", model_dir, "--output", out, *inputs, "--devices", visible + 2) == 2
    err = capsys.readouterr().err
    assert f"--devices {visible + 2}" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(sliding_window, "_cpu_supports", lambda precision: False)
    assert _run("--model", model_dir, "--output", out, *inputs, "--device", "cpu", "--precision", "bf16") == 2
    err = capsys.readouterr().err
    assert "--precision bf16" in err and "no bf16 support" in err
    assert not out.exists()


def test_cli_band_names_space_or_comma_separated(model_dir, tmp_path, capsys):
    from degas_hf.commands.predict import band_name_list

    assert band_name_list(["B02,B03", "B04"]) == ["B02", "B03", "B04"]
    inputs = write_series(tmp_path, num_dates=4, height=24, width=24, band_names=[f"Band {i}" for i in range(6)])
    for names in (BANDS6, [",".join(BANDS6)]):
        assert _run("--model", model_dir, "--output", tmp_path / "o.tif", *inputs, "--band-names", *names,
                    "--no-quicklook", "--window", 24, "--overlap", 8, "--overwrite") == 0
    assert _run("--model", model_dir, "--output", tmp_path / "o.tif", inputs[0], "--band-names", "B02",
                *map(str, inputs[1:])) == 2
    assert "--band-names took" in capsys.readouterr().err
    assert _run("--model", model_dir, "--output", tmp_path / "o.tif", *inputs, "--band-names", "B02,B03",
                "--overwrite") == 2
    err = capsys.readouterr().err
    assert "--band-names names 2 bands" in err and "`band_names`" not in err  # the flag, not the Python argument


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    from degas_hf.models.st_swin_mae.modeling_st_swin_mae import STSwinMAEForPreTraining

    folder = tmp_path_factory.mktemp("pretrained")
    model = tiny_segmentation_model(num_labels=3)
    STSwinMAEForPreTraining(model.config).save_pretrained(folder)
    STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=BANDS6).save_pretrained(folder)
    return folder


def test_cli_refuses_broken_or_untrained_model_folders(model_dir, pretrained_dir, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    inputs = write_series(tmp_path, num_dates=4, height=20, width=20)
    out = tmp_path / "o.tif"

    def folder(name, weights=None):
        target = tmp_path / name
        shutil.copytree(model_dir, target)
        if weights is not None:
            weights(target / "model.safetensors")
        return target

    def nan_weights(path):
        tensors = load_file(path)
        tensors["segmentation_head.weight"][0, 0] = float("nan")
        save_file(tensors, path, metadata={"format": "pt"})

    def pickle_only(path):
        path.rename(path.with_name("pytorch_model.bin"))

    cases = [
        (folder("nan", nan_weights), "not finite"),
        (folder("truncated", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])), "truncated or corrupted"),
        (folder("garbled", lambda p: p.write_bytes(b"\x00garbage" * 64)), "not a readable safetensors file"),
        (folder("no_weights", lambda p: p.unlink()), "no model.safetensors"),
        (folder("pickle", pickle_only), "only pickle weights"),
        (pretrained_dir, "no trained segmentation head"),
        (tmp_path / "missing_folder", "does not exist"),
        ("nobody/no-such-model", "not found in the local Hugging Face cache"),
    ]
    for model, message in cases:
        assert _run("--model", model, "--output", out, *inputs) == 2, model
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1] and err[-1].startswith("degas-hf predict: error: "), (model, err)
        assert not [line for line in err if "Traceback" in line or "error" in line and line is not err[-1]]
        assert not out.exists()
    assert _run("--model", pretrained_dir, "--output", out, *inputs, "--allow-untrained-head", "--no-quicklook") == 0


def test_cli_takes_a_hub_id_from_the_local_cache(model_dir, tmp_path, monkeypatch):
    """`--model user/name` resolves offline through huggingface_hub's cache layout, as finetune's --model does."""
    import shutil

    import huggingface_hub.constants

    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-flood" / "snapshots" / ("a" * 40)
    shutil.copytree(model_dir, snapshot)
    (cache / "models--someone--tiny-flood" / "refs").mkdir()
    (cache / "models--someone--tiny-flood" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    inputs = write_series(tmp_path, num_dates=4, height=20, width=20)
    assert _run("--model", "someone/tiny-flood", "--output", tmp_path / "o.tif", *inputs, "--no-quicklook") == 0


def test_mean_model_warns_when_the_number_of_dates_differs_from_training():
    model = tiny_segmentation_model(num_labels=2, temporal_aggregation="mean")  # config.num_frames = 4
    predictor = SlidingWindowPredictor(model, STSwinMAEImageProcessor(band_names=BANDS6), progress=False)
    with pytest.warns(UserWarning, match="trained on 4 dates.*has 1"):
        predictor.predict(np.ones((1, 6, 16, 16), np.float32))


def test_sigterm_and_killed_runs_leave_no_temporary_file(model_dir, tmp_path, monkeypatch, capsys):
    import os
    import signal

    from degas_hf.inference.predict import GeoTiffSink

    inputs = write_series(tmp_path, num_dates=4, height=64, width=40)
    folder = tmp_path / "results"
    folder.mkdir()
    out = folder / "pred.tif"
    # What a run killed with SIGKILL leaves: temporaries of a dead process (and of an older naming); a live
    # process's temporary (another run writing the same output) must stay.
    dead = folder / ".pred.tif.4194303.abcd1234.tmp.tif"
    old_style = folder / ".pred.tif.xyz12_ab.tmp.tif"
    live = folder / f".pred.tif.{os.getppid()}.live_tmp.tmp.tif"
    for path in (dead, old_style, live, folder / ".pred.png.4194303.q1234567.tmp.png"):
        path.write_bytes(b"partial")
    assert _run("--model", model_dir, "--output", out, *inputs, "--window", 32, "--overlap", 8) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(["pred.tif", "pred.png", live.name])
    live.unlink()
    out.unlink()
    (folder / "pred.png").unlink()

    write = GeoTiffSink.write

    def terminated_while_writing(self, name, block, row_off):
        write(self, name, block, row_off)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(GeoTiffSink, "write", terminated_while_writing)
    assert _run("--model", model_dir, "--output", out, *inputs, "--window", 32, "--overlap", 8) == 128 + 15
    assert "terminated" in capsys.readouterr().err
    assert list(folder.iterdir()) == []


def test_help_and_argument_errors_do_not_import_torch_or_transformers():
    """`degas-hf --help` and argument errors must be immediate: the console script's entry point defers what
    `import degas_hf` registers, and command modules import only the standard library at module level."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import sys
        from degas_hf_cli import main
        for argv in (["--help"], ["predict", "--help"], ["predict", "--model", "m", "-o", "o.tif", "--batch-size", "0",
                                                         "in.tif"],
                     ["pretrain", "--help"], ["finetune", "--help"], ["publish", "--help"], ["export", "--help"],
                     ["prepare-ssl4eo", "--help"], ["demo", "--help"]):
            try:
                main(argv)
            except SystemExit as exit:
                assert exit.code in (0, 2), exit.code
        heavy = sorted(m for m in ("torch", "transformers", "numpy", "rasterio") if m in sys.modules)
        assert not heavy, heavy
        print("light")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "light" in done.stdout, done.stderr[-2000:]
    assert "argument --batch-size: expected an integer >= 1, got 0" in done.stderr


def test_a_model_that_cannot_be_placed_leaves_no_writer_thread(monkeypatch):
    """The replicas are made before the writer thread starts: an error there (here compile_model failing) is raised
    and leaves no 'degas-write' thread blocked for the life of the process."""
    import threading

    from degas_hf.training import compile as compile_module

    def broken(*args, **kwargs):
        raise RuntimeError("compile failed")

    monkeypatch.setattr(compile_module, "compile_model", broken)
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=BANDS6)
    predictor = SlidingWindowPredictor(tiny_segmentation_model(num_labels=3), processor, window_size=16, overlap=4,
                                       progress=False, compile=True)
    with pytest.raises(RuntimeError, match="compile failed"):
        predictor.predict(np.random.rand(4, 6, 40, 40).astype(np.float32))
    assert not [t for t in threading.enumerate() if t.name == "degas-write" and t.is_alive()]
