"""Short Trainer runs on each task's tiny fixture (degas-tiny, 32 px, a few steps): the training loss goes down and
every metric is reported; plus frozen encoder, layer-wise LR decay, class weights, LoRA, the CLI, the results files
and bad input caught before training."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_data_tasks import (  # noqa: E402
    write_crop_classification,
    write_generic,
    write_hls_burn_scars,
    write_phileo,
    write_sen1floods11,
    write_tif,
)

from degas_hf.cli import main as cli_main  # noqa: E402
from degas_hf.training.finetune import (  # noqa: E402
    FinetuneConfig,
    WeightedCrossEntropyLoss,
    apply_lora,
    build_optimizer,
    finetune,
    freeze_encoder,
    layer_decay_parameter_groups,
    load_model_for_task,
)

SEG_METRICS = ("mean_iou", "overall_accuracy", "mean_accuracy")
REG_METRICS = ("mse", "rmse", "mae")


def _run(tmp_path, task, data, **overrides):
    options = dict(
        task=task, data_dir=str(data), model="degas-tiny", output_dir=str(tmp_path / "out"), max_steps=10,
        per_device_train_batch_size=2, per_device_eval_batch_size=2, learning_rate=2e-3, logging_steps=1,
        eval_strategy="no", lr_scheduler_type="constant", figures=False, save_model=False,
    )
    options.update(overrides)
    return finetune(FinetuneConfig(**options))


def _check(results, regression=False, splits=("val", "test")):
    training = results["training"]
    assert training["train_loss_last"] < training["train_loss_first"], training
    metrics = REG_METRICS if regression else SEG_METRICS
    reported = {(row["split"], row["metric"]) for row in results["results"]}
    for split in splits:
        for metric in metrics:
            assert (split, metric) in reported, (split, metric)
    for row in results["results"]:
        assert row["value"] is not None and math.isfinite(row["value"])
    if not regression:
        for split in splits:
            assert set(results["per_class"][split]["iou"]) == set(results["task"]["id2label"].values())


def test_sen1floods11_classification_with_files(tmp_path):
    data = write_sen1floods11(tmp_path / "data")
    results = _run(tmp_path, "sen1floods11", data, figures=True, class_weights="auto", save_model=True)
    _check(results, splits=("val", "test", "bolivia"))
    out = tmp_path / "out"
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["schema_version"] == 1 and on_disk["task"]["name"] == "sen1floods11"
    assert on_disk["model"]["name"] == "degas-tiny-sen1floods11"
    assert len(on_disk["training"]["class_weights"]) == 2
    markdown = (out / "results.md").read_text().splitlines()
    assert markdown[0] == "| task | model | split | metric | value |"
    assert any(line.startswith("| sen1floods11 | degas-tiny-sen1floods11 | bolivia | mIoU |") for line in markdown)
    for name in ("confusion_matrix_test.png", "predictions_test.png"):
        assert (out / name).stat().st_size > 1000
    assert (out / "model" / "config.json").is_file() and (out / "model" / "preprocessor_config.json").is_file()


def test_hls_burn_scars(tmp_path):
    data = write_hls_burn_scars(tmp_path / "data")
    _check(_run(tmp_path, "hls-burn-scars", data), splits=("val",))


def test_crop_classification_from_pretrained_folder(tmp_path):
    """Three frames from a saved pretraining checkpoint: encoder and decoder load, the head is new."""
    from degas_hf import STSwinMAEConfig, STSwinMAEForPreTraining

    pretrained = tmp_path / "pretrained"
    STSwinMAEForPreTraining(STSwinMAEConfig.from_preset("degas-tiny")).save_pretrained(pretrained)
    data = write_crop_classification(tmp_path / "data")
    results = _run(tmp_path, "crop_classification", data, model=str(pretrained), layer_decay=0.8)
    _check(results, splits=("val",))
    assert results["task"]["num_frames"] == 3 and results["task"]["num_labels"] == 13


def test_phileo_land_cover(tmp_path):
    data = write_phileo(tmp_path / "data", regions=("japan",))
    _check(_run(tmp_path, "phileo_lc", data))


def test_phileo_building_regression(tmp_path):
    data = write_phileo(tmp_path / "data", regions=("japan",))
    results = _run(tmp_path, "phileo_building", data, dataset_kwargs={"n_shot": 4}, figures=True)
    _check(results, regression=True)
    assert results["task"]["problem_type"] == "regression"
    assert (tmp_path / "out" / "predictions_test.png").is_file()
    assert "confusion_matrix" not in results["figures"]


def test_generic_folder_frozen_encoder(tmp_path):
    data = write_generic(tmp_path / "data")
    results = _run(
        tmp_path, "generic", data, freeze_encoder=True, eval_split="val", test_splits=["val"],
        dataset_kwargs={"band_names": ["B02", "B03", "B04", "B8A", "B11", "B12"], "num_frames": 2, "num_classes": 2},
    )
    _check(results, splits=("val",))
    assert results["training"]["trainable_parameters"] < results["training"]["total_parameters"]


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------
def _tiny(num_labels=2, frames=1):
    from degas_hf.data.base import TaskInfo

    info = TaskInfo("t", "T", "single_label_classification", {i: str(i) for i in range(num_labels)}, ("B02", "B03", "B04", "B8A", "B11", "B12"), frames)
    return load_model_for_task("degas-tiny", info)


def test_freeze_encoder_and_layer_decay_groups():
    model = _tiny()
    frozen = freeze_encoder(model)
    assert frozen == sum(p.numel() for p in model.st_swin_mae.parameters())
    assert all(p.requires_grad for p in model.segmentation_head.parameters())
    groups = layer_decay_parameter_groups(model, 1e-3, 0.05, layer_decay=0.5)
    assert all(g["layer_id"] == sum(model.config.depths) + 1 for g in groups)  # only decoder / head trainable

    model = _tiny()
    groups = layer_decay_parameter_groups(model, 1e-3, 0.05, layer_decay=0.5)
    by_layer = {g["layer_id"]: g["lr"] for g in groups}
    top = sum(model.config.depths) + 1
    assert by_layer[top] == pytest.approx(1e-3) and by_layer[0] == pytest.approx(1e-3 * 0.5**top)
    assert all(by_layer[a] <= by_layer[b] for a, b in zip(sorted(by_layer), sorted(by_layer)[1:]))
    no_decay = [g for g in groups if g["weight_decay"] == 0.0]
    assert no_decay and all(p.ndim <= 1 or p.shape[-1] == model.config.num_heads[0] or True for g in no_decay for p in g["params"])
    optimizer = build_optimizer(model, 1e-3, layer_decay=0.5)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len([p for p in model.parameters() if p.requires_grad])


def test_weighted_loss_matches_torch():
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, 0] = -100
    weights = [0.5, 1.0, 2.0]
    loss = WeightedCrossEntropyLoss(weights)({"logits": logits}, labels)
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=torch.tensor(weights), ignore_index=-100)
    torch.testing.assert_close(loss, expected)


def test_lora_optional(monkeypatch):
    model = _tiny()
    try:
        import peft  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install peft"):
            apply_lora(model)
        return
    wrapped = apply_lora(model, rank=2)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in wrapped.parameters())


# ----------------------------------------------------------------------------------------------------------------
# CLI and bad input (errors before training)
# ----------------------------------------------------------------------------------------------------------------
def test_cli_finetune(tmp_path, capsys, monkeypatch):
    import degas_hf.training.activation_checkpointing as checkpointing

    modes = []
    enable = checkpointing.enable_activation_checkpointing
    monkeypatch.setattr(checkpointing, "enable_activation_checkpointing", lambda model, mode: modes.append(mode) or enable(model, mode))
    data = write_sen1floods11(tmp_path / "data", counts={"train": 2, "valid": 1, "test": 1})
    out = tmp_path / "cli"
    code = cli_main([
        "finetune", "--task", "sen1floods11", "--data", str(data), "--model", "degas-tiny", "--output-dir", str(out),
        "--max-steps", "2", "--batch-size", "2", "--test-splits", "test", "--no-figures", "--no-save-model",
        "--eval-strategy", "no", "--class-weights", "1,2", "--activation-checkpointing", "selective",
    ])
    assert code == 0
    assert modes == ["selective"]
    printed = capsys.readouterr().out
    assert "| sen1floods11 | degas-tiny-sen1floods11 | test | mIoU |" in printed
    assert json.loads((out / "results.json").read_text())["training"]["class_weights"] == [1.0, 2.0]


def test_cli_bands_the_task_cannot_supply(tmp_path, capsys):
    data = write_sen1floods11(tmp_path / "data", counts={"train": 1, "valid": 1, "test": 1})
    code = cli_main(["finetune", "--task", "sen1floods11", "--data", str(data), "--model", "degas-tiny", "--modality", "s1", "--output-dir", str(tmp_path / "o")])
    assert code == 2
    assert "cannot supply the bands ['B02', 'B03', 'B04', 'B8A', 'B11', 'B12']" in capsys.readouterr().err
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_bad_labels_stop_before_training(tmp_path):
    data = write_hls_burn_scars(tmp_path / "data")
    mask = sorted((data / "validation").glob("*.mask.tif"))[0]
    write_tif(mask, torch.full((32, 32), 2, dtype=torch.int16).numpy())
    with pytest.raises(ValueError, match=rf"{mask.name}: label values \[2\]"):
        _run(tmp_path, "hls_burn_scars", data)
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_size_mismatch_and_missing_split_file(tmp_path):
    data = write_crop_classification(tmp_path / "data")
    image = sorted((data / "validation_chips").glob("*_merged.tif"))[0]
    write_tif(image, torch.zeros((18, 24, 32), dtype=torch.int16).numpy())
    with pytest.raises(ValueError, match=rf"sizes differ.*{image.name}"):
        _run(tmp_path, "crop_classification", data)
    data = write_sen1floods11(tmp_path / "s", counts={"train": 1, "valid": 1})
    with pytest.raises(ValueError, match=r"split file flood_test_data\.csv not found"):
        _run(tmp_path, "sen1floods11", data)


def test_new_band_order_keeps_pretrained_filters_by_name_and_new_bands_stay_trainable(tmp_path):
    import torch

    from degas_hf import STSwinMAEConfig, STSwinMAEForPreTraining
    from degas_hf.data.base import CLASSIFICATION, TaskInfo
    from degas_hf.training.finetune import freeze_encoder, load_model_for_task

    pretrained = STSwinMAEForPreTraining(STSwinMAEConfig.from_preset("degas-tiny"))
    pretrained.save_pretrained(tmp_path)
    weight = pretrained.st_swin_mae.embeddings.patch_embeddings.projection.weight
    bands = ["B12", "B04", "B03", "B2", "VV"]  # a subset, reordered, an alias, and one new band
    info = TaskInfo(name="t", dataset_name="t", problem_type=CLASSIFICATION, id2label={0: "a", 1: "b"},
                    band_names=tuple(bands), num_frames=4)
    model = load_model_for_task(str(tmp_path), info, bands)
    got = model.st_swin_mae.embeddings.patch_embeddings.projection.weight
    source = {"B12": 5, "B04": 2, "B03": 1, "B2": 0}
    for channel, band in enumerate(bands[:4]):
        torch.testing.assert_close(got[:, channel], weight[:, source[band]], msg=band)
    assert model.new_patch_embedding_bands == ["VV"]
    freeze_encoder(model)
    assert got.requires_grad
    assert not any(p.requires_grad for n, p in model.st_swin_mae.named_parameters() if "patch_embeddings" not in n)


def test_cli_phileo_selection_flags_reach_the_reader_and_only_phileo_takes_them(tmp_path):
    """--n-shot-seed and --indices (the PhilEO Bench's own n-shot selections) are reader arguments of the PhilEO
    tasks; on another task they are a one-line error naming the flag."""
    import argparse

    from degas_hf.commands.finetune import _dataset_kwargs, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--data", str(tmp_path), "--model", "degas-tiny", "--output-dir", str(tmp_path / "out")]
    args = parser.parse_args(["--task", "phileo_lc", *base, "--n-shot", "50", "--n-shot-seed", "7",
                              "--indices", str(tmp_path / "indices")])
    assert _dataset_kwargs(args, "phileo_lc") == {"n_shot": 50, "n_shot_seed": 7, "indices": str(tmp_path / "indices")}
    args = parser.parse_args(["--task", "sen1floods11", *base, "--n-shot-seed", "7"])
    with pytest.raises(ValueError, match="--n-shot-seed does not apply to task 'sen1floods11'"):
        _dataset_kwargs(args, "sen1floods11")
