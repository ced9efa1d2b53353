"""Every examples/finetune_<task>.py runs end to end (two steps, degas-tiny) on its task's real-layout fixture and
writes the results files; the docstring of each names the layout and a download hint."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_data_tasks import (  # noqa: E402
    write_crop_classification,
    write_generic,
    write_hls_burn_scars,
    write_phileo,
    write_sen1floods11,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write_generic_splits(root: Path) -> Path:
    """The generic fixture with disjoint split files (a split without a file holds the images no file names)."""
    write_generic(root)
    (root / "train.txt").write_text("field_00\nfield_01\n")
    (root / "val.txt").write_text("field_02\n")
    (root / "test.txt").write_text("field_02\n")
    return root
QUICK = ["--model", "degas-tiny", "--max-steps", "2", "--batch-size", "2"]

# example -> (fixture writer, extra arguments, splits reported (the first test split last: it gets the figures),
# regression)
CASES = {
    "finetune_sen1floods11": (write_sen1floods11, ["--crop-size", "32"], ("val", "bolivia", "test"), False),
    "finetune_hls_burn_scars": (write_hls_burn_scars, [], ("val",), False),
    "finetune_crop_classification": (write_crop_classification, [], ("val",), False),
    "finetune_phileo_lc": (lambda root: write_phileo(root, regions=("japan",)), ["--n-shot", "2"], ("val", "test"), False),
    "finetune_phileo_building": (lambda root: write_phileo(root, regions=("japan",)), ["--target-scale", "1"], ("val", "test"), True),
    "finetune_generic": (
        write_generic_splits, ["--band-names", "B02,B03,B04", "B8A", "B11,B12", "--num-frames", "2", "--num-classes", "2"],
        ("val", "test"), False,
    ),
}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_finetune_example_is_covered():
    assert {p.stem for p in EXAMPLES.glob("finetune_*.py")} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs(tmp_path, capsys, name):
    write, extra, splits, regression = CASES[name]
    module = _load(name)
    assert "Expected layout of --data" in module.__doc__ and ("Download" in module.__doc__ or name == "finetune_generic")
    data = write(tmp_path / "data")
    out = tmp_path / "out"
    results = module.main(["--data", str(data), "--output-dir", str(out), *QUICK, *extra])

    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["schema_version"] == 1 and on_disk["results"] == results["results"]
    if on_disk["training"]:  # finetune() records the run (the Trainer walkthrough does not)
        assert on_disk["training"]["global_steps"] == 2
    assert (out / "results.md").read_text().startswith("| task | model | split | metric | value |")
    metrics = ("mse", "rmse", "mae") if regression else ("mean_iou", "overall_accuracy", "mean_accuracy")
    reported = {(row["split"], row["metric"]) for row in results["results"]}
    assert reported == {(split, metric) for split in splits for metric in metrics}
    assert all(row["value"] is not None and math.isfinite(row["value"]) for row in results["results"])
    assert on_disk["task"]["problem_type"] == ("regression" if regression else "single_label_classification")
    assert (out / f"predictions_{splits[-1]}.png").is_file()
    assert (out / f"confusion_matrix_{splits[-1]}.png").is_file() != regression
    assert (out / "model" / "config.json").is_file() and (out / "model" / "preprocessor_config.json").is_file()
    # Hub-ready (issue 13.9): pipeline(model=..., trust_remote_code=True) finds its task offline; publish takes it
    assert list(json.loads((out / "model" / "config.json").read_text())["custom_pipelines"]) == ["multispectral-segmentation"]
    assert (out / "model" / "pipeline_st_swin_mae.py").is_file()
    assert ("MSE" if regression else "mIoU") in capsys.readouterr().out
