"""Activation checkpointing modes: the same gradients, and "selective" recomputes only element-wise operators."""

from __future__ import annotations

import copy

import pytest
import torch
from _helpers_ops import CountOperators

from degas_hf import STSwinMAEConfig, STSwinMAEForPreTraining
from degas_hf.training.activation_checkpointing import enable_activation_checkpointing


def backward_operators_and_gradients(model, pixel_values):
    torch.manual_seed(1)  # stochastic depth on: the recomputation must replay the same draws
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(pixel_values, mask_seed=3).loss
    with CountOperators() as counted:
        loss.backward()
    return counted.counts, {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def test_every_mode_gives_the_same_gradients_and_selective_runs_no_gemm_twice():
    torch.manual_seed(0)
    config = STSwinMAEConfig.from_preset("degas-tiny", drop_path_rate=0.2)
    base = STSwinMAEForPreTraining(config).train()
    pixel_values = torch.randn(2, config.num_channels, 4, 32, 32)
    results = {}
    for mode in ("none", "full", "selective"):
        model = enable_activation_checkpointing(copy.deepcopy(base), mode)
        results[mode] = backward_operators_and_gradients(model, pixel_values)
    (none_ops, none_grads), (full_ops, full_grads), (sel_ops, sel_grads) = (results[m] for m in ("none", "full", "selective"))
    for grads in (full_grads, sel_grads):
        assert grads.keys() == none_grads.keys()
        for name, grad in none_grads.items():
            torch.testing.assert_close(grads[name], grad, rtol=0, atol=0)

    def gemms(counts):
        return counts["mm"] + counts["addmm"] + counts["bmm"]

    assert gemms(full_ops) > gemms(none_ops)  # full runs the blocks' forward again, GEMMs included
    assert gemms(sel_ops) == gemms(none_ops)  # selective keeps every GEMM output
    assert sel_ops["native_layer_norm"] > none_ops["native_layer_norm"] == 0  # ... and recomputes the norms
    assert sel_ops["gelu"] > 0


def test_none_switches_checkpointing_off_and_a_bad_mode_is_refused():
    model = STSwinMAEForPreTraining(STSwinMAEConfig.from_preset("degas-tiny"))
    enable_activation_checkpointing(model, "selective")
    assert model.is_activation_checkpointing
    enable_activation_checkpointing(model, "none")
    assert not model.is_activation_checkpointing
    with pytest.raises(ValueError, match="must be one of none, full, selective, got 'some'"):
        enable_activation_checkpointing(model, "some")


def test_the_benchmark_runs_and_selective_keeps_every_gemm(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_activation_checkpointing.py"
    spec = importlib.util.spec_from_file_location("bench_activation_checkpointing", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    output = tmp_path / "table.md"
    bench.main(["--preset", "degas-tiny", "--size", "32", "--batches", "1", "2", "--output", str(output)])
    rows = {line.split("|")[1].strip(): line.split("|") for line in output.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| mode")}
    assert set(rows) == {"none", "selective", "full"}
    assert int(rows["selective"][6]) == int(rows["none"][6]) < int(rows["full"][6])  # GEMMs per step
