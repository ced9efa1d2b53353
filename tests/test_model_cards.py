"""Model card templates: both render, round-trip through ModelCard.load, carry the required metadata and a valid
model-index built from the results JSON, and hold every section the issue asks for."""

from __future__ import annotations

import json
import re

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from degas_hf.hub.model_card import render_model_card, template_dir
from degas_hf.hub.publish import Example, load_results, validate_folder
from hub_helpers import RESULTS, tiny_folder

SECTIONS_COMMON = ["## How to load", "## Bands and their order", "## Normalisation statistics", "## Input layout",
                   "## Training data and procedure", "## Choices where the paper is silent", "## Limitations",
                   "## Citation"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cards")
    return {"seg": validate_folder(tiny_folder(root / "seg", "segmentation")),
            "pre": validate_folder(tiny_folder(root / "pre", "pretrained")),
            "reg": validate_folder(tiny_folder(root / "reg", "segmentation", regression=True))}


def _roundtrip(card, tmp_path):
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    assert loaded.data.to_dict() == card.data.to_dict()
    assert "{{" not in loaded.text and "{%" not in loaded.text
    return loaded


def test_templates_exist():
    names = {p.name for p in template_dir().glob("*.md")}
    assert {"degas-100m.md", "finetuned.md"} <= names


def test_pretrained_card(folders, tmp_path):
    info = folders["pre"]
    card = _roundtrip(render_model_card(info, repo_id="my-org/degas-100m", revision="v1.0",
                                        datasets=["wangyi111/SSL4EO-S12"]), tmp_path)
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-feature-extraction"
    assert {"earth-observation", "remote-sensing", "sentinel-2", "custom_code"} <= set(data["tags"])
    assert data["datasets"] == ["wangyi111/SSL4EO-S12"] and data["license"] == "apache-2.0"
    assert "base_model" not in data and "model-index" not in data
    for section in SECTIONS_COMMON + ["## How to fine-tune"]:
        assert section in card.text, section
    text = card.text
    assert 'AutoModel.from_pretrained("my-org/degas-100m", trust_remote_code=True, revision=revision)' in text
    assert 'revision = "v1.0"' in text and "import degas_hf" in text
    assert "(B, C, T, H, W)" in text and "arXiv:2405.02512" in text
    # bands in order and normalisation statistics read from preprocessor_config.json
    proc = info.processor_config
    rows = re.findall(r"^\| (B\w+) \| ([\d.]+) \| ([\d.]+) \|$", text, flags=re.M)
    assert [r[0] for r in rows] == info.config["band_names"]
    assert [float(r[1]) for r in rows] == pytest.approx(proc["image_mean"], abs=1e-4)
    assert [float(r[2]) for r in rows] == pytest.approx(proc["image_std"], abs=1e-4)


def test_finetuned_card_model_index_comes_from_results(folders, tmp_path):
    info = folders["seg"]
    results = load_results(RESULTS, id2label=info.config["id2label"])
    ex = Example(source=tmp_path / "x.tif", title="Sample", input_path="examples/x.tif",
                 rgb_path="images/x_rgb.png", output_path="images/x_prediction.png")
    card = _roundtrip(render_model_card(info, repo_id="my-org/degas-tiny-crops", results=results,
                                        base_model="my-org/degas-100m", examples=[ex]), tmp_path)
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "image-segmentation" and data["base_model"] == "my-org/degas-100m"
    assert data["widget"][0]["output"]["url"] == "images/x_prediction.png"
    name, evals = model_index_to_eval_results(data["model-index"])
    assert name == "degas-tiny-crops"
    assert {e.metric_type: e.metric_value for e in evals} == RESULTS["metrics"]
    assert {(e.task_type, e.dataset_type, e.dataset_split) for e in evals} == {
        ("image-segmentation", "degas-hf/worldcereal-flanders-sample", "test")}
    assert card.data.eval_results[0].source_url.endswith("/results.json")
    for section in SECTIONS_COMMON + ["## Classes", "## Results", "## Examples", "## How to fine-tune further"]:
        assert section in card.text, section
    for label in info.config["id2label"].values():
        assert f"| {label} |" in card.text
    assert "| test | mIoU (`mean_iou`) | 0.4123 |" in card.text
    assert 'pipeline("multispectral-segmentation"' in card.text or "pipeline(" in card.text


def test_regression_card(folders, tmp_path):
    results = load_results({"task": "phileo_building", "split": "test", "metrics": {"mse": 0.0123, "mae": 0.05}})
    card = _roundtrip(render_model_card(folders["reg"], repo_id="my-org/degas-building", results=results), tmp_path)
    assert "post_process_regression" in card.text and "## Classes" not in card.text
    _, evals = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert {e.metric_type for e in evals} == {"mse", "mae"}
    assert card.data.datasets == ["PhilEO-community/PhilEO-downstream"]


FINETUNE_RESULTS_V1 = {  # the layout `degas-hf finetune` writes (degas_hf.training.finetune.build_results)
    "schema_version": 1,
    "task": {"name": "sen1floods11", "type": "image-segmentation", "problem_type": "single_label_classification",
             "dataset_name": "Sen1Floods11", "dataset_type": "sen1floods11", "num_labels": 3,
             "id2label": {"0": "annual cropland", "1": "grassland", "2": "other"}},
    "model": {"name": "degas-tiny-floods", "base_model": "outputs/degas-100m"},
    "results": [{"split": "test", "metric": "mean_iou", "name": "mIoU", "value": 0.81},
                {"split": "test", "metric": "overall_accuracy", "name": "Overall accuracy", "value": 0.93},
                {"split": "bolivia", "metric": "mean_iou", "name": "mIoU", "value": 0.75},
                {"split": "bolivia", "metric": "mean_accuracy", "name": "Mean accuracy", "value": None}],
    "per_class": {"test": {"iou": {"annual cropland": 0.7, "grassland": 0.9, "other": None}}},
    "training": {"epochs": 3, "learning_rate": 1e-4, "lr_schedule": {"warmup": 10}},
}


def test_finetune_results_schema_v1(folders, tmp_path):
    info = folders["seg"]
    results = load_results(FINETUNE_RESULTS_V1, id2label=info.config["id2label"])
    assert results.split == "test" and results.dataset_name == "Sen1Floods11"
    assert results.entries == [("test", "mean_iou", 0.81), ("test", "overall_accuracy", 0.93),
                               ("bolivia", "mean_iou", 0.75), ("test", "iou_annual_cropland", 0.7),
                               ("test", "iou_grassland", 0.9)]
    card = _roundtrip(render_model_card(info, repo_id="my-org/degas-tiny-floods", results=results), tmp_path)
    _, evals = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert sorted((e.dataset_split, e.metric_type, e.metric_value) for e in evals) == sorted(results.entries)
    assert "| bolivia | mIoU (`mean_iou`) | 0.7500 |" in card.text
    assert "| epochs | 3 |" in card.text


def test_finetune_results_with_other_labels_are_refused(folders):
    from degas_hf.hub.publish import PublishError

    bad = json.loads(json.dumps(FINETUNE_RESULTS_V1))
    bad["task"]["id2label"] = {"0": "no water", "1": "water"}
    with pytest.raises(PublishError, match="the results are for labels"):
        load_results(bad, id2label=folders["seg"].config["id2label"])
    bad = json.loads(json.dumps(FINETUNE_RESULTS_V1))
    bad["results"].append({"split": "test", "metric": "kappa", "value": 0.5})
    with pytest.raises(PublishError, match="unknown metric 'kappa'"):
        load_results(bad)


def test_model_index_is_never_typed_by_hand():
    # the templates hold no metric values or model-index of their own
    for path in template_dir().glob("*.md"):
        front = path.read_text().split("---")[1] if path.read_text().startswith("---") else ""
        assert front.strip() in ("", "{{ card_data }}"), path.name  # metadata only from ModelCardData


# ------------------------------------------------------------------------------------------------ issue 13.10 / 13.12
def _kinds_of_folders(root):
    """One folder of each kind the package writes: tiny segmentation / regression / pretrained folders
    (`prepare_hub_folder`, as `degas-hf demo` writes its segmentation model), a pretraining export with a processor
    made without a preset (`export_pretrained`, as `degas-hf pretrain` and the demo write it), a generic
    `degas-hf finetune` output, and a processor file from before some fields existed."""
    import sys

    import torch

    from degas_hf import STSwinMAEConfig, STSwinMAEForPreTraining, STSwinMAEImageProcessor
    from degas_hf.training.checkpointing import export_pretrained
    from degas_hf.training.finetune import FinetuneConfig, finetune

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_finetune_generic import BANDS, write_pairs

    folders = {
        "segmentation": tiny_folder(root / "seg", "segmentation"),
        "regression": tiny_folder(root / "reg", "segmentation", regression=True),
        "pretrained": tiny_folder(root / "pre", "pretrained"),
    }
    torch.manual_seed(0)
    folders["pretrain-export, processor without preset"] = export_pretrained(
        STSwinMAEForPreTraining(STSwinMAEConfig.from_preset("degas-tiny")), STSwinMAEImageProcessor(), root / "model")
    data = write_pairs(root / "data", count=2, size=8)
    finetune(FinetuneConfig(task="generic", data_dir=str(data), model="degas-tiny", output_dir=str(root / "ft"),
                            max_steps=1, per_device_train_batch_size=2, eval_strategy="no", figures=False,
                            dataset_kwargs={"band_names": BANDS, "num_frames": 2, "num_classes": 3}),
             log=lambda message: None)
    folders["finetune generic"] = root / "ft" / "model"
    old = root / "old-processor"
    __import__("shutil").copytree(folders["segmentation"], old)
    processor = json.loads((old / "preprocessor_config.json").read_text())
    for key in ("preset", "fill_value", "nodata_value", "do_rescale"):
        processor.pop(key, None)
    (old / "preprocessor_config.json").write_text(json.dumps(processor))
    folders["older processor file"] = old
    return folders


def test_cards_render_from_every_kind_of_folder(tmp_path):
    for kind, folder in _kinds_of_folders(tmp_path).items():
        info = validate_folder(folder)
        card = _roundtrip(render_model_card(info, repo_id="my-org/model"), tmp_path)
        text = card.text
        assert "Pipeline tag:" in text, kind
        assert not re.search(r"pipelines?: \.", text), kind  # no empty "Hub pipelines: ." line
        assert ("Hub pipeline: `multispectral-segmentation`" in text) == (info.kind == "segmentation"), kind
        preset = info.processor_config.get("preset")
        assert (f"preset `{preset}`" in text) == bool(preset), kind
        assert "264 x 264" not in text and "wangyi111/SSL4EO-S12" not in (card.data.datasets or []), kind
        if info.kind == "pretrained":
            assert "Data: not recorded with this checkpoint" in text, kind
            assert 'the pretrained encoder and decoder of "Degas 100M"' not in text, kind


def test_pretrained_card_names_ssl4eo_only_when_told(folders, tmp_path):
    card = render_model_card(folders["pre"], repo_id="my-org/degas-100m", datasets=["wangyi111/SSL4EO-S12"])
    assert "SSL4EO-S12 (Wang et al. 2022), Sentinel-2 patches of 264 x 264 px" in card.text
    assert card.data.datasets == ["wangyi111/SSL4EO-S12"]
    card = render_model_card(folders["pre"], repo_id="my-org/demo", datasets=["my-org/flanders-sample"])
    assert "- Data: my-org/flanders-sample;" in card.text and "264" not in card.text
