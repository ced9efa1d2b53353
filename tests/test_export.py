"""`degas-hf export`: ONNX (run with onnxruntime) and torch.export (.pt2) files agree with the eager model, for the
segmentation model and the encoder, at a batch size other than the one traced; bad requests are one-line errors."""

import numpy as np
import pytest
import torch

from degas_hf import STSwinMAEConfig, STSwinMAEForPreTraining, STSwinMAEModel, STSwinUNetForSemanticSegmentation
from degas_hf.cli import main as cli_main


def small_config(**overrides):
    # Two stages, a shifted block in the first (grid 1x4x4 > window 1x2x2... along h and w), odd sizes come later.
    values = dict(band_names=("B02", "B03", "B04"), num_frames=2, image_size=16, patch_size=(2, 4, 4),
                  window_size=(2, 2, 2), embed_dim=8, depths=(2, 1), num_heads=(1, 2), decoder_depths=(1,),
                  decoder_num_heads=(1,), drop_path_rate=0.0, num_labels=3)
    values.update(overrides)
    return STSwinMAEConfig(**values)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    segmentation = STSwinUNetForSemanticSegmentation(small_config())
    for p in segmentation.parameters():  # a non-trivial relative position bias
        if p.ndim == 2 and p.shape[0] == 27:
            torch.nn.init.normal_(p, std=0.5)
    segmentation.save_pretrained(root / "segmentation")
    STSwinMAEForPreTraining(small_config()).save_pretrained(root / "pretrained")
    return root


def _eager(folder, model_class, pixel_values):
    model = model_class.from_pretrained(folder).eval()
    with torch.no_grad():
        output = model(pixel_values)
    if model_class is STSwinUNetForSemanticSegmentation:
        return [output.logits.numpy()]
    return [output.last_hidden_state.numpy(), output.pooler_output.numpy()]


@pytest.mark.parametrize("kind", ["segmentation", "pretrained"])
def test_onnx_export_matches_eager_at_another_batch_size(folders, kind, tmp_path, capsys):
    onnxruntime = pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed")
    pytest.importorskip("onnxscript", reason="the `onnx` extra is not installed")
    output = tmp_path / f"{kind}.onnx"
    assert cli_main(["export", str(folders / kind), "--output", str(output), "--width", "20"]) == 0
    printed = capsys.readouterr().out
    assert "checked against eager with onnxruntime" in printed
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    if kind == "segmentation":
        assert names == ["logits"] and "segmentation" in printed
        model_class = STSwinUNetForSemanticSegmentation
    else:  # a pretraining folder exports its encoder
        assert names == ["last_hidden_state", "pooler_output"] and "encoder" in printed
        model_class = STSwinMAEModel
    for batch in (1, 3):
        pixel_values = torch.randn(batch, 3, 2, 16, 20, generator=torch.Generator().manual_seed(batch))
        actual = session.run(None, {"pixel_values": pixel_values.numpy()})
        for a, e in zip(actual, _eager(folders / kind, model_class, pixel_values)):
            assert a.shape == e.shape
            np.testing.assert_allclose(a, e, atol=1e-4, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name]  # no temporary left


def test_torch_export_file_matches_eager(folders, tmp_path):
    output = tmp_path / "segmentation.pt2"
    assert cli_main(["export", str(folders / "segmentation"), "--format", "torch-export", "--output", str(output)]) == 0
    program = torch.export.load(str(output))  # our own file, just written
    pixel_values = torch.randn(3, 3, 2, 16, 16)
    with torch.no_grad():
        (logits,) = program.module()(pixel_values)
    np.testing.assert_allclose(logits.numpy(), _eager(folders / "segmentation", STSwinUNetForSemanticSegmentation,
                                                      pixel_values)[0], atol=1e-4, rtol=0)


def test_export_refuses_bad_requests_with_one_line(folders, tmp_path, capsys):
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"keep me")
    (tmp_path / "folder.pt2").mkdir()
    cases = [
        (["--output", str(tmp_path / "folder.pt2"), "--format", "torch-export", "--overwrite"],
         "is a folder, expected a file name"),
        (["--output", str(existing)], "exists; pass --overwrite"),
        (["--output", str(tmp_path / "model.pt2")], "must end with .onnx for --format onnx"),
        (["--format", "torch-export", "--output", str(tmp_path / "m.onnx")], "must end with .pt2"),
        (["--output", str(tmp_path / "missing" / "m.onnx")], "does not exist"),
        (["--output", str(tmp_path / "m.pt2"), "--format", "torch-export", "--frames", "3"],
         "--frames 3: this model (temporal_aggregation='concat') takes 2 dates"),
    ]
    for extra, message in cases:
        assert cli_main(["export", str(folders / "segmentation"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("degas-hf export: error: ") and message in err and err.count("\n") == 1, err
    assert existing.read_bytes() == b"keep me"
    assert cli_main(["export", str(folders / "pretrained"), "--head", "segmentation", "--format", "torch-export",
                     "--output", str(tmp_path / "x.pt2")]) == 2
    assert "not a fine-tuned STSwinUNetForSemanticSegmentation" in capsys.readouterr().err
    assert cli_main(["export", str(tmp_path / "nothing-here"), "--output", str(tmp_path / "y.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.pt2", "model.onnx"]
    assert list((tmp_path / "folder.pt2").iterdir()) == []


def test_docs_export_snippets_run_as_written(folders, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed")
    pytest.importorskip("onnxscript", reason="the `onnx` extra is not installed")
    import re
    import shlex
    import shutil
    from pathlib import Path

    from degas_hf.cli import build_parser

    text = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text()
    for line in re.findall(r"```bash\n(.*?)```", text, flags=re.S)[0].strip().splitlines():
        argv = shlex.split(line)[1:]
        assert build_parser(argv).parse_args(argv).command == "export", line
    shutil.copytree(folders / "segmentation", tmp_path / "runs" / "flood" / "model")
    monkeypatch.chdir(tmp_path)
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        exec(compile(block, "docs/export.md", "exec"), {})
    assert (tmp_path / "flood.onnx").is_file()


def test_onnx_without_the_extra_is_a_clear_error(folders, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)  # as if the `onnx` extra were not installed
    assert cli_main(["export", str(folders / "segmentation"), "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "ONNX export needs the `onnx` extra (pip install 'degas-hf[onnx]')" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
