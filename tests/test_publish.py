"""`degas-hf publish`: folder validation, clean-process load, dry-run tree, and the one-commit upload (offline: HfApi
is patched at the class level, so nothing reaches the network)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from unittest import mock

import pytest
import yaml
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from degas_hf.cli import main as cli_main
from degas_hf.hub.publish import (
    PublishError,
    check_loads_in_clean_process,
    load_results,
    publish,
    validate_folder,
    validate_repo_id,
)
from hub_helpers import RESULTS, sample_series, tiny_folder

CODE = {"configuration_st_swin_mae.py", "modeling_st_swin_mae.py", "image_processing_st_swin_mae.py",
        "pipeline_st_swin_mae.py"}
BASE_FILES = {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} | CODE
PRE_FILES = BASE_FILES - {"pipeline_st_swin_mae.py"}  # no custom pipeline for the pretrained encoder


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("publish")
    seg = tiny_folder(root / "seg", "segmentation")
    pre = tiny_folder(root / "pre", "pretrained")
    example = sample_series(root / "inputs" / "flanders.tif")
    results = root / "results.json"
    results.write_text(json.dumps(RESULTS))
    return {"root": root, "seg": seg, "pre": pre, "example": example, "results": results}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


class _Recorder:
    """Class-level stand-ins for the HfApi calls publish makes."""

    def __init__(self):
        self.calls = []
        self.commits = []
        self.existing_files = []  # what list_repo_files reports (a new repo: nothing)

    def patches(self):
        rec = self

        def create_repo(self, repo_id, **kw):
            rec.calls.append(("create_repo", repo_id, kw))
            return f"https://huggingface.co/{repo_id}"

        def create_branch(self, repo_id, **kw):
            rec.calls.append(("create_branch", repo_id, kw))

        def create_tag(self, repo_id, **kw):
            rec.calls.append(("create_tag", repo_id, kw))

        def list_repo_files(self, repo_id, **kw):
            rec.calls.append(("list_repo_files", repo_id, kw))
            return list(rec.existing_files)

        def create_commit(self, repo_id, operations, **kw):
            ops = list(operations)
            adds = [op for op in ops if isinstance(op, CommitOperationAdd)]
            deletes = [op.path_in_repo for op in ops if isinstance(op, CommitOperationDelete)]
            assert len(adds) + len(deletes) == len(ops)
            # read the payloads now: the staging folder is deleted after publish returns
            files = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in adds}
            rec.commits.append({"repo_id": repo_id, "files": files, "deleted": deletes, **kw})
            rec.calls.append(("create_commit", repo_id, kw))
            return mock.Mock(oid="0123456789abcdef0123456789abcdef01234567",
                             commit_url=f"https://huggingface.co/{repo_id}/commit/0123456",
                             pr_url=f"https://huggingface.co/{repo_id}/discussions/1" if kw.get("create_pr") else None)

        return [mock.patch.object(HfApi, name, fn) for name, fn in
                (("create_repo", create_repo), ("create_branch", create_branch), ("create_tag", create_tag),
                 ("list_repo_files", list_repo_files), ("create_commit", create_commit), ("upload_folder", _forbidden), ("upload_file", _forbidden))]


def _forbidden(*args, **kwargs):
    raise AssertionError("publish must upload with a single create_commit")


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    rec = _Recorder()
    patches = rec.patches()
    for p in patches:
        p.start()
    yield rec
    for p in patches:
        p.stop()


# ------------------------------------------------------------------------------------------------ upload, offline
def test_upload_is_one_commit_with_exact_files_and_card_metadata(workdir, hub):
    result = publish(
        workdir["seg"], "my-org/degas-tiny-flanders", results=workdir["results"],
        examples=[f"{workdir['example']}==Flanders, 4 dates"], base_model="my-org/degas-100m", tag="v0.1.0",
        revision="release", log=lambda *a: None,
    )
    names = [c[0] for c in hub.calls]
    assert names == ["create_repo", "create_branch", "list_repo_files", "create_commit", "create_tag"]
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert commit["repo_id"] == "my-org/degas-tiny-flanders" and commit["revision"] == "release"
    assert set(commit["files"]) == BASE_FILES | {
        "results.json", "examples/flanders.tif", "images/flanders_rgb.png", "images/flanders_prediction.png"}
    assert set(result.files) == set(commit["files"])
    assert result.load_report["model_class"].startswith("transformers_modules.")
    # the card as uploaded
    card = ModelCard(commit["files"]["README.md"].decode())
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-segmentation"
    assert {"earth-observation", "remote-sensing", "sentinel-2", "custom_code"} <= set(data["tags"])
    assert data["base_model"] == "my-org/degas-100m"
    assert data["license"] == "apache-2.0"
    assert data["widget"] == [{"src": "examples/flanders.tif", "example_title": "Flanders, 4 dates",
                               "output": {"url": "images/flanders_prediction.png"}}]
    name, evals = model_index_to_eval_results(data["model-index"])
    assert name == "degas-tiny-flanders"
    assert {e.metric_type: e.metric_value for e in evals} == RESULTS["metrics"]
    assert {e.dataset_type for e in evals} == {"degas-hf/worldcereal-flanders-sample"}
    assert 'revision="v0.1.0"' in card.text
    # uploaded payloads are the folder's bytes
    assert commit["files"]["model.safetensors"] == (workdir["seg"] / "model.safetensors").read_bytes()
    assert json.loads(commit["files"]["results.json"]) == RESULTS
    png = commit["files"]["images/flanders_prediction.png"]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    tag_call = hub.calls[-1]
    assert tag_call[2]["tag"] == "v0.1.0" and tag_call[2]["revision"].startswith("0123456789")


def test_create_pr_and_private_are_passed_through(workdir, hub):
    with mock.patch("degas_hf.hub.publish.check_loads_in_clean_process", return_value={"model_class": "x"}):
        publish(workdir["pre"], "my-org/degas-tiny", private=True, create_pr=True, revision="main",
                log=lambda *a: None)
    assert [c[0] for c in hub.calls] == ["create_repo", "list_repo_files", "create_commit"]
    assert hub.calls[0][2]["private"] is True
    assert hub.commits[0]["create_pr"] is True
    assert set(hub.commits[0]["files"]) == PRE_FILES


# ------------------------------------------------------------------------------------------------ dry run
def test_dry_run_writes_tree_that_loads_in_clean_process(workdir, capsys):
    out = workdir["root"] / "dry-pre"
    code = cli_main(["publish", str(workdir["pre"]), "--repo-id", "my-org/degas-tiny", "--dry-run", "--output",
                     str(out), "--example", str(workdir["example"])])
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 0, captured.err
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == PRE_FILES | {"examples/flanders.tif", "images/flanders_rgb.png",
                                  "images/flanders_reconstruction.png"}
    for name in files:
        assert name in printed
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "image-feature-extraction"
    assert card.data.base_model is None
    assert card.data.datasets is None  # the folder does not record its pretraining data: nothing is claimed
    assert "SSL4EO" not in card.text.split("## Training data and procedure")[1].split("##")[0]
    # the written tree, README included, loads where degas_hf cannot be imported
    report = check_loads_in_clean_process(out, head="AutoModelForPreTraining")
    assert report["model_class"].endswith("STSwinMAEForPreTraining")
    assert report["model_class"].startswith("transformers_modules.")
    assert report["loss"] is not None


def test_dry_run_refuses_non_empty_output(workdir):
    out = workdir["root"] / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(PublishError, match="not empty"):
        publish(workdir["seg"], "my-org/x", dry_run=True, output_dir=out, log=lambda *a: None)
    assert (out / "keep.txt").exists()


# ------------------------------------------------------------------------------------------------ refusals
def test_folder_that_does_not_load_is_refused_and_nothing_uploaded(workdir, hub, tmp_path):
    broken = _copy(workdir["seg"], tmp_path / "broken")
    modeling = broken / "modeling_st_swin_mae.py"
    modeling.write_text(modeling.read_text() + "\nraise RuntimeError('broken on purpose')\n")
    with pytest.raises(PublishError, match="does not load with trust_remote_code=True"):
        publish(broken, "my-org/broken", log=lambda *a: None)
    assert hub.calls == []


def test_hub_code_importing_degas_hf_is_refused(workdir, tmp_path):
    folder = _copy(workdir["seg"], tmp_path / "imports")
    path = folder / "pipeline_st_swin_mae.py"
    path.write_text("from degas_hf.io import geotiff\n" + path.read_text())
    with pytest.raises(PublishError, match="imports degas_hf"):
        validate_folder(folder)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "model.safetensors").unlink(), "model.safetensors .* is missing"),
        (lambda f: (f / "config.json").unlink(), "config.json is missing"),
        (lambda f: (f / "preprocessor_config.json").unlink(), "preprocessor_config.json is missing"),
        (lambda f: (f / "modeling_st_swin_mae.py").unlink(), "modeling_st_swin_mae.py is not in the folder"),
        (lambda f: (f / "image_processing_st_swin_mae.py").unlink(), "image_processing_st_swin_mae.py is not in"),
        (lambda f: (f / "model.safetensors").rename(f / "weights.safetensors"), "not a stable weight file name"),
        (lambda f: (f / "pytorch_model.bin").write_bytes(b"x"), "pickle files are not published"),
        (lambda f: _edit_config(f, lambda c: c["auto_map"].pop("AutoModel")), "no 'AutoModel' entry"),
        (lambda f: _edit_config(f, lambda c: c["auto_map"].pop("AutoModelForSemanticSegmentation")),
         "no 'AutoModelForSemanticSegmentation' entry"),
        (lambda f: _edit_config(f, lambda c: c["auto_map"].__setitem__("AutoModel", "modeling_gone.STSwinMAEModel")),
         "modeling_gone.py is not in the folder"),
        (lambda f: _edit_config(f, lambda c: c["auto_map"].__setitem__("AutoModel", "modeling_st_swin_mae.Nope")),
         "does not define it"),
        (lambda f: _edit_config(f, lambda c: c["auto_map"].__setitem__("AutoModel", "other/repo--modeling_x.M")),
         "points to code in another repo"),
        (lambda f: _edit_config(f, lambda c: c.pop("custom_pipelines")), "custom_pipelines is missing"),
        (lambda f: _edit_config(f, lambda c: c.__setitem__("model_type", "swin")), "model_type is 'swin'"),
        (lambda f: (f / "config.json").write_text("{not json"), "not valid JSON"),
    ],
)
def test_bad_folders_are_refused_before_anything(workdir, hub, tmp_path, damage, message):
    folder = _copy(workdir["seg"], tmp_path / "bad")
    damage(folder)
    with pytest.raises(PublishError, match=message):
        publish(folder, "my-org/bad", log=lambda *a: None)
    assert hub.calls == []


def _edit_config(folder: Path, edit):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("repo_id", ["", "noslash", "a/b/c", "my org/name", "org/na me", "-org/name", "org/name-",
                                     "org/na--me", "org/name.git", "org/" + "x" * 97, "org/ümlaut"])
def test_malformed_repo_ids(workdir, hub, repo_id):
    with pytest.raises(PublishError, match="repo id"):
        publish(workdir["seg"], repo_id, log=lambda *a: None)
    assert hub.calls == []


def test_good_repo_ids():
    for repo_id in ("my-org/degas-100m", "User_1/degas.tiny", "a/b"):
        assert validate_repo_id(repo_id) == repo_id


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(task="flood-ish"), "unknown task 'flood-ish'"),
        (dict(metrics={"mean_iou": 0.4, "bogus_score": 1.0}), "unknown metric 'bogus_score'"),
        (dict(metrics={"mean_iou": float("nan")}), "finite number"),
        (dict(metrics={"mean_iou": "0.4"}), "finite number"),
        (dict(metrics={}), "non-empty"),
        (dict(metrics={"iou_forest": 0.3}), "names class 'forest'"),
        (dict(task="semantic-segmentation", dataset=None), "needs a 'dataset'"),
    ],
)
def test_bad_results_are_refused_before_anything(workdir, hub, tmp_path, change, message):
    data = {**RESULTS, **change}
    if data.get("dataset") is None:
        data.pop("dataset")
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PublishError, match=message):
        publish(workdir["seg"], "my-org/x", results=path, log=lambda *a: None)
    assert hub.calls == []


def test_results_accept_trainer_style_keys():
    res = load_results({"task": "sen1floods11", "split": "test", "metrics": {
        "eval_mean_iou": 0.9, "eval_iou_water": 0.8, "eval_runtime": 3.2, "epoch": 10}})
    assert res.metrics == {"mean_iou": 0.9, "iou_water": 0.8}
    assert res.dataset_name == "Sen1Floods11" and res.task_type == "image-segmentation"


def test_missing_token_is_refused_unless_dry_run(workdir, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with mock.patch.object(HfApi, "create_commit", _forbidden), mock.patch.object(HfApi, "create_repo", _forbidden):
        with pytest.raises(PublishError, match="No Hugging Face token"):
            publish(workdir["seg"], "my-org/x", log=lambda *a: None)


def test_cli_reports_errors_and_uploads_nothing(workdir, capsys):
    with mock.patch.object(HfApi, "create_commit", _forbidden), mock.patch.object(HfApi, "create_repo", _forbidden):
        code = cli_main(["publish", str(workdir["seg"]), "--repo-id", "not a repo id", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Malformed repo id" in err and "Nothing was uploaded" in err


def test_readme_in_folder_is_replaced_by_rendered_card(workdir, tmp_path):
    folder = _copy(workdir["pre"], tmp_path / "with-readme")
    (folder / "README.md").write_text("---\nlibrary_name: timm\n---\nold card\n")
    (folder / "training_args.bin").write_bytes(b"pickle")  # a training leftover: left out, not refused
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "x.pyc").write_bytes(b"x")
    info = validate_folder(folder)
    assert "training_args.bin" in info.excluded and "__pycache__/x.pyc" in info.excluded
    from degas_hf.hub.publish import stage_tree, finish_tree
    staged = stage_tree(info, tmp_path / "staged")
    finish_tree(staged, info, repo_id="my-org/degas-tiny")
    card = yaml.safe_load((staged / "README.md").read_text().split("---")[1])
    assert card["library_name"] == "transformers"
    assert not (staged / "training_args.bin").exists()


def test_local_folder_named_degas_100m_loads_by_name(workdir, monkeypatch, tmp_path):
    """README's forms: `AutoModel.from_pretrained("degas-100m")` with the package, and through the shipped code."""
    from transformers import AutoModel

    import degas_hf  # noqa: F401  (registers the Auto classes)

    shutil.copytree(workdir["pre"], tmp_path / "degas-100m")
    monkeypatch.chdir(tmp_path)
    model = AutoModel.from_pretrained("degas-100m")
    assert type(model).__module__.startswith("degas_hf.")
    report = check_loads_in_clean_process(tmp_path / "degas-100m", head="AutoModelForPreTraining")
    assert report["base_class"].startswith("transformers_modules.") and report["base_class"].endswith("STSwinMAEModel")


def test_republish_deletes_stale_managed_files_in_the_same_commit(workdir, hub):
    """A stale single-file model.safetensors would shadow new weights; hand-added files are left alone."""
    hub.existing_files = [".gitattributes", "README.md", "LICENSE", "model.safetensors",
                          "model-00001-of-00002.safetensors", "model.safetensors.index.json",
                          "examples/old.tif", "images/old.png", "results.json"]
    publish(workdir["seg"], "my-org/degas-tiny-flanders", log=lambda *a: None)
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert set(commit["deleted"]) == {"model-00001-of-00002.safetensors", "model.safetensors.index.json",
                                      "examples/old.tif", "images/old.png", "results.json"}
    assert "model.safetensors" in commit["files"] and "LICENSE" not in commit["deleted"]


# ------------------------------------------------------------------------------------------------ issue 13.7: leaks
def test_symlinks_out_of_the_folder_and_secrets_are_never_staged(workdir, hub, tmp_path, monkeypatch):
    # what is staged is the point here; the clean-process load has its own tests
    import importlib

    monkeypatch.setattr(importlib.import_module("degas_hf.hub.publish"), "check_loads_in_clean_process",
                        lambda *a, **k: {})
    folder = _copy(workdir["seg"], tmp_path / "leaky")
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("root:x:0:0")
    (folder / "notes.txt").symlink_to(outside)            # a file link out of the folder
    (folder / "passwd").symlink_to("/etc/passwd")
    (folder / "linked-dir").symlink_to(tmp_path, target_is_directory=True)
    (folder / "LICENSE").write_text("Apache-2.0")
    (folder / "LICENSE-link").symlink_to(folder / "LICENSE")  # a link inside the folder: published as the file
    for name in (".env", ".netrc", "id_rsa", "credentials.json", "hf_token", "server.pem", "api.key"):
        (folder / name).write_text("SECRET")
    (folder / ".ssh").mkdir()
    (folder / ".ssh" / "config").write_text("SECRET")
    logged = []
    publish(folder, "my-org/leaky", log=logged.append)
    staged = set(hub.commits[0]["files"])
    assert staged == BASE_FILES | {"LICENSE", "LICENSE-link"}
    payloads = hub.commits[0]["files"]
    assert payloads["LICENSE-link"] == b"Apache-2.0"
    assert not any(b"SECRET" in data or b"root:x" in data for data in payloads.values())
    text = "\n".join(logged)
    for name in ("notes.txt", "passwd", "linked-dir/", ".env", ".netrc", "id_rsa", "credentials.json", "hf_token",
                 "server.pem", "api.key", ".ssh/config"):
        assert f"  {name}: " in text, name
    assert "symbolic link out of the folder" in text and "--include" in text


def test_include_publishes_a_named_secret_looking_file(workdir, tmp_path):
    folder = _copy(workdir["pre"], tmp_path / "named")
    (folder / "credentials.json").write_text('{"note": "public, on purpose"}')
    (folder / ".zenodo.json").write_text("{}")
    assert "credentials.json" not in validate_folder(folder).files
    info = validate_folder(folder, include=["credentials.json", ".zenodo.json"])
    assert {"credentials.json", ".zenodo.json"} <= set(info.files)


def test_a_required_file_linked_out_of_the_folder_is_refused(workdir, tmp_path):
    folder = _copy(workdir["pre"], tmp_path / "linked-config")
    real = tmp_path / "config-elsewhere.json"
    (folder / "config.json").rename(real)
    (folder / "config.json").symlink_to(real)
    with pytest.raises(PublishError, match="config.json is a symbolic link out of the folder"):
        validate_folder(folder)
    folder = _copy(workdir["pre"], tmp_path / "linked-code")
    real = tmp_path / "modeling_elsewhere.py"
    (folder / "modeling_st_swin_mae.py").rename(real)
    (folder / "modeling_st_swin_mae.py").symlink_to(real)
    with pytest.raises(PublishError, match="modeling_st_swin_mae.py is a symbolic link out of the folder"):
        validate_folder(folder)


# ------------------------------------------------------------------------------------------------ issue 13.13
@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:-64]),
     "model.safetensors is not a readable safetensors file (truncated or corrupted"),
    (lambda f: (f / "model.safetensors").write_bytes(b"\x00not safetensors" * 40), "not a readable safetensors file"),
    (lambda f: ((f / "model.safetensors").unlink(), (f / "pytorch_model.bin").write_bytes(b"pickle")),
     "holds only pickle weights (pytorch_model.bin)"),
])
def test_damaged_or_pickle_only_weights_one_line_exit_2(workdir, tmp_path, capsys, damage, message):
    folder = _copy(workdir["seg"], tmp_path / "damaged")
    damage(folder)
    code = cli_main(["publish", str(folder), "--repo-id", "my-org/x", "--dry-run", "--output", str(tmp_path / "t")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("degas-hf publish: error: ") and message in err[0] and "Nothing was uploaded" in err[0]
    assert not (tmp_path / "t").exists()


def test_full_disk_while_staging_is_one_line(workdir, tmp_path, capsys, monkeypatch):
    import errno
    import importlib

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "t" / "model.safetensors"))

    monkeypatch.setattr(importlib.import_module("degas_hf.hub.publish"), "stage_tree", full)
    code = cli_main(["publish", str(workdir["pre"]), "--repo-id", "my-org/x", "--dry-run", "--output", str(tmp_path / "t")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no space left on device" in err[0] and "Nothing was uploaded" in err[0]
