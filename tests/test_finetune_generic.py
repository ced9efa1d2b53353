"""Issue 13 for `degas-hf finetune` on users' own GeoTIFFs: normalisation inherited from the pretrained processor
(estimated for new bands, saved with the model), a held-out split when there are no split files, the
`<name>_input.tif` / `<name>_label.tif` layout, `--band-names` checked against the files, refusals that name the
flag (missing --model, --num-classes 0, an existing --output-dir, damaged or pickle-only model folders, an
unwritable or full disk) and `--compile`."""

from __future__ import annotations

import errno
import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from degas_hf.cli import main as cli_main
from degas_hf.data.generic_segmentation import GeoTIFFSegmentationFolder
from degas_hf.training.finetune import FinetuneConfig, finetune

BANDS = ["B02", "B03", "B04", "B8A", "B11", "B12"]


def write_pairs(root: Path, count: int = 5, size: int = 32, frames: int = 2, bands=BANDS, descriptions=True,
                layout: str = "pairs", seed: int = 0, offset: float = 0.0) -> Path:
    """`count` image/label GeoTIFF pairs: `<root>/<name>_input.tif` + `<name>_label.tif` ("pairs"), or
    `<root>/images/<name>.tif` + `<root>/labels/<name>.tif` ("folders"). uint16 images (nodata 0) with band
    descriptions repeated per date, uint8 labels 0..2. `offset` shifts the last band (a band on another scale)."""
    rng = np.random.default_rng(seed)
    profile = dict(driver="GTiff", width=size, height=size, crs="EPSG:32631",
                   transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5600000.0))
    for i in range(count):
        image = rng.integers(200, 4000, size=(frames, len(bands), size, size)).astype(np.float64)
        image[:, -1] += offset
        label = rng.integers(0, 3, size=(1, size, size)).astype(np.uint8)
        if layout == "pairs":
            image_path, label_path = root / f"field{i}_input.tif", root / f"field{i}_label.tif"
        else:
            image_path, label_path = root / "images" / f"field{i}.tif", root / "labels" / f"field{i}.tif"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(image_path, "w", count=frames * len(bands), dtype="uint16", nodata=0, **profile) as dst:
            dst.write(image.reshape(-1, size, size).astype(np.uint16))
            if descriptions:
                dst.descriptions = tuple(list(bands) * frames)
        with rasterio.open(label_path, "w", count=1, dtype="uint8", **profile) as dst:
            dst.write(label)
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from degas_hf.hub.folder import build_tiny_folder

    return build_tiny_folder(tmp_path_factory.mktemp("pretrained") / "pre", "pretrained")


def _config(tmp_path, data, model, **overrides):
    options = dict(task="generic", data_dir=str(data), model=str(model), output_dir=str(tmp_path / "out"), max_steps=1,
                   per_device_train_batch_size=2, per_device_eval_batch_size=2, eval_strategy="no", figures=False,
                   logging_steps=1, dataset_kwargs={"band_names": BANDS, "num_frames": 2, "num_classes": 3})
    options.update(overrides)
    return FinetuneConfig(**options)


# ---------------------------------------------------------------------------------------------- 13.1 normalisation
def test_generic_task_inherits_pretrained_statistics_and_estimates_new_bands(tmp_path, pretrained):
    from degas_hf import STSwinMAEImageProcessor

    bands = [*BANDS, "NDWI"]
    data = write_pairs(tmp_path / "data", bands=bands, offset=20000.0)
    notes = []
    config = _config(tmp_path, data, pretrained, bands=bands,
                     dataset_kwargs={"band_names": bands, "num_frames": 2, "num_classes": 3})
    results = finetune(config, log=notes.append)
    source = STSwinMAEImageProcessor.from_pretrained(pretrained)
    saved = json.loads((tmp_path / "out" / "model" / "preprocessor_config.json").read_text())
    assert saved["band_names"] == bands
    assert saved["image_mean"][:6] == pytest.approx(source.image_mean)
    assert saved["image_std"][:6] == pytest.approx(source.image_std)
    assert saved["rescale_factor"] == source.rescale_factor
    # NDWI is new: its statistics come from the training images (uniform 200..4000 shifted by 20000)
    scale = source.rescale_factor
    assert saved["image_mean"][6] == pytest.approx(22100 * scale, rel=0.02)
    assert saved["image_std"][6] == pytest.approx(3800 / 12**0.5 * scale, rel=0.05)
    assert results["training"]["normalization"]["inherited"] == BANDS
    assert results["training"]["normalization"]["estimated"] == ["NDWI"]
    assert any("normalisation: inherited from" in n and "estimated from 4 training images for ['NDWI']" in n for n in notes)
    # what the model was trained on is what predict will feed it: roughly standardised values
    reader = GeoTIFFSegmentationFolder(data, "train", band_names=bands, num_frames=2, num_classes=3,
                                       processor=STSwinMAEImageProcessor.from_pretrained(tmp_path / "out" / "model"))
    values = reader[0]["pixel_values"]
    assert values[6].abs().mean() < 3 and values[6].mean().abs() < 0.5


def test_generic_task_from_a_preset_estimates_every_band(tmp_path):
    data = write_pairs(tmp_path / "data")
    results = finetune(_config(tmp_path, data, "degas-tiny"), log=lambda message: None)
    saved = json.loads((tmp_path / "out" / "model" / "preprocessor_config.json").read_text())
    assert saved["image_mean"] == pytest.approx([2100.0] * 6, rel=0.03)  # not mean 0 / std 1 on raw values
    assert results["training"]["normalization"]["estimated"] == BANDS


# ---------------------------------------------------------------------------------------------- 13.2 held-out split
def test_no_split_files_gives_a_fixed_seed_hold_out(tmp_path, caplog):
    data = write_pairs(tmp_path / "data", count=10, layout="folders", size=8)
    kwargs = dict(band_names=BANDS, num_frames=2, num_classes=3)
    with caplog.at_level(logging.WARNING):
        train = GeoTIFFSegmentationFolder(data, "train", **kwargs)
    val = GeoTIFFSegmentationFolder(data, "val", **kwargs)
    test = GeoTIFFSegmentationFolder(data, "test", **kwargs)
    train_keys, val_keys = {s.key for s in train.samples}, {s.key for s in val.samples}
    assert len(train_keys) == 8 and len(val_keys) == 2 and not train_keys & val_keys
    assert val_keys == {s.key for s in test.samples}
    assert {s.key for s in GeoTIFFSegmentationFolder(data, "train", **kwargs).samples} == train_keys  # fixed seed
    assert "no split files: holding out 2 of 10 images (seed 0)" in caplog.text


def test_split_files_partial_and_refused(tmp_path):
    data = write_pairs(tmp_path / "data", count=4, layout="folders", size=8)
    kwargs = dict(band_names=BANDS, num_frames=2, num_classes=3)
    (data / "train.txt").write_text("field0\nfield1\nfield2\n")
    assert [s.key for s in GeoTIFFSegmentationFolder(data, "val", **kwargs).samples] == ["field3"]
    (data / "train.txt").write_text("field0\nfield1\nfield2\nfield3\n")
    with pytest.raises(ValueError, match="no val.txt, and every image is named by train.txt"):
        GeoTIFFSegmentationFolder(data, "val", **kwargs)
    single = write_pairs(tmp_path / "one", count=1, size=8)
    with pytest.raises(ValueError, match="at least 2 are needed"):
        GeoTIFFSegmentationFolder(single, "train", **kwargs)


# ---------------------------------------------------------------------------------------------- issue 14.6 pairs
def test_input_label_pairs_in_one_folder(tmp_path):
    data = write_pairs(tmp_path / "data", count=3, size=8)
    (data / "train.txt").write_text("field0_input.tif\nfield1\n")
    (data / "val.txt").write_text("field2\n")
    train = GeoTIFFSegmentationFolder(data, "train", band_names=BANDS, num_frames=2, num_classes=3)
    assert [(s.key, s.image.name, s.label.name) for s in train.samples] == [
        ("field0", "field0_input.tif", "field0_label.tif"), ("field1", "field1_input.tif", "field1_label.tif")]
    item = train[0]
    assert item["pixel_values"].shape == (6, 2, 8, 8) and item["labels"].shape == (8, 8)
    (data / "field2_label.tif").unlink()
    with pytest.raises(ValueError, match="field2_label.tif does not exist"):
        GeoTIFFSegmentationFolder(data, "val", band_names=BANDS, num_frames=2, num_classes=3)


# ---------------------------------------------------------------------------------------------- 13.3 band names
def test_band_names_that_contradict_the_files_are_refused(tmp_path, capsys):
    data = write_pairs(tmp_path / "data", count=3, size=8, layout="folders")
    with pytest.raises(ValueError, match=r"contradict the band descriptions of .*field0.tif"):
        GeoTIFFSegmentationFolder(data, "train", band_names=BANDS[::-1], num_frames=2, num_classes=3)
    code = cli_main(["finetune", "--task", "generic", "--data", str(data), "--model", "degas-tiny", "--num-frames", "2",
                     "--num-classes", "3", "--band-names", ",".join(BANDS[::-1]), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "contradict the band descriptions" in err[0]
    # generic descriptions ("Band 1") say nothing: the names given are taken
    plain = write_pairs(tmp_path / "plain", count=2, size=8, descriptions=False, layout="folders")
    assert len(GeoTIFFSegmentationFolder(plain, "train", band_names=BANDS[::-1], num_frames=2, num_classes=3)) == 1


def test_band_names_space_or_comma_separated():
    from degas_hf.commands.finetune import split_band_names

    assert split_band_names(["B02", "B03"]) == split_band_names(["B02,B03"]) == split_band_names(["B02,", "B03"]) == ["B02", "B03"]


# ---------------------------------------------------------------------------------------------- 13.14 / 15 messages
@pytest.mark.parametrize("change, message", [
    ({"--model": "no/such/folder"}, "--model 'no/such/folder': no such folder (expected a saved model folder"),
    ({"--model": "./missing"}, "--model './missing': no such folder"),
    ({"--model": "my-org/not-in-the-cache"}, "--model 'my-org/not-in-the-cache': cannot load its configuration"),
    ({"--num-classes": "0"}, "--num-classes must be at least 1, found 0"),
    ({"--num-frames": "0"}, "--num-frames must be at least 1, found 0"),
    ({"--band-names": "B02,B02"}, "--band-names: each band once, found ['B02']"),
    ({"--class-names": "a"}, "--class-names gives 1 names for --num-classes 3"),
    ({"--task": "nope"}, "--task 'nope': unknown task"),
    ({"--lr": "0"}, "--lr must be a positive number, found 0.0"),
    ({"--batch-size": "0"}, "--batch-size must be a positive integer, found 0"),
    ({"--crop-size": "-4"}, "--crop-size must be a positive integer, found -4"),
    ({"--layer-decay": "2"}, "--layer-decay must be in (0, 1], found 2.0"),
    ({"--class-weights": "1,2"}, "--class-weights: 2 weights given for 3 classes"),
])
def test_cli_errors_name_the_flag(tmp_path, capsys, change, message):
    data = write_pairs(tmp_path / "data", count=2, size=8, layout="folders")
    args = {"--task": "generic", "--data": str(data), "--model": "degas-tiny", "--num-frames": "2", "--num-classes": "3",
            "--band-names": ",".join(BANDS), "--output-dir": str(tmp_path / "o"), **change}
    code = cli_main(["finetune", *[x for pair in args.items() for x in pair]])
    err = capsys.readouterr().err.strip().splitlines()
    # one error line, last; before it at most the run's own notes (normalisation, split), never a traceback
    assert code == 2 and all(line.startswith("degas-hf finetune: ") for line in err), err
    assert err[-1].startswith("degas-hf finetune: error: ") and message in err[-1]
    assert sum(line.startswith("degas-hf finetune: error: ") for line in err) == 1


# ---------------------------------------------------------------------------------------------- 13.5 overwrite
def test_existing_run_is_refused_unless_overwrite(tmp_path, capsys):
    from degas_hf.training.finetune import check_output_dir

    data = write_pairs(tmp_path / "data", count=2, size=8, layout="folders")
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "model" / "model.safetensors").write_bytes(b"my weights")
    (out / "results.json").write_text("{}")
    code = cli_main(["finetune", "--task", "generic", "--data", str(data), "--model", "degas-tiny", "--num-frames", "2",
                     "--num-classes", "3", "--band-names", *BANDS, "--output-dir", str(out), "--max-steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "already holds a fine-tuning run (results.json, model); pass --overwrite" in err
    assert (out / "model" / "model.safetensors").read_bytes() == b"my weights"
    assert check_output_dir(out, overwrite=True) == out


# ---------------------------------------------------------------------------------------------- 13.13 damaged input
def _damaged(folder: Path, kind: str) -> Path:
    weights = folder / "model.safetensors"
    if kind == "missing":
        weights.unlink()
    elif kind == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif kind == "garbled":
        weights.write_bytes(b"\x00garbage" * 100)
    elif kind == "pickle-only":
        weights.unlink()
        (folder / "pytorch_model.bin").write_bytes(b"\x80\x04cos\nsystem\n")
    return folder


@pytest.mark.parametrize("kind, message", [
    ("missing", "no model.safetensors"), ("truncated", "not a readable safetensors file (truncated or corrupted"),
    ("garbled", "not a readable safetensors file"), ("pickle-only", "holds only pickle weights (pytorch_model.bin)"),
])
def test_damaged_model_folder_is_one_line_exit_2(tmp_path, capsys, pretrained, kind, message):
    import shutil

    folder = _damaged(Path(shutil.copytree(pretrained, tmp_path / "model")), kind)
    data = write_pairs(tmp_path / "data", count=2, size=8, layout="folders")
    code = cli_main(["finetune", "--task", "generic", "--data", str(data), "--model", str(folder), "--num-frames", "2",
                     "--num-classes", "3", "--band-names", *BANDS, "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_unwritable_output_and_full_disk(tmp_path, capsys, monkeypatch):
    """(As root, chmod does not stop writes: the OS errors are injected.)"""
    import importlib

    module = importlib.import_module("degas_hf.training.finetune")  # the module, not the function of that name

    real_write = Path.write_bytes

    def read_only(self, data):
        if ".degas-write-test" in self.name:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    data = write_pairs(tmp_path / "data", count=2, size=8, layout="folders")
    code = cli_main(["finetune", "--task", "generic", "--data", str(data), "--model", "degas-tiny", "--num-frames", "2",
                     "--num-classes", "3", "--band-names", *BANDS, "--output-dir", str(tmp_path / "ro")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot be written: Permission denied" in err[0]
    monkeypatch.setattr(Path, "write_bytes", real_write)

    # disk full while saving the model: the previous model stays, one line says why
    final = tmp_path / "run" / "model"
    final.mkdir(parents=True)
    (final / "model.safetensors").write_bytes(b"previous")

    def full(model, processor, folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(importlib.import_module("degas_hf.hub.folder"), "prepare_hub_folder", full)
    with pytest.raises(ValueError, match="no space left on device; the previous model is kept"):
        module._save_model_folder(None, None, final)
    assert (final / "model.safetensors").read_bytes() == b"previous"
    assert sorted(p.name for p in final.parent.iterdir()) == ["model"]


# ---------------------------------------------------------------------------------------------- --compile
def test_compile_flag_calls_compile_model(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("degas_hf.training.compile")

    def compile_model(model, *, mode=None, dynamic=False):
        calls.append(type(model).__name__)
        return model

    fake.compile_model = compile_model
    monkeypatch.setitem(sys.modules, "degas_hf.training.compile", fake)
    data = write_pairs(tmp_path / "data", count=2, size=8, layout="folders")
    finetune(_config(tmp_path, data, "degas-tiny", compile=True, save_model=False), log=lambda message: None)
    assert calls == ["STSwinUNetForSemanticSegmentation"]


def test_default_model_name_skips_generic_folder_names(tmp_path, monkeypatch):
    from degas_hf.training.finetune import default_model_name

    monkeypatch.chdir(tmp_path)
    assert default_model_name("degas-demo/model", "generic") == "degas-demo-generic"
    assert default_model_name("runs/pre/checkpoint-500/", "crop_classification") == "pre-crop_classification"
    assert default_model_name("my-org/degas-100m", "sen1floods11") == "degas-100m-sen1floods11"
    assert default_model_name(".", "generic") == f"{tmp_path.name}-generic"
