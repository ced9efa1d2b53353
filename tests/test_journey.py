"""The whole journey of issue 13, as one test, with the command lines a user types: pretrain the tiny model on the
bundled Sentinel-2 series, fine-tune it on a generic GeoTIFF folder (real bundled imagery and LPIS labels cut into
`<name>_input.tif` / `<name>_label.tif` tiles, no split files), predict the scene, load the fine-tuned folder with a
plain `pipeline()` in a clean process where degas_hf cannot be imported, and `publish --dry-run` it as it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from degas_hf.cli import main as cli_main
from degas_hf.hub.folder import SAMPLE_SERIES_DIR, write_sample_series

DATES = (2, 10, 20, 30)  # indices into the bundled series, as write_sample_series takes them
CLASSES = {11: "annual cropland", 13: "grassland", 99: "non-cropland"}  # WorldCereal LC codes


def make_generic_folder(scene: Path, folder: Path, tile: int = 32) -> list[str]:
    """Cut the 4-date scene (date-major, 10 bands named per date) and its LC labels into tiles of `tile` px."""
    folder.mkdir(parents=True)
    with rasterio.open(SAMPLE_SERIES_DIR.parent / "labels" / "LC.tif") as src:
        codes = src.read(1)
    labels = np.full(codes.shape, 255, dtype=np.uint8)
    for index, code in enumerate(CLASSES):
        labels[codes == code] = index
    names = []
    with rasterio.open(scene) as src:
        for row in range(0, src.height, tile):
            for col in range(0, src.width, tile):
                window = Window(col, row, tile, tile)
                name = f"tile_r{row}_c{col}"
                profile = dict(src.profile, width=tile, height=tile, transform=src.window_transform(window))
                with rasterio.open(folder / f"{name}_input.tif", "w", **profile) as dst:
                    dst.write(src.read(window=window))
                    dst.descriptions = src.descriptions
                profile.update(count=1, dtype="uint8", nodata=None)
                with rasterio.open(folder / f"{name}_label.tif", "w", **profile) as dst:
                    dst.write(labels[row:row + tile, col:col + tile][None])
                names.append(name)
    return names


CLEAN_PIPELINE = r'''
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "degas_hf" or name.startswith("degas_hf."):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
import numpy as np
from transformers import pipeline
segmenter = pipeline(model=sys.argv[1], trust_remote_code=True)   # no task: it comes from config.json
result = segmenter(sys.argv[2], frames_per_file=4)
np.save(sys.argv[3], result["class_map"])
print(json.dumps({"pipeline": type(segmenter).__name__, "module": type(segmenter).__module__}))
'''


@pytest.mark.timeout(300)
def test_pretrain_finetune_predict_pipeline_publish(tmp_path, capsys):
    # 1. pretrain degas-tiny on the bundled series, a few steps
    pretrained = tmp_path / "degas-demo" / "model"  # named as the demo names it
    code = cli_main([
        "pretrain", "pretrain_demo", f"data.root={SAMPLE_SERIES_DIR}", f"output_dir={tmp_path / 'pretrain'}",
        f"export_dir={pretrained}", "train.max_steps=2", "train.per_device_batch_size=2", "train.threads=1",
        "data.crop_size=32", "data.samples_per_item=4", "data.num_workers=0", "optim.warmup_steps=1",
        "logging.tensorboard=false", "logging.progress_bar=false", "logging.figure_every=0", "logging.log_every=1",
        "checkpoint.save_every=2",
    ])
    assert code == 0, capsys.readouterr().err[-3000:]
    assert (pretrained / "model.safetensors").is_file() and (pretrained / "preprocessor_config.json").is_file()
    capsys.readouterr()

    # 2. fine-tune on a generic folder of real imagery: pairs in one folder, no split files
    scene = write_sample_series(tmp_path / "scene.tif", dates=DATES)
    data = tmp_path / "my_fields"
    names = make_generic_folder(scene, data)
    with rasterio.open(scene) as src:
        band_names = list(src.descriptions[: src.count // 4])
    run = tmp_path / "runs" / "fields"
    argv = ["finetune", "--task", "generic", "--data", str(data), "--model", str(pretrained),
            "--band-names", ",".join(band_names), "--num-frames", "4", "--num-classes", "3",
            "--class-names", *CLASSES.values(), "--max-steps", "2", "--batch-size", "2", "--eval-strategy", "no",
            "--no-figures", "--output-dir", str(run)]
    code = cli_main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    assert "normalisation: inherited from" in captured.err and "['B02', 'B03', 'B04', 'B8A', 'B11', 'B12']" in captured.err
    assert "evaluated on 1 held out with seed 0" in captured.err
    results = json.loads((run / "results.json").read_text())
    held_out = results["training"]["automatic_split"]["held_out"]
    assert len(held_out) == 1 and held_out[0] in names
    assert results["model"]["name"] == "degas-demo-generic"  # not "model-generic"
    source = json.loads((pretrained / "preprocessor_config.json").read_text())
    saved = json.loads((run / "model" / "preprocessor_config.json").read_text())
    assert saved["image_mean"] == pytest.approx(source["image_mean"]) and saved["band_names"] == source["band_names"]
    # running it again into the same folder is refused: nothing of the first run is lost
    assert cli_main(argv) == 2 and "pass --overwrite" in capsys.readouterr().err

    # 3. predict the whole scene with the fine-tuned folder
    prediction = tmp_path / "prediction.tif"
    code = cli_main(["predict", "--model", str(run / "model"), "--output", str(prediction), "--frames-per-file", "4",
                     "--window", "64", "--overlap", "0", str(scene)])
    assert code == 0, capsys.readouterr().err[-3000:]
    with rasterio.open(prediction) as src:
        predicted = src.read(1)
        assert (src.width, src.height) == (64, 64) and src.crs.to_epsg() == 32631

    # 4. pipeline() in a clean process (degas_hf blocked, offline): same classes as predict
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-I", "-c", CLEAN_PIPELINE, str(run / "model"), str(scene),
                           str(tmp_path / "class_map.npy")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["pipeline"] == "STSwinMAESegmentationPipeline" and report["module"].startswith("transformers_modules")
    class_map = np.load(tmp_path / "class_map.npy")
    valid = (class_map >= 0) & (predicted != 255)
    assert valid.mean() > 0.9 and (class_map[valid] == predicted[valid]).all()

    # 5. publish --dry-run, the folder as finetune wrote it, with its results
    tree = tmp_path / "publish-tree"
    code = cli_main(["publish", str(run / "model"), "--repo-id", "my-org/degas-tiny-fields", "--results",
                     str(run / "results.json"), "--dry-run", "--output", str(tree)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    card = (tree / "README.md").read_text()
    assert "Hub pipeline: `multispectral-segmentation`" in card and "| annual cropland |" in card
    assert {"config.json", "model.safetensors", "pipeline_st_swin_mae.py", "results.json"} <= {
        p.name for p in tree.iterdir()}

    # the pretrained export publishes too (validated here; its clean load is in tests/test_publish.py)
    from degas_hf.hub.publish import validate_folder

    assert validate_folder(pretrained).kind == "pretrained"
