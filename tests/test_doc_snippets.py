"""The snippets users copy run as written: every Python block of README.md, docs/finetuning.md, docs/publishing.md
and of the rendered model cards is executed (in a folder holding small stand-ins for the paths they name), every
`degas-hf ...` command line in those documents parses with the real CLI, and the results-JSON example of
docs/finetuning.md has the keys `degas-hf finetune` writes. (tests/test_readme.py checks the README's first block's
outputs in detail; tests/test_journey.py runs the main command lines end to end.)"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_finetune_generic import BANDS, write_pairs  # noqa: E402

from degas_hf.hub.folder import SAMPLE_SERIES_DIR, build_tiny_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "docs/finetuning.md", "docs/publishing.md"]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def run_python(code: str, where: str, namespace: dict | None = None) -> dict:
    namespace = {} if namespace is None else namespace
    exec(compile(code, where, "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"pretrained": build_tiny_folder(root / "pre", "pretrained"),
            "segmentation": build_tiny_folder(root / "seg", "segmentation"),
            "regression": build_tiny_folder(root / "reg", "segmentation", regression=True)}


# ------------------------------------------------------------------------------------------------ Python blocks
def test_readme_python_blocks_run(tmp_path, monkeypatch, tiny):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny["pretrained"], "degas-100m")  # "a local folder"
    shutil.copytree(tiny["segmentation"], "runs/fields/model")
    write_pairs(tmp_path / "my_fields", count=2, size=16, frames=4)
    namespace = {}
    found = blocks((ROOT / "README.md").read_text(), "python")
    assert len(found) >= 3
    for index, code in enumerate(found[1:], start=1):  # block 0 is run, and its outputs checked, by test_readme.py
        run_python(code, f"README.md python block {index}", namespace)
    assert namespace["result"]["class_map"].shape == (16, 16)


def test_finetuning_doc_python_block_runs(tmp_path, monkeypatch, tiny):
    from test_data_tasks import write_sen1floods11

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny["pretrained"], "path/to/degas-100m")
    write_sen1floods11(tmp_path / "sen1floods11", size=16, counts={"train": 2, "valid": 1, "test": 1, "bolivia": 1})
    found = blocks((ROOT / "docs/finetuning.md").read_text(), "python")
    assert found
    for index, code in enumerate(found):
        namespace = run_python(code, f"docs/finetuning.md python block {index}")
    assert namespace["trainer"].state.global_step > 0


def test_publishing_doc_python_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for index, code in enumerate(blocks((ROOT / "docs/publishing.md").read_text(), "python")):
        run_python(code, f"docs/publishing.md python block {index}")
    from degas_hf.hub.publish import validate_folder

    assert validate_folder("outputs/degas-100m").kind == "pretrained"


# ------------------------------------------------------------------------------------------------ command lines
def command_lines(text: str) -> list[list[str]]:
    """Every `degas-hf ...` command of the bash blocks, continuation lines joined, `[optional]` brackets dropped."""
    commands = []
    for block in blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part.replace("[", "").replace("]", ""), comments=True)
                if words and Path(words[0]).name == "degas-hf":
                    commands.append(words[1:])
    return commands


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_command_line_parses(document):
    from degas_hf.cli import build_parser

    commands = command_lines((ROOT / document).read_text())
    assert commands or document == "docs/publishing.md"
    for argv in commands:
        try:
            args = build_parser(argv).parse_args(argv)
        except SystemExit as exit:
            pytest.fail(f"{document}: `degas-hf {' '.join(argv)}` does not parse (exit {exit.code})")
        assert args.command == argv[0]
        if argv[0] == "finetune" and args.band_names:
            from degas_hf.commands.finetune import split_band_names

            assert split_band_names(args.band_names) == BANDS


def test_results_json_example_has_the_keys_finetune_writes():
    from degas_hf.data.base import TaskInfo
    from degas_hf.training.finetune import build_results

    text = blocks((ROOT / "docs/finetuning.md").read_text(), "json")[0]
    example = json.loads(re.sub(r"\s*//[^\n]*", "", text))
    written = build_results(TaskInfo("sen1floods11", "Sen1Floods11", "single_label_classification",
                                     {0: "not water", 1: "water"}, tuple(BANDS), 1), "m", "b", {}, training={})
    assert set(example) == set(written)
    assert set(example["task"]) == set(written["task"]) and set(example["model"]) == set(written["model"])
    assert {"normalization", "automatic_split"} <= set(example["training"])


# ------------------------------------------------------------------------------------------------ model cards
def _dates(folder: Path, names: list[str]) -> None:
    """Per-date GeoTIFFs from the bundled series (10 bands named in their descriptions), under the card's names."""
    sources = sorted(SAMPLE_SERIES_DIR.glob("*.tif"))
    for name, source in zip(names, sources[:: max(1, len(sources) // len(names))]):
        shutil.copyfile(source, folder / name)


@pytest.mark.parametrize("kind", ["pretrained", "segmentation", "regression"])
def test_rendered_card_python_blocks_run(tmp_path, monkeypatch, tiny, kind):
    """The card's snippets, as rendered, on a local folder named like the repo (`my-org/<name>`)."""
    from degas_hf.hub.model_card import render_model_card
    from degas_hf.hub.publish import validate_folder

    monkeypatch.chdir(tmp_path)
    repo_id = f"my-org/degas-tiny-{kind}"
    shutil.copytree(tiny[kind], repo_id)
    card = render_model_card(validate_folder(repo_id), repo_id=repo_id, revision="v1.0")
    _dates(tmp_path, ["2019-03-01.tif", "2019-06-01.tif", "2019-09-01.tif", "2019-12-01.tif"])
    _dates(tmp_path, [f"date{t}.tif" for t in range(1, 5)])
    found = blocks(card.text, "python")
    assert len(found) >= 3, kind
    for index, code in enumerate(found):
        namespace = run_python(code, f"{kind} card python block {index}")
    if kind != "pretrained":
        assert namespace["model"].config.num_labels == 4  # the last block: a new label set
