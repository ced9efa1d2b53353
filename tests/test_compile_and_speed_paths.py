"""The speed paths keep the mathematics: regional torch.compile equals eager and does not recompile per call; the
attention mask reaches SDPA in a layout its fused CUDA kernels accept; bench_gpu runs."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from degas_hf import STSwinMAEConfig, STSwinMAEForPreTraining, STSwinMAEModel
from degas_hf.models.st_swin_mae import modeling_st_swin_mae as modeling
from degas_hf.training.compile import compile_model, compiled_blocks

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**overrides):
    values = dict(band_names=("B02", "B03", "B04"), num_frames=4, image_size=32, patch_size=(2, 4, 4),
                  window_size=(2, 4, 4), embed_dim=16, depths=(2, 2, 2, 1), num_heads=(2, 2, 4, 4),
                  decoder_depths=(1, 1, 2), decoder_num_heads=(4, 2, 2), drop_path_rate=0.0)
    values.update(overrides)
    return STSwinMAEConfig(**values)


def record_sdpa_masks(monkeypatch) -> list[torch.Tensor]:
    masks = []
    original = F.scaled_dot_product_attention

    def recording(query, key, value, attn_mask=None, **kwargs):
        masks.append(attn_mask)
        return original(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    return masks


def test_every_attention_mask_has_unit_last_stride_for_the_fused_kernels(monkeypatch):
    # SDPA's fused CUDA kernels (cuDNN, memory-efficient) require attn_mask.stride(-1) == 1; a permuted bias sent the
    # unshifted blocks to the math path (the `softmax_warp_forward` kernels of the H200 profile).
    # (No grad: training on CPU takes the eager path, see the next test; the mask's layout is the same.)
    model = STSwinMAEForPreTraining(tiny_config()).train()
    model.set_attn_implementation("sdpa")
    masks = record_sdpa_masks(monkeypatch)
    for autocast in (False, True):
        masks.clear()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(torch.randn(2, 3, 4, 32, 32), mask_seed=0)
        assert len(masks) == sum(model.config.depths) + sum(model.config.decoder_depths)
        for mask in masks:
            assert mask.stride(-1) == 1, f"mask {tuple(mask.shape)} has strides {mask.stride()}"
            assert mask.dtype == (torch.bfloat16 if autocast else torch.float32)


def test_cpu_training_runs_eager_attention_and_matches_sdpa(monkeypatch):
    # On CPU, SDPA with a mask that needs a gradient (the learned bias) has no fused kernel and runs its slower math
    # path; the model then runs eager attention, the same mathematics.
    torch.manual_seed(0)
    model = STSwinMAEForPreTraining(tiny_config()).train()
    x = torch.randn(2, 3, 4, 32, 32)
    masks = record_sdpa_masks(monkeypatch)
    model.set_attn_implementation("sdpa")
    loss_sdpa_setting = model(x, mask_seed=0).loss
    assert masks == []
    with torch.no_grad():
        model(x, mask_seed=0)
    assert masks, "without gradients the SDPA path is still taken"
    model.set_attn_implementation("eager")
    torch.testing.assert_close(model(x, mask_seed=0).loss, loss_sdpa_setting, rtol=0, atol=0)


def test_relative_position_bias_is_the_table_entry_of_each_token_pair():
    config = tiny_config(window_size=(2, 3, 3))
    attention = modeling.STSwinMAESelfAttention(config, dim=16, num_heads=2)
    torch.nn.init.normal_(attention.relative_position_bias_table)
    for window in ((2, 3, 3), (1, 3, 2)):  # full and clamped
        index = modeling.relative_position_index(window, attention.table_window, torch.device("cpu"))
        expected = attention.relative_position_bias_table[index].permute(2, 0, 1)
        bias = attention.relative_position_bias(window, torch.device("cpu"))
        assert bias.is_contiguous()
        torch.testing.assert_close(bias, expected, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------------------
# Regional torch.compile
# ------------------------------------------------------------------------------------------------------------


def test_compile_model_equals_eager_without_graph_breaks_or_recompiles():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    eager = STSwinMAEForPreTraining(tiny_config()).train()
    compiled = compile_model(copy.deepcopy(eager), backend="aot_eager")  # inductor codegen is minutes on 2 cores
    assert compiled_blocks(compiled) and all(block._compiled_call_impl is not None for block in compiled_blocks(compiled))
    x = torch.randn(2, 3, 4, 32, 32)

    def step(model, seed):
        output = model(x, mask_seed=seed)
        output.loss.backward()
        return output

    out_eager, out_compiled = step(eager, 0), step(compiled, 0)
    torch.testing.assert_close(out_compiled.loss, out_eager.loss, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out_compiled.reconstruction, out_eager.reconstruction, rtol=1e-4, atol=1e-4)
    for (name, p_compiled), p_eager in zip(compiled.named_parameters(), eager.parameters()):
        if p_eager.grad is not None:
            torch.testing.assert_close(p_compiled.grad, p_eager.grad, rtol=1e-4, atol=1e-4, msg=name)
    assert not counters["graph_break"], dict(counters["graph_break"])
    step(compiled, 1)  # caches filled during the first call may invalidate a guard once
    graphs = counters["stats"]["unique_graphs"]
    step(compiled, 2)
    assert counters["stats"]["unique_graphs"] == graphs, "a third call with the same shapes recompiled"
    # One graph per distinct block kind, shared by blocks of the same stage: far fewer than the blocks.
    assert graphs < len(compiled_blocks(compiled))


def test_compile_model_keeps_state_dict_and_refuses_other_models():
    model = STSwinMAEModel(tiny_config())
    keys = list(model.state_dict())
    assert compile_model(model, backend="eager") is model
    assert list(model.state_dict()) == keys
    with pytest.raises(ValueError, match="expects an ST-SwinMAE model"):
        compile_model(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------------------------------------------
# The GPU benchmark runs (tiny sizes, on CPU, in process); its numbers are not checked, its table is
# ------------------------------------------------------------------------------------------------------------


def test_bench_gpu_small_writes_its_table(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--device", "cpu", "--small", "--in-process", "--parts", "matmul,overhead,pretrain,encoder,attention,profile",
                "--out", str(tmp_path)])
    table = (tmp_path / "gpu_bench_cpu_small.md").read_text()
    for heading in ("### Ceiling", "### Host overhead", "### STSwinMAEForPreTraining step", "### Encoder vs torchvision",
                    "### Attention calls", "### Profile of one pretraining step"):
        assert heading in table
    assert "| step, SDPA | 2 |" in table
    assert "| ours (SDPA) | bf16 | fwd+bwd | 1 |" in table
    counts = [line.split("|") for line in table.splitlines() if "operators per fwd+bwd" in line]
    assert counts and all(int(row[3]) > int(row[4]) > 0 for row in counts)  # dispatched > launching kernels > 0
    # Every attention call of the tiny model is listed with the mask layout SDPA saw: unit last stride.
    attention_rows = [line for line in table.splitlines() if line.startswith("| ") and "torch.bfloat16" in line]
    assert attention_rows and all(row.split("|")[6].strip().endswith(", 1)") for row in attention_rows)


def test_gpu_session_script_parses_and_uses_flags_the_benchmarks_have():
    """benchmarks/gpu_session.sh is run blind on a lent GPU: it must at least be valid bash and call each benchmark
    with options that benchmark accepts."""
    import re

    script = ROOT / "benchmarks" / "gpu_session.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for name in ("bench_gpu.py", "bench_predict.py"):
        call = next(line for line in text.splitlines() if f"benchmarks/{name}" in line and not line.startswith("#"))
        flags = re.findall(r"\s(--[a-z-]+)", call.split(name, 1)[1])
        help_text = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), "--help"], capture_output=True,
                                   text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout
        assert flags and all(flag in help_text for flag in flags), (name, flags)
