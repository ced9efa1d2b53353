"""PyTorch ST-SwinMAE (Spatio-Temporal SwinMAE, arXiv 2405.02512) and ST-SwinUNet.

A hierarchical masked autoencoder built from Video Swin blocks: 3D patch embedding, 3D (shifted) window
attention with a 3D relative position bias, spatial patch merging in the encoder, patch expanding in the
decoder. ST-SwinUNet keeps the pretrained encoder AND decoder and adds skip connections.

Tensors inside the network are channels-last token grids `(batch, frames', height', width', channels)`;
the public inputs are `pixel_values` of shape `(batch, channels, frames, height, width)`.

This file is Hub-bound: it imports only the standard library, torch and transformers, and reaches the
configuration through a single-dot relative import.
"""

from __future__ import annotations

import functools
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_st_swin_mae import STSwinMAEConfig

# Added to attention scores between tokens that must not see each other (as Swin does; -inf would turn an
# all-masked row into NaN).
MASK_VALUE = -100.0


# ----------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------


# Shared wording of the optional outputs (the same in every output class).
_HIDDEN_STATES_DOC = """hidden_states (`tuple(torch.FloatTensor)`, returned with `output_hidden_states=True`):
            The patch embeddings, then the output of each encoder stage (before the final layer norm), as tokens
            `(batch_size, num_tokens_s, channels_s)` flattened in (frames', height_s, width_s) order. They are the
            tensors the computation goes on from, so `retain_grad()` on them works.
        attentions (`tuple(torch.FloatTensor)`, returned with `output_attentions=True`):
            Attention probabilities of every encoder block (`sum(config.depths)` entries, in order), each
            `(batch_size * num_windows, num_heads, window_tokens, window_tokens)` as transformers' Swin lays them
            out: windows ordered batch-major, then (frames', height', width') window rows; `window_tokens` =
            Wt * Wh * Ww of the block's effective window (clamped where the grid is smaller than the window); for
            shifted blocks, windows of the cyclically shifted (and end-padded) grid. Computed on the eager path
            (an SDPA model switches to it for that call).
        reshaped_hidden_states (`tuple(torch.FloatTensor)`, returned with `output_hidden_states=True`):
            The same states as feature maps `(batch_size, channels_s, frames', height_s, width_s)` (views of
            `hidden_states`)."""


@dataclass
class STSwinMAEModelOutput(ModelOutput):
    """
    Output of the ST-SwinMAE encoder.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_tokens, hidden_size)`):
            Normalised tokens of the last stage, flattened in (frames', height', width') order.
        pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            Mean of `last_hidden_state` over the tokens.
        HIDDEN_STATES_DOC
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    reshaped_hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class STSwinMAEForPreTrainingOutput(ModelOutput):
    """
    Output of masked-autoencoder pretraining.

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            Mean squared error over the valid pixels of masked tokens.
        reconstruction (`torch.FloatTensor` of shape `(batch_size, channels, frames, height, width)`):
            Predicted pixels (in the input's normalised units; with `norm_pix_loss` the per-patch target
            statistics are undone so it is comparable with the input).
        mask (`torch.FloatTensor` of shape `(batch_size, frames, height, width)`):
            1.0 where the pixel belonged to a masked (hidden) token, 0.0 where it was visible.
        HIDDEN_STATES_DOC
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    mask: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    reshaped_hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class STSwinUNetSemanticSegmenterOutput(SemanticSegmenterOutput):
    """
    Output of ST-SwinUNet: transformers' `SemanticSegmenterOutput` plus the feature maps.

    Args:
        loss (`torch.FloatTensor` of shape `()`, returned when `labels` are given):
            Cross-entropy (classification) or mean squared error (regression) over labelled pixels with data.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height, width)`):
            Per-pixel scores at the input's resolution.
        HIDDEN_STATES_DOC
    """

    reshaped_hidden_states: tuple[torch.FloatTensor, ...] | None = None


for _output_class in (STSwinMAEModelOutput, STSwinMAEForPreTrainingOutput, STSwinUNetSemanticSegmenterOutput):
    _output_class.__doc__ = _output_class.__doc__.replace("HIDDEN_STATES_DOC", _HIDDEN_STATES_DOC)


# ----------------------------------------------------------------------------------------------------------
# Pure helpers (window partition, relative position index, shift mask, window rule)
# ----------------------------------------------------------------------------------------------------------


def window_partition(hidden_states: torch.Tensor, window_size: tuple[int, int, int]) -> torch.Tensor:
    """(B, T, H, W, C) with T, H, W multiples of the window -> (B * num_windows, Wt * Wh * Ww, C)."""
    batch_size, frames, height, width, channels = hidden_states.shape
    wt, wh, ww = window_size
    hidden_states = hidden_states.view(batch_size, frames // wt, wt, height // wh, wh, width // ww, ww, channels)
    windows = hidden_states.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, wt * wh * ww, channels)
    return windows


def window_reverse(windows: torch.Tensor, window_size: tuple[int, int, int], grid: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of `window_partition`: (B * num_windows, Wt * Wh * Ww, C) -> (B, T, H, W, C)."""
    wt, wh, ww = window_size
    frames, height, width = grid
    channels = windows.shape[-1]
    hidden_states = windows.view(-1, frames // wt, height // wh, width // ww, wt, wh, ww, channels)
    return hidden_states.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(-1, frames, height, width, channels)


def effective_window_and_shift(
    grid: tuple[int, int, int], window_size: tuple[int, ...], shift_size: tuple[int, ...]
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The Video Swin rule: along an axis where the token grid is not larger than the window, the window is
    clamped to the grid and shifting is disabled (shifting a window that already sees the whole axis would only
    add a mask)."""
    window = tuple(g if g <= w else w for g, w in zip(grid, window_size))
    shift = tuple(0 if g <= w else s for g, w, s in zip(grid, window_size, shift_size))
    return window, shift


@functools.lru_cache(maxsize=64)
def _relative_position_index_cpu(window_size: tuple[int, int, int], table_window: tuple[int, int, int]) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window_size], indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 3)
    # Offsets are taken relative to the table's own window, so a clamped window reads the same entries a
    # full window would for the same displacement.
    relative += torch.tensor([w - 1 for w in table_window])
    span_t, span_h, span_w = (2 * w - 1 for w in table_window)
    return relative[..., 0] * (span_h * span_w) + relative[..., 1] * span_w + relative[..., 2]


def relative_position_index(
    window_size: tuple[int, int, int], table_window: tuple[int, int, int], device: torch.device
) -> torch.Tensor:
    """Index (N, N), N = Wt*Wh*Ww, into a relative position bias table built for `table_window`."""
    return _device_cached(_relative_position_index_cpu, window_size, table_window, device=device)


@functools.lru_cache(maxsize=64)
def _shift_mask_cpu(grid: tuple[int, int, int], window_size: tuple[int, int, int], shift_size: tuple[int, int, int]) -> torch.Tensor:
    # Label every position of the (padded, shifted) grid by the region it came from; tokens of one window may
    # attend to each other only if they come from the same region.
    region = torch.zeros(grid, dtype=torch.long)
    for axis, (length, window, shift) in enumerate(zip(grid, window_size, shift_size)):
        index = torch.arange(length)
        axis_region = (index >= length - window).long() + (index >= length - shift).long() if shift > 0 else 0 * index
        shape = [1, 1, 1]
        shape[axis] = length
        region = region * 3 + axis_region.view(shape)
    region_windows = window_partition(region[None, ..., None], window_size).squeeze(-1)  # (nW, N)
    different = region_windows[:, None, :] != region_windows[:, :, None]
    return torch.zeros(different.shape).masked_fill(different, MASK_VALUE)  # (nW, N, N)


def shift_window_mask(
    grid: tuple[int, int, int], window_size: tuple[int, int, int], shift_size: tuple[int, int, int], device: torch.device
) -> torch.Tensor:
    """Additive mask (num_windows, N, N) separating the sub-windows that a cyclic shift brought together.
    Built once per (grid, window, shift, device) and cached: it depends on shapes only."""
    return _device_cached(_shift_mask_cpu, grid, window_size, shift_size, device=device)


@functools.lru_cache(maxsize=64)
def _shift_permutation_cpu(grid: tuple[int, int, int], window_size: tuple[int, int, int], shift_size: tuple[int, int, int]) -> torch.Tensor:
    positions = torch.arange(math.prod(grid)).view(1, *grid, 1)
    in_windows = window_partition(positions, window_size).flatten()  # grid position held by each window-order slot
    rolled = torch.roll(positions, shifts=tuple(-s for s in shift_size), dims=(1, 2, 3))
    in_shifted_windows = window_partition(rolled, window_size).flatten()
    slot = torch.empty_like(in_windows)
    slot[in_windows] = torch.arange(in_windows.numel())  # window-order slot of each grid position
    to_shifted = slot[in_shifted_windows]
    return torch.stack([to_shifted, torch.argsort(to_shifted)])


def shift_permutation(
    grid: tuple[int, int, int], window_size: tuple[int, int, int], shift_size: tuple[int, int, int], device: torch.device
) -> torch.Tensor:
    """(2, L) long, L = the (padded) grid's token count: row 0 takes tokens in window order (`window_partition` of
    the grid) to the order `window_partition` gives the grid cyclically shifted by -shift; row 1 is its inverse.
    Cached per (grid, window, shift, device)."""
    return _device_cached(_shift_permutation_cpu, grid, window_size, shift_size, device=device)


@functools.lru_cache(maxsize=64)
def _padding_in_window_order_cpu(grid: tuple[int, int, int], padded_grid: tuple[int, int, int], window_size: tuple[int, int, int]) -> torch.Tensor:
    is_padding = torch.ones(padded_grid, dtype=torch.bool)
    is_padding[: grid[0], : grid[1], : grid[2]] = False
    return window_partition(is_padding[None, ..., None], window_size).reshape(-1, 1)


def padding_in_window_order(
    grid: tuple[int, int, int], padded_grid: tuple[int, int, int], window_size: tuple[int, int, int], device: torch.device
) -> torch.Tensor:
    """(L, 1) bool in window order, True at the positions `pad_to_multiple` added to make `grid` `padded_grid`."""
    return _device_cached(_padding_in_window_order_cpu, grid, padded_grid, window_size, device=device)


_DEVICE_CACHE: dict = {}

try:  # while torch.export traces, new tensors are fake unless this lifts the fake mode
    from torch._subclasses.fake_tensor import unset_fake_temporarily as _real_tensors
except ImportError:  # pragma: no cover - older or newer torch without it
    _real_tensors = nullcontext


def _device_cached(builder, *key, device: torch.device) -> torch.Tensor:
    """`builder(*key)` (itself cached on CPU), copied once to `device` and remembered there."""
    cache_key = (builder.__name__, key, str(device))
    if cache_key not in _DEVICE_CACHE:
        if len(_DEVICE_CACHE) > 256:
            _DEVICE_CACHE.clear()
        # Built outside inference mode even when first needed there: an inference tensor in the cache would
        # break every later forward that records autograd (predict first, then fine-tune, in one process). Built
        # as real tensors even when torch.export traces with fake ones: a fake tensor kept here would poison every
        # later export and forward (dynamo, which does not run this code for real, is left to trace it).
        real_tensors = nullcontext() if _is_dynamo_compiling() else _real_tensors()
        with torch.inference_mode(False), torch.no_grad(), real_tensors:
            _DEVICE_CACHE[cache_key] = builder(*key).to(device)
    return _DEVICE_CACHE[cache_key]


def _is_dynamo_compiling() -> bool:
    check = getattr(getattr(torch, "compiler", None), "is_dynamo_compiling", None)
    return bool(check()) if check is not None else False


def is_tracing() -> bool:
    """True while torch.compile / torch.export (dynamo or not) / torch.jit.trace is building a graph."""
    compiler = getattr(torch, "compiler", None)  # (older torch: no torch.compiler / no is_exporting)
    if compiler is not None and (compiler.is_compiling() or getattr(compiler, "is_exporting", bool)()):
        return True
    return torch.jit.is_tracing()


def token_mask_grid(bool_masked_pos: torch.Tensor, batch_size: int, token_grid: tuple[int, int, int]) -> torch.Tensor:
    """`bool_masked_pos` as a (B, T', H', W') bool grid. Accepted: that grid, or the flat VideoMAE/ViTMAE form
    (B, num_patches) with num_patches = T' * H' * W' tokens in (frames', height', width') order."""
    grid_shape = (batch_size, *token_grid)
    if not isinstance(bool_masked_pos, torch.Tensor):
        raise ValueError(f"`bool_masked_pos` must be a torch.Tensor, got {type(bool_masked_pos).__name__}")
    if tuple(bool_masked_pos.shape) == (batch_size, math.prod(token_grid)):
        bool_masked_pos = bool_masked_pos.view(grid_shape)
    elif tuple(bool_masked_pos.shape) != grid_shape:
        raise ValueError(
            f"`bool_masked_pos` must have shape (batch, frames', height', width') = {grid_shape} or (batch, num_patches) = "
            f"{(batch_size, math.prod(token_grid))} for a {token_grid} token grid, got {tuple(bool_masked_pos.shape)}"
        )
    return bool_masked_pos.bool()


def linear_rates(maximum: float, count: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to `maximum` over `count` blocks (plain Python: meta-safe)."""
    return [maximum * i / max(count - 1, 1) for i in range(count)]


def as_tokens_and_grid(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, H, W, C) -> the tokens (B, T*H*W, C) and a (B, T, H, W, C) view OF THOSE TOKENS. Computing on from
    the view puts the token tensor itself in the graph, so a returned hidden state can `retain_grad()`."""
    tokens = grid.flatten(1, 3)
    return tokens, tokens.view(grid.shape)


def hidden_state_outputs(
    encoder_outputs: "STSwinMAEEncoderOutput", output_hidden_states: bool, output_attentions: bool
) -> dict[str, tuple[torch.Tensor, ...]]:
    """The optional output fields: token states (B, N_s, C_s), their feature-map views (B, C_s, T', H_s, W_s), and
    the attention probabilities of every encoder block."""
    outputs = {}
    if output_hidden_states:
        outputs["hidden_states"] = tuple(encoder_outputs.token_states)
        outputs["reshaped_hidden_states"] = tuple(grid.permute(0, 4, 1, 2, 3) for grid in encoder_outputs.grids)
    if output_attentions:
        outputs["attentions"] = encoder_outputs.attentions
    return outputs


def follow_umask(paths) -> None:
    """Give files the permissions the user's umask allows: safetensors writes weights 0600, unlike every other file
    a save writes, so a shared or published model folder would otherwise hold weights only their writer can read."""
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
    for path in paths:
        path = Path(path)
        if path.is_file() and not path.is_symlink() and (path.stat().st_mode & 0o777) == 0o600 != mode:
            os.chmod(path, mode)


def add_residual(shortcut: torch.Tensor, branch: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """`shortcut + branch`, the branch dropped for whole samples with probability `drop_prob` while training
    (stochastic depth) and the kept ones scaled by 1 / (1 - drop_prob).

    The per-sample scale is computed on a (B, 1, ..., 1) tensor and applied in the add itself (`addcmul`): one
    full-size kernel instead of three (divide, multiply, add), forward and backward alike. The random draw is the
    one timm's `drop_path` makes (same shape, dtype and order); the keep decision and the scale are taken in the
    residual stream's precision (fp32 under autocast, where a bf16 branch would round 1 - p + draw up to 1).
    """
    if drop_prob == 0.0 or not training:
        return shortcut + branch
    keep_prob = 1 - drop_prob
    shape = (branch.shape[0],) + (1,) * (branch.ndim - 1)
    draw = torch.rand(shape, dtype=branch.dtype, device=branch.device)
    scale = (keep_prob + draw.to(shortcut.dtype)).floor_().div_(keep_prob)  # in the residual stream's precision
    return torch.addcmul(shortcut, branch, scale)


def pad_to_multiple(hidden_states: torch.Tensor, multiples: tuple[int, int, int]) -> torch.Tensor:
    """Zero-pads (B, T, H, W, C) at the end of T, H and W up to multiples."""
    _, frames, height, width, _ = hidden_states.shape
    pads = [(-size) % m for size, m in zip((frames, height, width), multiples)]
    if any(pads):
        hidden_states = F.pad(hidden_states, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
    return hidden_states


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Matmul + softmax attention; the reference the SDPA path must equal. q/k/v: (B', heads', N, d)."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


# ----------------------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------------------


class STSwinMAEPatchEmbeddings(nn.Module):
    """3D patch partition: a Conv3d whose kernel and stride are the patch size.

    (B, C, T, H, W) -> (B, T', H', W', embed_dim), with T' = ceil(T / pt), H' = ceil(H / ph), W' = ceil(W / pw).
    Frames are padded by repeating the last frame, height and width by zeros.
    """

    def __init__(self, config: STSwinMAEConfig):
        super().__init__()
        self.patch_size = tuple(config.patch_size)
        self.projection = nn.Conv3d(config.num_channels, config.embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pad_pixel_values(pixel_values, self.patch_size)
        embeddings = self.projection(pixel_values)
        return embeddings.permute(0, 2, 3, 4, 1)


def pad_pixel_values(pixel_values: torch.Tensor, patch_size: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, T, H, W) padded to multiples of the patch: frames by repeating the last one, space by zeros."""
    frames, height, width = pixel_values.shape[2:]
    pad_t, pad_h, pad_w = ((-size) % p for size, p in zip((frames, height, width), patch_size))
    if pad_t:
        pixel_values = torch.cat([pixel_values, pixel_values[:, :, -1:].expand(-1, -1, pad_t, -1, -1)], dim=2)
    if pad_h or pad_w:
        pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h))
    return pixel_values


class STSwinMAEEmbeddings(nn.Module):
    """Patch embeddings, their layer norm, optional mask token replacement, dropout."""

    def __init__(self, config: STSwinMAEConfig, use_mask_token: bool = False):
        super().__init__()
        self.patch_embeddings = STSwinMAEPatchEmbeddings(config)
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, 1, config.embed_dim)) if use_mask_token else None
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            pixel_values: (B, C, T, H, W).
            bool_masked_pos: (B, T', H', W') bool, True where a token is replaced by the mask token.
        Returns:
            (B, T', H', W', embed_dim)
        """
        embeddings = self.norm(self.patch_embeddings(pixel_values))
        if bool_masked_pos is not None:
            if self.mask_token is None:
                raise ValueError("`bool_masked_pos` was given but this model was built without a mask token")
            mask = bool_masked_pos.unsqueeze(-1).to(embeddings.dtype)
            embeddings = embeddings * (1.0 - mask) + self.mask_token.to(embeddings.dtype) * mask
        return self.dropout(embeddings)


# ----------------------------------------------------------------------------------------------------------
# Swin block
# ----------------------------------------------------------------------------------------------------------


class STSwinMAESelfAttention(nn.Module):
    """Multi-head self-attention inside 3D windows, with a learned 3D relative position bias.

    q, k and v come from one GEMM (`project_qkv`). The bias (and, for shifted windows, the cached shift mask) is
    passed to the attention kernel as ONE additive mask. q/k/v stay 4-D so SDPA's fused kernels apply:
    (B * nW, heads, N, d) without a shift mask, or (B, nW * heads, N, d) with it, so the (1, nW * heads, N, N) mask
    broadcasts over the batch at no cost.
    """

    def __init__(self, config: STSwinMAEConfig, dim: int, num_heads: int):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.table_window = tuple(config.window_size)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.q_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.o_proj = nn.Linear(dim, dim)
        span = math.prod(2 * w - 1 for w in self.table_window)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(span, num_heads))

    def project_qkv(self, windows: torch.Tensor) -> torch.Tensor:
        """(B * nW, N, C) -> (B * nW, N, 3C): queries, keys and values side by side.

        One GEMM over the three weights concatenated (parameters and checkpoints keep the q/k/v names): on a GPU
        the step is bound by the number of kernels, and this saves two GEMMs, their input casts under autocast and
        their backward kernels per block. Wrapped projections (PEFT LoRA adapters, quantised layers) are called
        one by one so their own forward runs.
        """
        projections = (self.q_proj, self.k_proj, self.v_proj)
        if all(type(projection) is nn.Linear for projection in projections):
            weight = torch.cat([projection.weight for projection in projections])
            bias = None if self.q_proj.bias is None else torch.cat([projection.bias for projection in projections])
            return F.linear(windows, weight, bias)
        return torch.cat([projection(windows) for projection in projections], dim=-1)

    def relative_position_bias(self, window_size: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        """(heads, N, N) contiguous bias for the (possibly clamped) window."""
        index = relative_position_index(window_size, self.table_window, device)
        num_tokens = index.shape[0]
        # Gathered along the transposed table so the bias comes out contiguous: SDPA's fused CUDA kernels refuse a
        # mask whose last dimension has a stride other than 1 (the former `table[index].permute(2, 0, 1)` had
        # stride `heads` and sent every unshifted block to the math path), and index_select's backward is one
        # index_add instead of a sort-based index_put.
        bias = self.relative_position_bias_table.t().index_select(1, index.reshape(-1))
        return bias.view(-1, num_tokens, num_tokens)

    def forward(
        self,
        windows: torch.Tensor,
        window_size: tuple[int, int, int],
        shift_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            windows: (B * nW, N, C) tokens grouped by window.
            window_size: the effective (t, h, w) window, N = t * h * w.
            shift_mask: (nW, N, N) additive mask of the shifted windows, or None.
            output_attentions: also return the attention probabilities (computed on the eager path).
        Returns:
            (B * nW, N, C), and the probabilities (B * nW, heads, N, N) or None.
        """
        num_windows_total, num_tokens, channels = windows.shape
        qkv = self.project_qkv(windows).view(num_windows_total, num_tokens, 3, self.num_heads, self.head_dim)

        mask = self.relative_position_bias(window_size, windows.device).unsqueeze(0)  # (1, heads, N, N)
        fold = shift_mask is not None and not output_attentions
        if fold:
            num_windows = shift_mask.shape[0]
            mask = (mask + shift_mask.unsqueeze(1)).reshape(1, num_windows * self.num_heads, num_tokens, num_tokens)
            # (B * nW, N, 3, heads, d) -> (3, B, nW * heads, N, d): ONE copy for q, k and v; the mask then
            # broadcasts over B.
            qkv = qkv.view(-1, num_windows, num_tokens, 3, self.num_heads, self.head_dim).permute(3, 0, 1, 4, 2, 5)
            qkv = qkv.reshape(3, -1, num_windows * self.num_heads, num_tokens, self.head_dim)
        else:
            qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B * nW, heads, N, d), a view
            if shift_mask is not None:
                # Probabilities asked for: keep the (B * nW, heads, N, N) layout, so the returned tensor is the one
                # the computation used (`retain_grad()` works); the eager path materialises scores of that size
                # anyway.
                mask = (mask + shift_mask.unsqueeze(1)).repeat(num_windows_total // shift_mask.shape[0], 1, 1, 1)
        query, key, value = qkv.unbind(0)
        mask = mask.to(query.dtype)

        if output_attentions:  # fused kernels do not return the probabilities (transformers does the same)
            attention_interface = eager_attention_forward
        elif query.device.type == "cpu" and mask.requires_grad and self.config._attn_implementation == "sdpa":
            # Training on CPU: SDPA has no fused CPU kernel for a mask that needs a gradient (the learned bias) and
            # runs its math path, slower than eager (bf16 degas-100m encoder fwd+bwd: 1.18x with eager). Same math.
            attention_interface = eager_attention_forward
        else:
            attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            is_causal=False,
        )
        # attn_output: (B', N, heads', d) -> (B * nW, N, C)
        if fold:
            attn_output = attn_output.view(-1, num_tokens, shift_mask.shape[0], self.num_heads, self.head_dim)
            attn_output = attn_output.transpose(1, 2)
        attn_output = self.o_proj(attn_output.reshape(num_windows_total, num_tokens, channels))
        return attn_output, attn_weights if output_attentions else None


class STSwinMAEMLP(nn.Module):
    def __init__(self, config: STSwinMAEConfig, dim: int):
        super().__init__()
        hidden = int(dim * config.mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.activation_fn(self.fc1(hidden_states)))
        return self.dropout(self.fc2(hidden_states))


class STSwinMAELayer(GradientCheckpointingLayer):
    """One Video Swin block: pre-norm (shifted) window attention and pre-norm MLP, each with stochastic depth.

    It works on the tokens of its stage kept in window order (see `STSwinMAEBlocks`). `shift_size` is the block's
    nominal shift (0 or window // 2); the stage decides the effective window and shift for the actual grid and
    passes them in, with the cached shift mask and token permutation.
    """

    def __init__(self, config: STSwinMAEConfig, dim: int, num_heads: int, drop_path_rate: float, shifted: bool):
        super().__init__()
        self.shift_size = tuple(w // 2 for w in config.window_size) if shifted else (0, 0, 0)
        self.layernorm_before = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attention = STSwinMAESelfAttention(config, dim, num_heads)
        self.layernorm_after = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = STSwinMAEMLP(config, dim)
        self.drop_path_rate = drop_path_rate
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        tokens: torch.Tensor,
        window_size: tuple[int, int, int] = (1, 1, 1),
        shift_mask: torch.Tensor | None = None,
        shift_permutation: torch.Tensor | None = None,
        padding: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            tokens: (B, L, C), the stage's (padded) token grid in window order: L = nW * N, window after window as
                `window_partition` lays them out, N = Wt * Wh * Ww of the effective `window_size`.
            shift_mask: (nW, N, N) additive mask of the shifted windows (shifted blocks only).
            shift_permutation: (2, L) long, with `shift_mask`: row 0 gathers window order into the order of the
                shifted windows, row 1 gathers it back.
            padding: (L, 1) bool, True at the zero padding that makes the grid a multiple of the window, or None.
            output_attentions: also return the attention probabilities.
        Returns:
            (B, L, C) in the same order, and the probabilities (B * nW, heads, N, N) or None.
        """
        batch_size, num_tokens, channels = tokens.shape
        normed = self.layernorm_before(tokens)
        if padding is not None:  # Video Swin pads the normalised grid with zeros: the padding attends as zeros
            normed = normed.masked_fill(padding, 0.0)
        if shift_permutation is not None:  # = roll by -shift, then window partition, in one gather
            normed = normed.index_select(1, shift_permutation[0])
        windows = normed.view(-1, math.prod(window_size), channels)
        windows, attn_weights = self.attention(windows, window_size, shift_mask, output_attentions=output_attentions)
        attention_output = self.dropout(windows).view(batch_size, num_tokens, channels)
        if shift_permutation is not None:
            attention_output = attention_output.index_select(1, shift_permutation[1])
        tokens = add_residual(tokens, attention_output, self.drop_path_rate, self.training)
        mlp_output = self.mlp(self.layernorm_after(tokens))
        return add_residual(tokens, mlp_output, self.drop_path_rate, self.training), attn_weights


class STSwinMAEBlocks(nn.Module):
    """A run of Swin blocks alternating regular and shifted windows, sharing one window rule per grid.

    The tokens stay in window order from the first block to the last: the grid is padded and partitioned into
    windows once, the regular blocks attend without moving a token, a shifted block gathers into the shifted
    windows and back (one cached permutation each way, the roll and the partition in one copy), and the grid is
    restored once at the end. LayerNorm, MLP and residuals act token by token, so the order does not change them;
    the padding is zeroed after each block's norm, as Video Swin pads the normalised grid.
    """

    def __init__(self, config: STSwinMAEConfig, dim: int, depth: int, num_heads: int, drop_path_rates: list[float]):
        super().__init__()
        self.window_size = tuple(config.window_size)
        self.layers = nn.ModuleList(
            [STSwinMAELayer(config, dim, num_heads, drop_path_rates[i], shifted=i % 2 == 1) for i in range(depth)]
        )

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(B, T, H, W, C) -> (B, T, H, W, C), and each block's attention probabilities (empty unless asked)."""
        batch_size, frames, height, width, channels = hidden_states.shape
        grid = (frames, height, width)
        shifted = tuple(w // 2 for w in self.window_size)
        window, shift = effective_window_and_shift(grid, self.window_size, shifted)
        padded_grid = tuple(-(-g // w) * w for g, w in zip(grid, window))
        device = hidden_states.device
        shift_mask = shift_window_mask(padded_grid, window, shift, device) if any(shift) else None
        permutation = shift_permutation(padded_grid, window, shift, device) if any(shift) else None
        padding = padding_in_window_order(grid, padded_grid, window, device) if padded_grid != grid else None

        tokens = window_partition(pad_to_multiple(hidden_states, window), window).view(batch_size, -1, channels)
        attentions = ()
        for layer in self.layers:
            if any(layer.shift_size) and shift_mask is not None:
                tokens, attn_weights = layer(tokens, window, shift_mask=shift_mask, shift_permutation=permutation,
                                             padding=padding, output_attentions=output_attentions)
            else:
                tokens, attn_weights = layer(tokens, window, padding=padding, output_attentions=output_attentions)
            if output_attentions:
                attentions += (attn_weights,)
        hidden_states = window_reverse(tokens.view(-1, math.prod(window), channels), window, padded_grid)
        if padded_grid != grid:
            hidden_states = hidden_states[:, :frames, :height, :width].contiguous()
        return hidden_states, attentions


# ----------------------------------------------------------------------------------------------------------
# Resolution changes
# ----------------------------------------------------------------------------------------------------------


class STSwinMAEPatchMerging(nn.Module):
    """Spatial 2x2 patch merging (time is never downsampled): (B, T, H, W, C) -> (B, T, ceil(H/2), ceil(W/2), 2C)."""

    def __init__(self, config: STSwinMAEConfig, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=config.layer_norm_eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = pad_to_multiple(hidden_states, (1, 2, 2))
        batch_size, frames, height, width, channels = hidden_states.shape
        # Neighbour order (h, w): (0,0), (1,0), (0,1), (1,1), as Swin and Video Swin, i.e. column-major in the 2x2
        # neighbourhood: one permute-copy (the concatenation of four strided slices cost a zero-filled copy per
        # slice in backward).
        hidden_states = hidden_states.view(batch_size, frames, height // 2, 2, width // 2, 2, channels)
        hidden_states = hidden_states.permute(0, 1, 2, 4, 5, 3, 6).reshape(batch_size, frames, height // 2, width // 2, 4 * channels)
        return self.reduction(self.norm(hidden_states))


class STSwinMAEPatchExpanding(nn.Module):
    """Spatial expansion by `scale` (Swin-Unet): Linear(C -> scale^2 * C_out), rearranged to a `scale` x `scale`
    neighbourhood, LayerNorm(C_out). (B, T, H, W, C) -> (B, T, scale * H, scale * W, C_out)."""

    def __init__(self, config: STSwinMAEConfig, dim: int, out_dim: int, scale: int):
        super().__init__()
        self.scale = scale
        self.out_dim = out_dim
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch_size, frames, height, width, _ = hidden_states.shape
        s = self.scale
        hidden_states = self.expand(hidden_states).view(batch_size, frames, height, width, s, s, self.out_dim)
        hidden_states = hidden_states.permute(0, 1, 2, 4, 3, 5, 6).reshape(batch_size, frames, height * s, width * s, self.out_dim)
        return self.norm(hidden_states)


# ----------------------------------------------------------------------------------------------------------
# Encoder and decoder
# ----------------------------------------------------------------------------------------------------------


class STSwinMAEStage(nn.Module):
    """Encoder stage: optional 2x2 patch merging, then Swin blocks. (B, T, H, W, C_in) -> (B, T, H_s, W_s, C_s)."""

    def __init__(self, config: STSwinMAEConfig, stage_index: int, drop_path_rates: list[float]):
        super().__init__()
        dim = config.embed_dim * 2**stage_index
        self.downsample = STSwinMAEPatchMerging(config, dim // 2) if stage_index > 0 else None
        self.blocks = STSwinMAEBlocks(config, dim, config.depths[stage_index], config.num_heads[stage_index], drop_path_rates)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        if self.downsample is not None:
            hidden_states = self.downsample(hidden_states)
        return self.blocks(hidden_states, output_attentions=output_attentions)


class STSwinMAEEncoder(nn.Module):
    def __init__(self, config: STSwinMAEConfig):
        super().__init__()
        rates = linear_rates(config.drop_path_rate, sum(config.depths))
        bounds = [sum(config.depths[:i]) for i in range(len(config.depths) + 1)]
        self.stages = nn.ModuleList(
            [STSwinMAEStage(config, i, rates[bounds[i] : bounds[i + 1]]) for i in range(len(config.depths))]
        )
        self.gradient_checkpointing = False

    def forward(self, embeddings: torch.Tensor, output_attentions: bool = False) -> "STSwinMAEEncoderOutput":
        """(B, T', H', W', embed_dim) -> the embeddings and every stage's output (finest first), as tokens and as
        grids; each stage computes on from the previous token tensor (see `as_tokens_and_grid`)."""
        token_states, grids, attentions = [], [], ()
        hidden_states = embeddings
        for stage in [None, *self.stages]:
            if stage is not None:
                hidden_states, stage_attentions = stage(hidden_states, output_attentions=output_attentions)
                attentions += stage_attentions
            tokens, hidden_states = as_tokens_and_grid(hidden_states)
            token_states.append(tokens)
            grids.append(hidden_states)
        return STSwinMAEEncoderOutput(token_states=token_states, grids=grids, attentions=attentions)


@dataclass
class STSwinMAEEncoderOutput:
    """What the encoder hands to the heads (internal).

    token_states: embeddings then each stage's output, (B, N_s, C_s).
    grids: the same tensors as (B, T', H_s, W_s, C_s) views; `grids[1:]` are the stage outputs the decoder uses.
    attentions: every block's attention probabilities when asked, else ().
    """

    token_states: list[torch.Tensor]
    grids: list[torch.Tensor]
    attentions: tuple[torch.Tensor, ...]

    @property
    def stage_outputs(self) -> list[torch.Tensor]:
        return self.grids[1:]


class STSwinMAEDecoderStage(nn.Module):
    """Decoder stage: 2x patch expanding, optional skip fusion (ST-SwinUNet), then Swin blocks."""

    def __init__(self, config: STSwinMAEConfig, stage_index: int, drop_path_rates: list[float], use_skip_connection: bool):
        super().__init__()
        num_stages = len(config.depths)
        dim = config.embed_dim * 2 ** (num_stages - 2 - stage_index)
        self.upsample = STSwinMAEPatchExpanding(config, 2 * dim, dim, scale=2)
        # Swin-Unet: concat(decoder, encoder features of the same scale) -> Linear(2C -> C).
        self.skip_fusion = nn.Linear(2 * dim, dim) if use_skip_connection else None
        self.blocks = STSwinMAEBlocks(
            config, dim, config.decoder_depths[stage_index], config.decoder_num_heads[stage_index], drop_path_rates
        )

    def forward(self, hidden_states: torch.Tensor, target_grid: tuple[int, int, int], skip: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, H, W, 2C) -> (B, *target_grid, C); `skip` is the encoder output at `target_grid`."""
        hidden_states = self.upsample(hidden_states)
        # Odd encoder sizes were padded before merging: crop back to the encoder's grid at this scale.
        hidden_states = hidden_states[:, : target_grid[0], : target_grid[1], : target_grid[2]]
        if self.skip_fusion is not None:
            hidden_states = self.skip_fusion(torch.cat([hidden_states, skip], dim=-1))
        return self.blocks(hidden_states)[0]


class STSwinMAEDecoder(nn.Module):
    """Hierarchical decoder mirroring the encoder (SwinMAE / Swin-Unet): from the last stage back to the first
    stage's scale, ending in a layer norm. With `use_skip_connections` (ST-SwinUNet) each stage also fuses the
    encoder output of its scale."""

    def __init__(self, config: STSwinMAEConfig, use_skip_connections: bool = False):
        super().__init__()
        rates = linear_rates(config.drop_path_rate, sum(config.decoder_depths))
        bounds = [sum(config.decoder_depths[:i]) for i in range(len(config.decoder_depths) + 1)]
        self.stages = nn.ModuleList(
            [
                STSwinMAEDecoderStage(config, i, rates[bounds[i] : bounds[i + 1]], use_skip_connections)
                for i in range(len(config.decoder_depths))
            ]
        )
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.use_skip_connections = use_skip_connections

    def forward(self, encoder_stage_outputs: list[torch.Tensor], bottleneck: torch.Tensor) -> torch.Tensor:
        """
        Args:
            encoder_stage_outputs: every encoder stage's output, finest first (for grids and skips).
            bottleneck: (B, T', H_last, W_last, C_last), the normalised last encoder stage.
        Returns:
            (B, T', H', W', embed_dim) at the first stage's (token) resolution.
        """
        hidden_states = bottleneck
        for i, stage in enumerate(self.stages):
            encoder_features = encoder_stage_outputs[-2 - i]
            skip = encoder_features if self.use_skip_connections else None
            hidden_states = stage(hidden_states, tuple(encoder_features.shape[1:4]), skip)
        return self.norm(hidden_states)


# ----------------------------------------------------------------------------------------------------------
# Pretrained base class
# ----------------------------------------------------------------------------------------------------------


class STSwinMAEPreTrainedModel(PreTrainedModel):
    config_class = STSwinMAEConfig
    config: STSwinMAEConfig
    base_model_prefix = "st_swin_mae"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["STSwinMAELayer", "STSwinMAEPatchMerging", "STSwinMAEPatchExpanding"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False
    # The pretraining head and mask token are not part of ST-SwinUNet; dropping them on load is expected.
    _keys_to_ignore_on_load_unexpected = [r"pixel_head\.", r"mask_token"]

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, STSwinMAESelfAttention):
            init.trunc_normal_(module.relative_position_bias_table, std=std)
        elif isinstance(module, STSwinMAEEmbeddings) and module.mask_token is not None:
            init.trunc_normal_(module.mask_token, std=std)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # One folder serves every Auto class: AutoModel, the task class it was saved from, and the config.
        if getattr(self, "_auto_class", None) is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault("AutoConfig", "configuration_st_swin_mae.STSwinMAEConfig")
            auto_map.setdefault("AutoModel", "modeling_st_swin_mae.STSwinMAEModel")
            self.config.auto_map = auto_map
        result = super().save_pretrained(save_directory, *args, **kwargs)
        follow_umask(Path(save_directory).glob("*.safetensors"))
        return result

    def _checks_data(self) -> bool:
        """Whether checks that read tensor values (a host sync; a graph break or a failed export) run now: in eager
        use when `config.check_finite_inputs`, never while compile/export/jit tracing builds a graph."""
        return self.config.check_finite_inputs and not is_tracing()

    def _validate_inputs(
        self, pixel_values: torch.Tensor, valid_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raises a ValueError naming what was expected and what came. Returns `pixel_values` in the model's dtype
        (float64 input is cast: a NumPy default should not be an error) and `valid_mask` as bool or None.
        Shape and dtype checks are static; the NaN/Inf check reads the data (see `_checks_data`)."""
        if not isinstance(pixel_values, torch.Tensor):
            raise ValueError(f"`pixel_values` must be a torch.Tensor, got {type(pixel_values).__name__}")
        if pixel_values.ndim != 5:
            raise ValueError(
                "`pixel_values` must be 5-D (batch, channels, frames, height, width), "
                f"got shape {tuple(pixel_values.shape)}"
            )
        if pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"`pixel_values` must have {self.config.num_channels} channels ({', '.join(self.config.band_names)}) "
                f"in dimension 1, got {pixel_values.shape[1]} (shape {tuple(pixel_values.shape)})"
            )
        if not torch.is_floating_point(pixel_values):
            raise ValueError(
                f"`pixel_values` must be a floating point tensor (normalised reflectances), got {pixel_values.dtype}; "
                "run the image processor first"
            )
        if min(pixel_values.shape[2:]) < 1 or pixel_values.shape[0] < 1:
            raise ValueError(f"`pixel_values` has an empty dimension: shape {tuple(pixel_values.shape)}")
        if self._checks_data() and not torch.isfinite(pixel_values).all():
            raise ValueError(
                "`pixel_values` contains NaN or Inf; mark nodata pixels in `valid_mask` and fill them "
                "(the image processor does this)"
            )
        base_model = getattr(self, self.base_model_prefix, self)
        model_dtype = base_model.embeddings.patch_embeddings.projection.weight.dtype
        if pixel_values.dtype != model_dtype:
            pixel_values = pixel_values.to(model_dtype)
        if valid_mask is None:
            return pixel_values, None
        expected = (pixel_values.shape[0], *pixel_values.shape[2:])
        if not isinstance(valid_mask, torch.Tensor) or tuple(valid_mask.shape) != expected:
            found = tuple(valid_mask.shape) if isinstance(valid_mask, torch.Tensor) else type(valid_mask).__name__
            raise ValueError(f"`valid_mask` must have shape (batch, frames, height, width) = {expected}, got {found}")
        return pixel_values, valid_mask.bool()


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------


class STSwinMAEModel(STSwinMAEPreTrainedModel):
    """The ST-SwinMAE encoder: patch embedding, hierarchical 3D Swin stages, final layer norm, mean pooling."""

    # Loaded from a pretraining or segmentation checkpoint, the heads and decoder are expected leftovers.
    _keys_to_ignore_on_load_unexpected = [
        r"pixel_head\.", r"mask_token", r"^decoder\.", r"^final_expand\.", r"^temporal_aggregation\.", r"^segmentation_head\."
    ]

    def __init__(self, config: STSwinMAEConfig, use_mask_token: bool = False):
        super().__init__(config)
        self.embeddings = STSwinMAEEmbeddings(config, use_mask_token=use_mask_token)
        self.encoder = STSwinMAEEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    def encode(
        self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None, output_attentions: bool = False
    ) -> STSwinMAEEncoderOutput:
        """Shared by every head: the embeddings and each stage's output (finest first), as tokens and grids."""
        embeddings = self.embeddings(pixel_values, bool_masked_pos)
        return self.encoder(embeddings, output_attentions=output_attentions)

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        valid_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
    ) -> STSwinMAEModelOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, frames, height, width)`):
            Normalised input; channels in `config.band_names` order. Any frames >= 1 and any height/width.
        bool_masked_pos (`torch.BoolTensor`, *optional*):
            Tokens to replace by the mask token (only for models built with `use_mask_token=True`), as a
            `(batch_size, frames', height', width')` token grid or in the flat VideoMAE/ViTMAE form
            `(batch_size, num_patches)`, num_patches = frames' * height' * width' tokens in that order
            (frames' = ceil(frames / patch_t), height' = ceil(height / patch_h), width' = ceil(width / patch_w)).
        valid_mask (`torch.BoolTensor` of shape `(batch_size, frames, height, width)`, *optional*):
            Accepted (and shape-checked) so the processor's output can be passed as it is; the encoder does not
            use it: nodata pixels are already filled by the processor, and only losses exclude them.
        output_attentions (`bool`, *optional*):
            Return every encoder block's attention probabilities (see [`STSwinMAEModelOutput`]).
        """
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        pixel_values, _ = self._validate_inputs(pixel_values, valid_mask)
        if bool_masked_pos is not None:
            token_grid = tuple(-(-size // p) for size, p in zip(pixel_values.shape[2:], self.config.patch_size))
            bool_masked_pos = token_mask_grid(bool_masked_pos, pixel_values.shape[0], token_grid)
        encoder_outputs = self.encode(pixel_values, bool_masked_pos, output_attentions=output_attentions)
        last_hidden_state = self.layernorm(encoder_outputs.token_states[-1])
        output = STSwinMAEModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=last_hidden_state.mean(dim=1),
            **hidden_state_outputs(encoder_outputs, output_hidden_states, output_attentions),
        )
        return output if return_dict else output.to_tuple()


class STSwinMAEForPreTraining(STSwinMAEPreTrainedModel):
    """ST-SwinMAE: window masking in mask units, the hierarchical decoder and a linear pixel head predicting each
    token's (t, h, w, C) pixels; MSE over the valid pixels of masked tokens."""

    def __init__(self, config: STSwinMAEConfig):
        super().__init__(config)
        self.st_swin_mae = STSwinMAEModel(config, use_mask_token=True)
        self.decoder = STSwinMAEDecoder(config)
        self.pixel_head = nn.Linear(config.embed_dim, math.prod(config.patch_size) * config.num_channels)
        self.post_init()

    # ---- masking ----------------------------------------------------------------------------------------
    def num_mask_units(self, token_grid: tuple[int, int, int]) -> tuple[int, int, int]:
        return tuple(-(-g // u) for g, u in zip(token_grid, self.config.mask_unit_size))

    def random_masking(
        self, batch_size: int, token_grid: tuple[int, int, int], noise: torch.Tensor | None, mask_seed: int | None, device
    ) -> torch.Tensor:
        """A (B, T', H', W') bool token mask hiding `mask_ratio` of the mask units: those with the largest noise.

        `noise` fixes the choice (see `unit_noise` for its shapes); so does `mask_seed`; otherwise the global RNG
        is used.
        """
        units = self.num_mask_units(token_grid)
        num_units = math.prod(units)
        if noise is None:
            generator = torch.Generator().manual_seed(int(mask_seed)) if mask_seed is not None else None
            noise = torch.rand(batch_size, num_units, generator=generator) if generator is not None else torch.rand(
                batch_size, num_units, device=device
            )
        noise = self.unit_noise(noise, batch_size, token_grid).to(device)
        # Rounded before truncating: int(10 * (1 - 0.9)) would be int(0.999...) = 0, hiding every unit.
        num_keep = int(round(num_units * (1 - self.config.mask_ratio), 6))
        ranks = torch.argsort(torch.argsort(noise, dim=1), dim=1)  # rank of each unit's noise
        unit_mask = (ranks >= num_keep).view(batch_size, *units)  # the smallest noise stays visible (MAE)
        for axis, repeat in enumerate(self.config.mask_unit_size):
            unit_mask = unit_mask.repeat_interleave(repeat, dim=axis + 1)
        return unit_mask[:, : token_grid[0], : token_grid[1], : token_grid[2]]

    def unit_noise(self, noise: torch.Tensor, batch_size: int, token_grid: tuple[int, int, int]) -> torch.Tensor:
        """`noise` as (B, num_mask_units). Accepted: one value per mask unit, (B, num_mask_units) or
        (B, U_t, U_h, U_w); or one value per token as VideoMAE/ViTMAE code passes it, (B, num_patches) with
        num_patches = T' * H' * W' or (B, T', H', W'), where each unit takes the value of its first token (with
        `mask_unit_size` (1, 1, 1) units and tokens coincide)."""
        units = self.num_mask_units(token_grid)
        shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) else None
        if shape in ((batch_size, math.prod(units)), (batch_size, *units)):
            return noise.reshape(batch_size, -1)
        if shape in ((batch_size, math.prod(token_grid)), (batch_size, *token_grid)):
            ut, uh, uw = self.config.mask_unit_size
            return noise.reshape(batch_size, *token_grid)[:, ::ut, ::uh, ::uw].reshape(batch_size, -1)
        raise ValueError(
            f"`noise` must have shape (batch_size, num_mask_units) = {(batch_size, math.prod(units))} (or the unit grid "
            f"{(batch_size, *units)}) for mask units of {tuple(self.config.mask_unit_size)} tokens over a {token_grid} "
            f"token grid, or one value per token (batch_size, num_patches) = {(batch_size, math.prod(token_grid))}; "
            f"got {shape if shape is not None else type(noise).__name__}"
        )

    # ---- patches ----------------------------------------------------------------------------------------
    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W), all multiples of the patch -> (B, T', H', W', pt * ph * pw * C)."""
        batch_size, channels, frames, height, width = pixel_values.shape
        pt, ph, pw = self.config.patch_size
        if frames % pt or height % ph or width % pw:
            raise ValueError(f"patchify needs sizes divisible by the patch {tuple(self.config.patch_size)}, got {(frames, height, width)}")
        x = pixel_values.reshape(batch_size, channels, frames // pt, pt, height // ph, ph, width // pw, pw)
        x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)
        return x.reshape(batch_size, frames // pt, height // ph, width // pw, pt * ph * pw * channels)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, T', H', W', pt * ph * pw * C) -> (B, C, T' * pt, H' * ph, W' * pw)."""
        batch_size, tokens_t, tokens_h, tokens_w, _ = patches.shape
        pt, ph, pw = self.config.patch_size
        channels = self.config.num_channels
        x = patches.reshape(batch_size, tokens_t, tokens_h, tokens_w, pt, ph, pw, channels)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(batch_size, channels, tokens_t * pt, tokens_h * ph, tokens_w * pw)

    def forward(
        self,
        pixel_values: torch.Tensor,
        valid_mask: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_seed: int | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        return_loss: bool = True,
        bool_masked_pos: torch.Tensor | None = None,
        output_attentions: bool | None = None,
    ) -> STSwinMAEForPreTrainingOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, frames, height, width)`):
            Normalised input; any frames >= 1 and any height/width.
        valid_mask (`torch.BoolTensor` of shape `(batch_size, frames, height, width)`, *optional*):
            False where a pixel is nodata: it is excluded from the loss.
        noise (`torch.FloatTensor`, *optional*):
            Fixes which mask units are hidden (those with the largest noise values): one value per mask unit,
            `(batch_size, num_mask_units)` or `(batch_size, U_t, U_h, U_w)` with U = ceil(token grid / mask_unit_size);
            or one value per token, `(batch_size, num_patches)` (VideoMAE/ViTMAE) or `(batch_size, frames', height',
            width')`, each unit taking its first token's value.
        mask_seed (`int`, *optional*):
            Seed for the mask when `noise` is not given (reproducible masks).
        return_loss (`bool`, defaults to `True`):
            Compute the loss (there are no labels: the target is the input).
        bool_masked_pos (`torch.BoolTensor`, *optional*):
            The token mask itself, True = hidden, instead of a random one (`noise` and `mask_seed` must then be
            None): `(batch_size, frames', height', width')` or the flat VideoMAE form `(batch_size, num_patches)`,
            num_patches = frames' * height' * width' tokens in that order (frames' = ceil(frames / patch_t), ...).
        output_attentions (`bool`, *optional*):
            Return every encoder block's attention probabilities (see [`STSwinMAEForPreTrainingOutput`]).
        """
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        pixel_values, valid_mask = self._validate_inputs(pixel_values, valid_mask)
        batch_size, _, frames, height, width = pixel_values.shape
        patch = tuple(self.config.patch_size)
        token_grid = tuple(-(-size // p) for size, p in zip((frames, height, width), patch))

        if bool_masked_pos is not None:
            if noise is not None or mask_seed is not None:
                raise ValueError("give either `bool_masked_pos` or `noise`/`mask_seed`, not both")
            bool_masked_pos = token_mask_grid(bool_masked_pos, batch_size, token_grid).to(pixel_values.device)
        else:
            bool_masked_pos = self.random_masking(batch_size, token_grid, noise, mask_seed, pixel_values.device)
        encoder_outputs = self.st_swin_mae.encode(pixel_values, bool_masked_pos, output_attentions=output_attentions)
        stage_outputs = encoder_outputs.stage_outputs
        bottleneck = self.st_swin_mae.layernorm(stage_outputs[-1])
        decoded = self.decoder(stage_outputs, bottleneck)
        prediction = self.pixel_head(decoded)  # (B, T', H', W', pt*ph*pw*C)

        padded = pad_pixel_values(pixel_values, patch)
        target = self.patchify(padded)
        # Padding (repeated frames, zero borders) is never a target.
        pixel_weight = torch.zeros(padded.shape[:1] + padded.shape[2:], device=pixel_values.device)
        pixel_weight[:, :frames, :height, :width] = 1.0 if valid_mask is None else valid_mask.to(pixel_weight.dtype)
        weight = self.patchify(pixel_weight.unsqueeze(1).expand(-1, self.config.num_channels, -1, -1, -1))

        loss = None
        mean = std = None
        if self.config.norm_pix_loss:
            count = weight.sum(-1, keepdim=True).clamp(min=1.0)
            mean = (target * weight).sum(-1, keepdim=True) / count
            var = (((target - mean) ** 2) * weight).sum(-1, keepdim=True) / count
            std = (var + 1e-6).sqrt()
            target = (target - mean) / std
        if return_loss:
            loss_weight = weight * bool_masked_pos.unsqueeze(-1).to(weight.dtype)
            squared_error = (prediction.float() - target.float()) ** 2
            loss = (squared_error * loss_weight).sum() / loss_weight.sum().clamp(min=1.0)

        if self.config.norm_pix_loss:
            prediction = prediction * std + mean
        reconstruction = self.unpatchify(prediction)[:, :, :frames, :height, :width]
        mask = self.unpatchify(
            bool_masked_pos.unsqueeze(-1).to(pixel_values.dtype).expand(-1, -1, -1, -1, weight.shape[-1])
        )[:, 0, :frames, :height, :width]

        output = STSwinMAEForPreTrainingOutput(
            loss=loss,
            reconstruction=reconstruction,
            mask=mask,
            **hidden_state_outputs(encoder_outputs, output_hidden_states, output_attentions),
        )
        return output if return_dict else output.to_tuple()


class STSwinUNetForSemanticSegmentation(STSwinMAEPreTrainedModel):
    """ST-SwinUNet: the pretrained encoder AND decoder with skip connections between stages of the same scale, a
    final x4 patch expanding to pixel resolution, temporal aggregation to one 2D map and a 1x1 head.

    `problem_type="regression"` (with `num_labels=1`) gives per-pixel regression (e.g. building density).
    """

    def __init__(self, config: STSwinMAEConfig):
        super().__init__(config)
        self.st_swin_mae = STSwinMAEModel(config)
        self.decoder = STSwinMAEDecoder(config, use_skip_connections=True)
        spatial_scale = config.patch_size[1]
        if config.patch_size[1] != config.patch_size[2]:
            raise ValueError(f"ST-SwinUNet needs a square spatial patch, got {tuple(config.patch_size)}")
        self.final_expand = STSwinMAEPatchExpanding(config, config.embed_dim, config.embed_dim, scale=spatial_scale)
        self.temporal_aggregation = (
            nn.Linear(config.num_temporal_tokens * config.embed_dim, config.embed_dim)
            if config.temporal_aggregation == "concat"
            else None
        )
        self.segmentation_head = nn.Linear(config.embed_dim, config.num_labels)
        self.post_init()

    def aggregate_time(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T', H, W, C) -> (B, H, W, C)."""
        if self.temporal_aggregation is None:
            return hidden_states.mean(dim=1)
        batch_size, tokens_t, height, width, channels = hidden_states.shape
        hidden_states = hidden_states.permute(0, 2, 3, 1, 4).reshape(batch_size, height, width, tokens_t * channels)
        return self.temporal_aggregation(hidden_states)

    def forward(
        self,
        pixel_values: torch.Tensor,
        valid_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
    ) -> STSwinUNetSemanticSegmenterOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, frames, height, width)`):
            Normalised input; any frames >= 1 and any height/width.
        valid_mask (`torch.BoolTensor` of shape `(batch_size, frames, height, width)`, *optional*):
            False where a pixel is nodata. Pixels invalid in every frame are left out of the loss.
        labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
            Class indices in `[0, num_labels)` or `config.semantic_loss_ignore_index`; for regression, float
            targets (NaN or the ignore index are left out).
        output_attentions (`bool`, *optional*):
            Return every encoder block's attention probabilities (see [`STSwinUNetSemanticSegmenterOutput`]).

        Returns `logits` of shape `(batch_size, num_labels, height, width)`. With `temporal_aggregation="concat"`
        the input must hold exactly `config.num_frames` frames (a ValueError otherwise).
        """
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        pixel_values, valid_mask = self._validate_inputs(pixel_values, valid_mask)
        _, _, frames, height, width = pixel_values.shape
        if self.temporal_aggregation is not None and frames != self.config.num_frames:
            raise ValueError(
                f"this model (temporal_aggregation='concat') was built for num_frames={self.config.num_frames} dates, "
                f"the input has {frames}; give it {self.config.num_frames} dates or use a temporal_aggregation='mean' model"
            )

        encoder_outputs = self.st_swin_mae.encode(pixel_values, output_attentions=output_attentions)
        stage_outputs = encoder_outputs.stage_outputs
        bottleneck = self.st_swin_mae.layernorm(stage_outputs[-1])
        decoded = self.decoder(stage_outputs, bottleneck)
        features = self.aggregate_time(self.final_expand(decoded))[:, :height, :width]
        logits = self.segmentation_head(features).permute(0, 3, 1, 2).contiguous()

        loss = self.compute_loss(logits, labels, valid_mask) if labels is not None else None
        output = STSwinUNetSemanticSegmenterOutput(
            loss=loss, logits=logits, **hidden_state_outputs(encoder_outputs, output_hidden_states, output_attentions)
        )
        return output if return_dict else output.to_tuple()

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor, valid_mask: torch.Tensor | None) -> torch.Tensor:
        """Cross-entropy (classification) or MSE (regression) over labelled pixels that hold data."""
        batch_size, num_labels, height, width = logits.shape
        ignore_index = self.config.semantic_loss_ignore_index
        if labels.ndim == 4 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if tuple(labels.shape) != (batch_size, height, width):
            raise ValueError(f"`labels` must have shape (batch, height, width) = {(batch_size, height, width)}, got {tuple(labels.shape)}")
        has_data = valid_mask.any(dim=1) if valid_mask is not None else None

        if self.config.problem_type == "regression":
            if num_labels != 1:
                raise ValueError(f"regression expects num_labels=1, got {num_labels}")
            labels = labels.to(logits.dtype)
            keep = torch.isfinite(labels) & (labels != ignore_index)
            if has_data is not None:
                keep &= has_data
            error = (logits[:, 0] - torch.where(keep, labels, torch.zeros_like(labels))) ** 2
            return (error * keep).sum() / keep.sum().clamp(min=1)

        if torch.is_floating_point(labels):
            raise ValueError(f"classification `labels` must be integers, got {labels.dtype} (set problem_type='regression' for regression)")
        labels = labels.long()
        if self._checks_data():
            out_of_range = (labels != ignore_index) & ((labels < 0) | (labels >= num_labels))
            if out_of_range.any():
                found = torch.unique(labels[out_of_range]).tolist()[:10]
                raise ValueError(f"`labels` must be in [0, {num_labels}) or {ignore_index} (ignored), found {found}")
        if has_data is not None:
            labels = labels.masked_fill(~has_data, ignore_index)
        # The mean over labelled pixels, written without a host sync; nothing labelled gives 0 (not NaN) and keeps
        # the graph.
        total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
        return total / (labels != ignore_index).sum().clamp(min=1)


STSwinMAEConfig.register_for_auto_class()
STSwinMAEModel.register_for_auto_class("AutoModel")
STSwinMAEForPreTraining.register_for_auto_class("AutoModelForPreTraining")
STSwinUNetForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")

__all__ = [
    "STSwinMAEPreTrainedModel",
    "STSwinMAEModel",
    "STSwinMAEForPreTraining",
    "STSwinUNetForSemanticSegmentation",
    "STSwinMAEModelOutput",
    "STSwinMAEForPreTrainingOutput",
    "STSwinUNetSemanticSegmenterOutput",
]
