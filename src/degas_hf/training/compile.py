"""Regional `torch.compile` for ST-SwinMAE models.

Compiling the whole model traces ~34 Swin blocks into one graph and did not finish its first step within 150 s on
an H200. The blocks are the same code with a handful of distinct shapes (per stage: shifted or not), so compiling
each repeated block in place ("regional compilation") traces one graph per distinct (shape, shift) pair and reuses
it for every block of that kind: dynamo treats module parameters as graph inputs, so two blocks of the same stage
share a compiled graph. Compile time then grows with the number of stages, not with the depth.

    from degas_hf.training.compile import compile_model
    model = compile_model(model)          # the same object, its blocks compiled in place

Shapes are static (`dynamic=False`): a training run sees one input size, and each new input size compiles once
more (prediction with a fixed window size sees one).
"""

from __future__ import annotations

import torch
from torch import nn

# Blocks compiled one by one. Names, not classes, so models loaded with trust_remote_code (whose classes live in a
# transformers_modules package, not in degas_hf) are compiled too.
COMPILED_BLOCKS = ("STSwinMAELayer", "STSwinMAEPatchMerging", "STSwinMAEPatchExpanding")

# One graph per distinct (block class, input shape, shift, window) and per grad mode; degas-100m needs about 20
# (4 encoder + 3 decoder stages, shifted and not, plus merging/expanding), and prediction at a second window size
# doubles that. dynamo's default limit (8 per code object) would silently fall back to eager after the 8th.
RECOMPILE_LIMIT = 64


def _raise_recompile_limits(limit: int) -> None:
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # renamed in torch 2.6; the old name still exists
        if hasattr(config, name) and getattr(config, name) < limit:
            setattr(config, name, limit)
    if hasattr(config, "accumulated_recompile_limit") and config.accumulated_recompile_limit < 4 * limit:
        config.accumulated_recompile_limit = 4 * limit


def compiled_blocks(model: nn.Module) -> list[nn.Module]:
    """The modules `compile_model` compiles: every Swin block, patch merging and patch expanding of `model`."""
    return [module for module in model.modules() if type(module).__name__ in COMPILED_BLOCKS]


def compile_model(model: nn.Module, *, mode: str | None = None, dynamic: bool = False, backend: str = "inductor",
                  fullgraph: bool = True) -> nn.Module:
    """Compiles each repeated block of an ST-SwinMAE model in place (`module.compile`) and returns the model.

    Args:
        model: any ST-SwinMAE model (pretraining, encoder, ST-SwinUNet), possibly wrapped (PEFT, DDP): blocks
            are found by class name anywhere inside it.
        mode: `torch.compile` mode (`None`, "max-autotune-no-cudagraphs", "reduce-overhead", ...).
        dynamic: dynamic shapes; `False` (static) avoids shape guards and gives the fastest kernels.
        backend: `torch.compile` backend ("inductor"; "aot_eager" or "eager" trace without generating code).
        fullgraph: require each block to compile as one graph (a graph break is an error, not a silent slowdown).

    Returns the same `model` object. Its `state_dict` keys and parameters are unchanged (`module.compile` does
    not wrap the module), so saving, loading and optimizers see the usual model.
    """
    blocks = compiled_blocks(model)
    if not blocks:
        raise ValueError(
            f"compile_model expects an ST-SwinMAE model (with {', '.join(COMPILED_BLOCKS)} blocks), "
            f"got {type(model).__name__} without any"
        )
    _raise_recompile_limits(RECOMPILE_LIMIT)
    for block in blocks:
        block.compile(mode=mode, dynamic=dynamic, backend=backend, fullgraph=fullgraph)
    return model
