"""`degas-hf demo --fast`: the main job end to end (same code as the full demo, fewer steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(300)
def test_demo_fast_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "degas_hf.cli", "demo", "--fast", "--output-dir", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = json.loads((out / "summary.json").read_text())
    outputs = summary["outputs"]
    for key in ("hub_ready_model", "loss_curve", "reconstruction", "segmentation_model", "prediction",
                "prediction_quicklook"):
        assert Path(outputs[key]).exists(), key
        assert outputs[key] in proc.stdout, f"{key} path not printed"
    assert (Path(outputs["hub_ready_model"]) / "model.safetensors").exists()
    assert (Path(outputs["hub_ready_model"]) / "preprocessor_config.json").exists()
    assert summary["pretrain"]["steps"] == 30
    assert 0.0 <= summary["heldout_bottom_half"]["pixel_accuracy"] <= 1.0
    import rasterio

    with rasterio.open(outputs["prediction"]) as src:
        assert src.crs.to_epsg() == 32631 and (src.width, src.height) == (64, 64)
        assert set(src.read(1).ravel().tolist()) <= {0, 1, 2, 255}

    # issue 13.9/13.12: both folders publish as they are, their cards claim nothing untrue, and the segmentation
    # folder loads with a plain pipeline() offline (its task is in config.json's custom_pipelines)
    from transformers import pipeline

    from degas_hf.hub.model_card import render_model_card
    from degas_hf.hub.publish import validate_folder

    segmentation = Path(outputs["segmentation_model"])
    assert list(json.loads((segmentation / "config.json").read_text())["custom_pipelines"]) == ["multispectral-segmentation"]
    for folder in (outputs["hub_ready_model"], outputs["segmentation_model"]):
        card = render_model_card(validate_folder(folder), repo_id="my-org/degas-demo").text
        assert "264 x 264" not in card and "SSL4EO-S12 (Wang" not in card
        assert "pipeline: ." not in card and "pipelines: ." not in card
    from degas_hf.commands.demo import DEMO_DATES, sample_dir

    segmenter = pipeline(model=str(segmentation), trust_remote_code=True)
    class_map = segmenter([str(sample_dir() / "s2" / f"{date}.tif") for date in DEMO_DATES])["class_map"]
    with rasterio.open(outputs["prediction"]) as src:
        predicted = src.read(1)
    valid = (class_map >= 0) & (predicted != 255)
    assert valid.mean() > 0.9 and (class_map[valid] == predicted[valid]).all()

    # a second run replaces the previous demo output; a folder the demo did not write is refused
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    from degas_hf.commands.demo import _prepare_output

    with pytest.raises(SystemExit, match="not written by the demo"):
        _prepare_output(foreign)
    _prepare_output(out)
    assert not (out / "summary.json").exists()
