"""Activation checkpointing for ST-SwinMAE models: recompute part of the forward in the backward, so that a larger
batch fits in memory.

On a GPU the pretraining step is bound by per-operator host overhead, so samples per second grow with the batch
until memory runs out; activation checkpointing moves that limit. Three modes:

- ``"none"``: the backward keeps every activation it needs (the fastest step, the most memory).
- ``"full"``: each Swin block keeps only its inputs and runs its whole forward again in the backward (the least
  memory; every GEMM of the blocks runs twice).
- ``"selective"``: each block keeps the outputs of its GEMMs and of attention and recomputes only the cheap
  element-wise operators (LayerNorm, GELU, casts, residual adds, copies) in the backward: no GEMM runs twice.

Gradients are the same in every mode (the recomputation replays the random state, so stochastic depth draws the
same samples). ``benchmarks/bench_gpu.py`` measures the memory and the speed of each mode.

    from degas_hf.training.activation_checkpointing import enable_activation_checkpointing
    enable_activation_checkpointing(model, "selective")
"""

from __future__ import annotations

import functools

import torch

MODES = ("none", "full", "selective")

_aten = torch.ops.aten
# Operators whose outputs "selective" keeps: the expensive ones (GEMMs, attention kernels, the patch embedding).
_KEPT = {
    _aten.mm, _aten.addmm, _aten.bmm, _aten.baddbmm, _aten.convolution,
    _aten._scaled_dot_product_efficient_attention, _aten._scaled_dot_product_flash_attention,
    _aten._scaled_dot_product_cudnn_attention, _aten._scaled_dot_product_flash_attention_for_cpu,
}


def _keep_gemm_outputs(ctx, operator, *args, **kwargs):
    from torch.utils.checkpoint import CheckpointPolicy

    if getattr(operator, "overloadpacket", operator) in _KEPT:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def selective_checkpoint_context():
    """`context_fn` for `torch.utils.checkpoint.checkpoint` (non-reentrant): GEMM and attention outputs are saved,
    everything else is recomputed."""
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    return create_selective_checkpoint_contexts(_keep_gemm_outputs)


def enable_activation_checkpointing(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """Switches `model` (any ST-SwinMAE model, or a transformers model whose blocks support gradient checkpointing)
    to `mode` and returns it. "none" turns checkpointing off."""
    if mode not in MODES:
        raise ValueError(f"activation checkpointing must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "none":
        # transformers renamed the switches ("gradient" -> "activation" checkpointing); older 5.x has the first only
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        disable()
        return model
    kwargs = {"use_reentrant": False}
    if mode == "selective":
        kwargs["context_fn"] = functools.partial(selective_checkpoint_context)
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model
