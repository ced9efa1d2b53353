"""The Hub pipeline: in process, and from a saved folder in a clean process with trust_remote_code=True."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _helpers_io import BANDS6, S2_CHIP, tiny_segmentation_model, write_series

from degas_hf.models.st_swin_mae.image_processing_st_swin_mae import STSwinMAEImageProcessor
from degas_hf.models.st_swin_mae.pipeline_st_swin_mae import TASK, STSwinMAESegmentationPipeline


@pytest.fixture(scope="module")
def pipe():
    model = tiny_segmentation_model(num_labels=3, temporal_aggregation="mean",
                                    id2label={0: "land", 1: "water", 2: "cloud"})
    processor = STSwinMAEImageProcessor.from_preset("sen1floods11", band_names=BANDS6)
    return STSwinMAESegmentationPipeline(model=model, image_processor=processor)


def test_real_s2_chip_path(pipe):
    result = pipe(str(S2_CHIP))
    assert result["class_map"].shape == (512, 512) and result["class_map"].dtype == np.int64
    labels = {segment["label"] for segment in result["segments"]}
    assert labels <= {"land", "water", "cloud"} and labels
    mask = result["segments"][0]["mask"]
    assert mask.mode == "L" and mask.size == (512, 512)


def test_list_of_dates_is_one_sample_and_list_of_samples_a_batch(pipe, tmp_path):
    paths = [str(p) for p in write_series(tmp_path, num_dates=3, height=24, width=20, stripe=(0, 2))]
    result = pipe(paths)
    assert isinstance(result, dict) and result["class_map"].shape == (24, 20)
    assert (result["class_map"][:2] == -1).all() and (result["class_map"][2:] >= 0).all()
    arrays = np.random.default_rng(0).random((2, 3, 6, 16, 16)).astype(np.float32)
    batch = pipe([arrays[0], list(arrays[1])], return_probabilities=True)
    assert isinstance(batch, list) and len(batch) == 2
    assert batch[1]["probabilities"].shape == (3, 16, 16)
    np.testing.assert_array_equal(pipe(arrays[1])["class_map"], batch[1]["class_map"])
    with pytest.raises(ValueError, match="Missing bands"):
        pipe(np.ones((3, 4, 8, 8), np.float32), band_names=BANDS6[:4])


def test_saved_pipeline_loads_in_a_clean_process(pipe, tmp_path):
    folder = tmp_path / "repo"
    pipe.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"][TASK]["impl"] == "pipeline_st_swin_mae.STSwinMAESegmentationPipeline"
    for name in ("pipeline_st_swin_mae.py", "image_processing_st_swin_mae.py", "modeling_st_swin_mae.py",
                 "configuration_st_swin_mae.py", "preprocessor_config.json", "model.safetensors"):
        assert (folder / name).is_file(), name
    sample = write_series(tmp_path, num_dates=2, height=20, width=18)
    script = textwrap.dedent(
        f"""
        import sys
        from transformers import pipeline
        segmenter = pipeline(model={str(folder)!r}, trust_remote_code=True)
        result = segmenter({[str(p) for p in sample]!r})
        assert result["class_map"].shape == (20, 18), result["class_map"].shape
        assert {{s["label"] for s in result["segments"]}} <= {{"land", "water", "cloud"}}
        assert not [m for m in sys.modules if m.startswith("degas_hf")], "degas_hf was imported"
        print("OK", type(segmenter).__module__)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf_home")}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK transformers_modules." in done.stdout


def test_precision_option(pipe, monkeypatch):
    import torch

    from degas_hf.models.st_swin_mae import pipeline_st_swin_mae

    sample = np.random.default_rng(1).random((2, 6, 16, 16)).astype(np.float32)
    fp32 = pipe(sample, return_probabilities=True)
    np.testing.assert_array_equal(pipe(sample, precision="fp32")["class_map"], fp32["class_map"])
    with pytest.raises(ValueError, match="Unknown precision 'fp64'"):
        pipe(sample, precision="fp64")
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        bf16 = pipe(sample, precision="bf16", return_probabilities=True)
        assert bf16["probabilities"].dtype == np.float32
        np.testing.assert_allclose(bf16["probabilities"], fp32["probabilities"], atol=0.05)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    with pytest.raises(ValueError, match="no bf16 support"):
        pipe(sample, precision="bf16")
    assert pipeline_st_swin_mae.PRECISIONS["bf16"] is torch.bfloat16
