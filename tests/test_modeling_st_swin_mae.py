"""Tests of ST-SwinMAE / ST-SwinUNet: transformers' common model checks that apply, plus independent oracles
(a naive full-grid attention with an explicit who-sees-whom mask, and transformers' own SwinModel)."""

import copy
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModel, AutoModelForPreTraining, AutoModelForSemanticSegmentation, SwinConfig, SwinModel

from degas_hf import STSwinMAEConfig, STSwinMAEForPreTraining, STSwinMAEModel, STSwinUNetForSemanticSegmentation
from degas_hf.models.st_swin_mae.modeling_st_swin_mae import STSwinMAEBlocks, effective_window_and_shift

ALL_MODEL_CLASSES = (STSwinMAEModel, STSwinMAEForPreTraining, STSwinUNetForSemanticSegmentation)


def tiny_config(**overrides):
    """Small enough for milliseconds, but with shifts, clamping, odd sizes and all four stages exercised."""
    values = dict(
        band_names=("B02", "B03", "B04"),
        num_frames=4,
        image_size=32,
        patch_size=(2, 4, 4),
        window_size=(2, 4, 4),
        embed_dim=16,
        depths=(2, 2, 2, 1),
        num_heads=(2, 2, 4, 4),
        decoder_depths=(1, 1, 2),
        decoder_num_heads=(4, 2, 2),
        drop_path_rate=0.0,
        num_labels=3,
    )
    values.update(overrides)
    return STSwinMAEConfig(**values)


def inputs_for(model_class, config, batch_size=2, frames=4, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, config.num_channels, frames, size, size, generator=generator)
    inputs = {"pixel_values": pixel_values}
    if model_class is STSwinMAEForPreTraining:
        inputs["mask_seed"] = 0
    if model_class is STSwinUNetForSemanticSegmentation:
        inputs["labels"] = torch.randint(0, config.num_labels, (batch_size, size, size), generator=generator)
    return inputs


def float_outputs(output):
    return {k: v for k, v in output.items() if isinstance(v, torch.Tensor) and torch.is_floating_point(v)}


# ------------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------------


def test_default_config_is_degas_100m_and_parameter_count():
    config = STSwinMAEConfig()
    assert config.to_dict() == STSwinMAEConfig.from_preset("degas-100m").to_dict()
    with torch.device("meta"):
        model = STSwinMAEForPreTraining(config)
    count = sum(p.numel() for p in model.parameters())
    print(f"degas-100m STSwinMAEForPreTraining parameters: {count / 1e6:.2f}M")
    assert 95e6 <= count <= 105e6


def test_config_round_trip_and_errors(tmp_path):
    config = STSwinMAEConfig.from_preset("degas-tiny", num_labels=5)
    config.save_pretrained(tmp_path)
    loaded = STSwinMAEConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.num_channels == 6 and loaded.num_labels == 5
    with pytest.raises(ValueError, match="Unknown preset"):
        STSwinMAEConfig.from_preset("degas-1b")
    with pytest.raises(ValueError, match="decoder_depths"):
        STSwinMAEConfig(decoder_depths=(2, 2))
    with pytest.raises(ValueError, match="patch_size"):
        STSwinMAEConfig(patch_size=(2, 4))


# ------------------------------------------------------------------------------------------------------
# Common model checks that the attention internals must keep (the rest of transformers' ModelTesterMixin checks,
# with these again, are in test_modeling_common_st_swin_mae.py)
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [STSwinMAEForPreTraining, STSwinUNetForSemanticSegmentation])
def test_gradient_checkpointing_gives_same_loss_and_gradients(model_class):
    config = tiny_config()
    torch.manual_seed(0)
    model = model_class(config).train()
    reference = copy.deepcopy(model)
    inputs = inputs_for(model_class, config)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert all(m.gradient_checkpointing for m in model.modules() if hasattr(m, "gradient_checkpointing"))
    loss = model(**inputs).loss
    loss.backward()
    ref_loss = reference(**inputs).loss
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=0)
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
    model.activation_checkpointing_disable()
    assert not any(m.gradient_checkpointing for m in model.modules() if hasattr(m, "gradient_checkpointing"))


@pytest.mark.parametrize("model_class", ALL_MODEL_CLASSES)
def test_eager_matches_sdpa(model_class):
    config = tiny_config()
    sdpa = model_class(config).eval()
    assert sdpa.config._attn_implementation == "sdpa"
    eager = model_class(copy.deepcopy(config)).eval()
    eager.load_state_dict(sdpa.state_dict())
    eager.set_attn_implementation("eager")
    assert eager.config._attn_implementation == "eager"
    inputs = inputs_for(model_class, config)
    with torch.no_grad():
        a, b = float_outputs(sdpa(**inputs)), float_outputs(eager(**inputs))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------
# Oracle 1: naive 3D (shifted) window attention over the full token grid
# ------------------------------------------------------------------------------------------------------


def naive_swin_layer(layer, x, window, shift):
    """Reference for one Swin block: full attention over the grid (T, H, W) where token i may attend j only when
    both fall in the same window after the cyclic shift and came from the same side of the wrap."""
    _, frames, height, width, channels = x.shape
    grid = torch.stack(torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij"), -1).view(-1, 3)
    lengths = torch.tensor([frames, height, width])
    window_t, shift_t = torch.tensor(window), torch.tensor(shift)
    rolled = (grid - shift_t) % lengths  # where each token sits after torch.roll(-shift)
    window_id = rolled // window_t
    region = (rolled >= lengths - window_t).long() + ((rolled >= lengths - shift_t) & (shift_t > 0)).long()
    allowed = (window_id[:, None] == window_id[None]).all(-1) & (region[:, None] == region[None]).all(-1)

    attention = layer.attention
    table_window = torch.tensor(attention.table_window)
    span = 2 * table_window - 1
    # Pairs farther apart than a window are masked anyway; clamp them into the table to index it.
    offset = torch.minimum((grid[:, None] - grid[None] + (table_window - 1)).clamp(min=0), span - 1)
    index = offset[..., 0] * span[1] * span[2] + offset[..., 1] * span[2] + offset[..., 2]
    bias = attention.relative_position_bias_table[index].permute(2, 0, 1)  # (heads, L, L)

    tokens = x.reshape(x.shape[0], -1, channels)
    h = layer.layernorm_before(tokens)
    heads, d = attention.num_heads, attention.head_dim
    q = attention.q_proj(h).view(x.shape[0], -1, heads, d).transpose(1, 2)
    k = attention.k_proj(h).view(x.shape[0], -1, heads, d).transpose(1, 2)
    v = attention.v_proj(h).view(x.shape[0], -1, heads, d).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) * d**-0.5 + bias
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(x.shape[0], -1, channels)
    tokens = tokens + attention.o_proj(out)
    tokens = tokens + layer.mlp(layer.layernorm_after(tokens))
    return tokens.view_as(x)


@pytest.mark.parametrize("grid", [(4, 8, 8), (2, 8, 12), (1, 4, 8)])
def test_window_attention_matches_naive_full_attention(grid):
    config = tiny_config(window_size=(2, 4, 4))
    blocks = STSwinMAEBlocks(config, dim=16, depth=2, num_heads=2, drop_path_rates=[0.0, 0.0]).eval()
    for p in blocks.parameters():  # non-trivial bias tables
        torch.nn.init.normal_(p, std=0.5) if p.ndim == 2 and p.shape[1] == 2 else None
    x = torch.randn(2, *grid, 16)
    window, shift = effective_window_and_shift(grid, config.window_size, (1, 2, 2))
    assert any(shift), "the test must exercise shifted windows"
    with torch.no_grad():
        expected = naive_swin_layer(blocks.layers[1], naive_swin_layer(blocks.layers[0], x, window, (0, 0, 0)), window, shift)
        actual, _ = blocks(x)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_training_works_after_inference_mode_built_the_caches():
    config = tiny_config(window_size=(2, 3, 5))  # a window no other test uses: its masks are built here first
    model = STSwinUNetForSemanticSegmentation(config)
    x = torch.randn(1, 3, 4, 48, 40)
    with torch.inference_mode():
        model.eval()(x)
    loss = model.train()(x, labels=torch.zeros(1, 48, 40, dtype=torch.long)).loss
    loss.backward()
    assert torch.isfinite(loss)


def test_window_rule_clamps_and_disables_shift():
    assert effective_window_and_shift((1, 8, 4), (2, 4, 4), (1, 2, 2)) == ((1, 4, 4), (0, 2, 0))
    assert effective_window_and_shift((2, 14, 14), (2, 7, 7), (1, 3, 3)) == ((2, 7, 7), (0, 3, 3))


# ------------------------------------------------------------------------------------------------------
# Oracle 2: transformers' SwinModel for T = 1, temporal patch 1, temporal window 1
# ------------------------------------------------------------------------------------------------------


def test_encoder_reproduces_transformers_swin_for_single_frame():
    ours_config = tiny_config(patch_size=(1, 4, 4), window_size=(1, 4, 4), depths=(2, 2), num_heads=(2, 4),
                              decoder_depths=(1,), decoder_num_heads=(2,), num_frames=1)
    ours = STSwinMAEModel(ours_config).eval()
    swin = SwinModel(SwinConfig(image_size=32, patch_size=4, num_channels=3, embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                window_size=4, drop_path_rate=0.0, qkv_bias=True)).eval()
    mapped = {
        "embeddings.patch_embeddings.projection.weight": ours.embeddings.patch_embeddings.projection.weight[:, :, 0],
        "embeddings.patch_embeddings.projection.bias": ours.embeddings.patch_embeddings.projection.bias,
        "embeddings.norm.weight": ours.embeddings.norm.weight,
        "embeddings.norm.bias": ours.embeddings.norm.bias,
        "layernorm.weight": ours.layernorm.weight,
        "layernorm.bias": ours.layernorm.bias,
    }
    for s, stage in enumerate(ours.encoder.stages):
        for b, layer in enumerate(stage.blocks.layers):
            prefix = f"encoder.layers.{s}.blocks.{b}."
            for name, tensor in layer.state_dict().items():
                name = name.replace("attention.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table")
                mapped[prefix + name] = tensor
        if stage.downsample is not None:
            for name, tensor in stage.downsample.state_dict().items():
                mapped[f"encoder.layers.{s - 1}.downsample.{name}"] = tensor
    missing, unexpected = swin.load_state_dict({k: v.detach().clone() for k, v in mapped.items()}, strict=False)
    assert unexpected == [] and all("relative_position_index" in k for k in missing)
    for p in ours.parameters():  # make the relative position bias matter
        if p.ndim == 2 and p.shape[0] == 49:
            torch.nn.init.normal_(p, std=1.0)
    swin.load_state_dict({k: v.detach().clone() for k, v in mapped.items() if "relative_position_bias_table" not in k}, strict=False)
    for s, stage in enumerate(ours.encoder.stages):
        for b, layer in enumerate(stage.blocks.layers):
            swin.encoder.layers[s].blocks[b].attention.relative_position_bias.relative_position_bias_table.data.copy_(
                layer.attention.relative_position_bias_table)

    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = swin(images)
        actual = ours(images.unsqueeze(2))
    torch.testing.assert_close(actual.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(actual.pooler_output, expected.pooler_output, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------
# Model behaviour
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames,size", [(1, 32), (3, 32), (4, 37), (5, 20)])
def test_any_frames_and_size_are_padded_and_cropped_back(frames, size):
    config = tiny_config()
    model = STSwinMAEForPreTraining(config).eval()
    pixel_values = torch.randn(1, 3, frames, size, size + 3)
    with torch.no_grad():
        out = model(pixel_values, mask_seed=0)
    assert out.reconstruction.shape == pixel_values.shape
    assert out.mask.shape == (1, frames, size, size + 3)
    assert torch.isfinite(out.loss)
    unet = STSwinUNetForSemanticSegmentation(tiny_config(temporal_aggregation="mean")).eval()
    with torch.no_grad():
        logits = unet(pixel_values).logits
    assert logits.shape == (1, 3, size, size + 3)


def test_masks_are_reproducible_and_have_the_configured_ratio():
    config = tiny_config(mask_ratio=0.75, mask_unit_size=(1, 2, 2))
    model = STSwinMAEForPreTraining(config).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        a, b, c = model(x, mask_seed=7), model(x, mask_seed=7), model(x, mask_seed=8)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.reconstruction, b.reconstruction)
    assert not torch.equal(a.mask, c.mask)
    assert a.mask.mean().item() == pytest.approx(0.75)
    # Masks are made of whole units: 1 temporal token (2 frames) x 2x2 tokens (8x8 pixels).
    unit = a.mask[:, ::2, ::8, ::8].repeat_interleave(2, 1).repeat_interleave(8, 2).repeat_interleave(8, 3)
    assert torch.equal(unit, a.mask)
    noise = torch.rand(2, 2 * 4 * 4)
    with torch.no_grad():
        d, e = model(x, noise=noise), model(x, noise=noise)
    assert torch.equal(d.mask, e.mask)
    with pytest.raises(ValueError, match="num_mask_units"):
        model(x, noise=torch.rand(2, 5))


def test_nodata_pixels_are_excluded_from_the_loss():
    config = tiny_config(mask_unit_size=(1, 2, 2))
    model = STSwinMAEForPreTraining(config).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        mask = model(x, mask_seed=3).mask.bool()
    valid = torch.ones(1, 4, 32, 32, dtype=torch.bool)
    valid[..., :16] = False
    hidden_and_invalid = mask & ~valid
    hidden_and_valid = mask & valid
    assert hidden_and_invalid.any() and hidden_and_valid.any()
    with torch.no_grad():
        base = model(x, valid_mask=valid, mask_seed=3).loss
        poisoned = x.clone()
        poisoned[:, :, hidden_and_invalid[0]] = 1e4  # hidden from the encoder and not a target: no effect
        assert torch.equal(model(poisoned, valid_mask=valid, mask_seed=3).loss, base)
        changed = x.clone()
        changed[:, :, hidden_and_valid[0]] += 1.0
        assert not torch.equal(model(changed, valid_mask=valid, mask_seed=3).loss, base)
        nothing_valid = model(x, valid_mask=torch.zeros_like(valid), mask_seed=3).loss
    assert nothing_valid.item() == 0.0


def test_norm_pix_loss_runs_and_reconstruction_is_in_input_units():
    model = STSwinMAEForPreTraining(tiny_config(norm_pix_loss=True)).eval()
    x = torch.randn(2, 3, 4, 32, 32) * 3 + 10
    with torch.no_grad():
        out = model(x, mask_seed=0)
    assert torch.isfinite(out.loss)
    assert abs(out.reconstruction.mean().item() - 10) < 2  # target statistics were put back


def test_segmentation_losses_and_regression():
    config = tiny_config()
    model = STSwinUNetForSemanticSegmentation(config)
    x = torch.randn(2, 3, 4, 32, 32)
    labels = torch.randint(0, 3, (2, 32, 32))
    labels[0, :5] = -100
    out = model(x, labels=labels)
    assert out.logits.shape == (2, 3, 32, 32) and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="must be in"):
        model(x, labels=torch.full((2, 32, 32), 7))
    with pytest.raises(ValueError, match="shape"):
        model(x, labels=torch.zeros(2, 16, 16, dtype=torch.long))
    valid = torch.zeros(2, 4, 32, 32, dtype=torch.bool)
    assert model(x, valid_mask=valid, labels=labels).loss.item() == 0.0

    regression = STSwinUNetForSemanticSegmentation(tiny_config(num_labels=1, problem_type="regression"))
    target = torch.rand(2, 32, 32) * 100
    target[1, :4] = float("nan")
    out = regression(x, labels=target)
    assert out.logits.shape == (2, 1, 32, 32) and torch.isfinite(out.loss)
    keep = torch.isfinite(target)
    expected = ((out.logits[:, 0] - target.nan_to_num()) ** 2)[keep].mean()
    torch.testing.assert_close(out.loss, expected)


def test_concat_temporal_aggregation_needs_the_configured_frames():
    model = STSwinUNetForSemanticSegmentation(tiny_config(num_frames=4)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 4, 32, 32)).logits.shape == (1, 3, 32, 32)
        # 3 frames would pad to the same 2 temporal tokens, but the last date would be counted twice: refused.
        for frames in (3, 6, 1):
            with pytest.raises(ValueError, match=f"num_frames=4 dates, the input has {frames}"):
                model(torch.randn(1, 3, frames, 32, 32))
    mean_model = STSwinUNetForSemanticSegmentation(tiny_config(num_frames=4, temporal_aggregation="mean")).eval()
    with torch.no_grad():
        assert mean_model(torch.randn(1, 3, 3, 32, 32)).logits.shape == (1, 3, 32, 32)


@pytest.mark.parametrize(
    "pixel_values,valid_mask,message",
    [
        (torch.randn(3, 4, 32, 32), None, "5-D"),
        (torch.randn(1, 4, 4, 32, 32), None, "3 channels"),
        (torch.ones(1, 3, 4, 32, 32, dtype=torch.int16), None, "floating point"),
        (torch.full((1, 3, 4, 32, 32), float("nan")), None, "NaN or Inf"),
        (torch.full((1, 3, 4, 32, 32), float("inf")), None, "NaN or Inf"),
        (torch.randn(1, 3, 4, 32, 32), torch.ones(1, 32, 32, dtype=torch.bool), "valid_mask"),
        (torch.randn(2, 3, 4, 32, 32), torch.ones(1, 4, 32, 32, dtype=torch.bool), r"\(2, 4, 32, 32\)"),
    ],
)
def test_bad_input_is_a_clear_error(pixel_values, valid_mask, message):
    model = STSwinMAEForPreTraining(tiny_config())
    with pytest.raises(ValueError, match=message):
        model(pixel_values, valid_mask=valid_mask)


# ------------------------------------------------------------------------------------------------------
# Transfer, Auto classes, Hub loading
# ------------------------------------------------------------------------------------------------------


def test_unet_from_pretraining_checkpoint_keeps_encoder_and_decoder(tmp_path):
    config = tiny_config()
    pretrained = STSwinMAEForPreTraining(config)
    pretrained.save_pretrained(tmp_path)
    unet, info = STSwinUNetForSemanticSegmentation.from_pretrained(tmp_path, num_labels=5, output_loading_info=True)
    new_keys = set(info["missing_keys"])
    expected_new = {k for k in unet.state_dict() if "skip_fusion" in k or k.split(".")[0] in ("final_expand", "temporal_aggregation", "segmentation_head")}
    assert new_keys == expected_new
    assert info["mismatched_keys"] == set() or not info["mismatched_keys"]
    source = pretrained.state_dict()
    for key, value in unet.state_dict().items():
        if key not in new_keys:
            torch.testing.assert_close(value, source[key], msg=key)
    assert unet.config.num_labels == 5


def test_auto_classes_and_auto_map(tmp_path):
    config = tiny_config()
    STSwinMAEForPreTraining(config).save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_st_swin_mae.STSwinMAEConfig",
        "AutoModel": "modeling_st_swin_mae.STSwinMAEModel",
        "AutoModelForPreTraining": "modeling_st_swin_mae.STSwinMAEForPreTraining",
    }
    assert {"configuration_st_swin_mae.py", "modeling_st_swin_mae.py"} <= set(os.listdir(tmp_path))
    assert type(AutoModel.from_pretrained(tmp_path)) is STSwinMAEModel
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is STSwinMAEForPreTraining
    assert type(AutoModelForSemanticSegmentation.from_pretrained(tmp_path, num_labels=2)) is STSwinUNetForSemanticSegmentation


def test_hub_bound_files_import_only_torch_numpy_transformers():
    import ast
    import pathlib

    folder = pathlib.Path(__file__).parents[1] / "src/degas_hf/models/st_swin_mae"
    allowed = {"torch", "numpy", "transformers", "__future__", "functools", "math", "dataclasses", "typing", "os", "json",
               "warnings", "pathlib", "collections", "itertools", "re", "copy", "inspect", "logging", "contextlib", "tempfile", "enum"}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only; function-level imports (e.g. rasterio) are allowed
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    continue
                assert node.level == 0, f"{path.name}: only single-dot relative imports"
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed} at module level"


def test_trust_remote_code_loads_where_degas_hf_is_hidden(tmp_path):
    config = tiny_config()
    model = STSwinUNetForSemanticSegmentation(config).eval()
    folder = tmp_path / "degas-tiny-seg"
    model.save_pretrained(folder)
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        expected = model(x).logits
    save_file({"x": x, "expected": expected}, str(tmp_path / "io.safetensors"))
    script = textwrap.dedent(
        f"""
        import sys, importlib.abc
        class HideDegas(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "degas_hf":
                    raise ModuleNotFoundError("degas_hf is hidden in this test")
        sys.meta_path.insert(0, HideDegas())
        try:
            import degas_hf
            raise SystemExit("degas_hf should not be importable")
        except ModuleNotFoundError:
            pass
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoModelForSemanticSegmentation
        model = AutoModelForSemanticSegmentation.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        io = load_file({str(tmp_path / "io.safetensors")!r})
        with torch.no_grad():
            logits = model(io["x"]).logits
        torch.testing.assert_close(logits, io["expected"], atol=1e-5, rtol=1e-5)
        encoder = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(encoder).__name__ == "STSwinMAEModel"
        print("REMOTE-OK")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert "REMOTE-OK" in result.stdout, result.stderr[-3000:]


def test_trainer_reports_eval_loss_for_pretraining(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    config = tiny_config()
    data = Dataset.from_dict({"pixel_values": torch.randn(4, 3, 4, 32, 32).tolist()}).with_format("torch")
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True)
    trainer = Trainer(model=STSwinMAEForPreTraining(config), args=args, eval_dataset=data)
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics and metrics["eval_loss"] > 0


def test_mask_ratio_rounding_never_hides_every_unit():
    model = STSwinMAEForPreTraining(tiny_config(mask_ratio=0.9, mask_unit_size=(1, 1, 1))).eval()
    with torch.no_grad():
        mask = model(torch.randn(1, 3, 2, 8, 20), mask_seed=0).mask  # 1 x 2 x 5 = 10 units
    assert mask.mean().item() == pytest.approx(0.9)


# ------------------------------------------------------------------------------------------------------
# Model API (issues 13 and 14): config validation, dtypes, valid_mask, attentions, hidden states, masks
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(depths=(2, -1, 2, 1)), "`depths` must be"),
        (dict(depths=(2, 0, 2, 1)), "`depths` must be"),
        (dict(decoder_depths=(1, -1, 1)), "`decoder_depths` must hold"),
        (dict(window_size=0), "`window_size` must hold"),
        (dict(window_size=(2, -7, 7)), "`window_size` must hold"),
        (dict(patch_size=(0, 4, 4)), "`patch_size` must hold"),
        (dict(image_size=-224), "`image_size` must hold"),
        (dict(mask_unit_size=(1, 0, 4)), "`mask_unit_size` must hold"),
        (dict(embed_dim=0), "`embed_dim` must be"),
        (dict(embed_dim=-128), "`embed_dim` must be"),
        (dict(num_heads=(4, 0, 16, 32)), "`num_heads` must hold"),
        (dict(decoder_num_heads=(16, 8, 0)), "`decoder_num_heads` must hold"),
        (dict(mlp_ratio=0.0), "`mlp_ratio` must be"),
        (dict(mask_ratio=1.0), "`mask_ratio` must be"),
        (dict(mask_ratio=-0.1), "`mask_ratio` must be"),
        (dict(hidden_dropout_prob=1.5), "`hidden_dropout_prob` must be"),
        (dict(attention_probs_dropout_prob=-0.1), "`attention_probs_dropout_prob` must be"),
        (dict(drop_path_rate=1.0), "`drop_path_rate` must be"),
        (dict(layer_norm_eps=0.0), "`layer_norm_eps` must be"),
        (dict(initializer_range=-0.02), "`initializer_range` must be"),
        (dict(num_frames=0), "`num_frames` must be"),
        (dict(temporal_aggregation="max"), "`temporal_aggregation` must be"),
        (dict(band_names=("B02", "B02")), "`band_names` must be"),
    ],
)
def test_config_refuses_each_invalid_field_with_one_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        STSwinMAEConfig(**overrides)
    assert "\n" not in str(error.value)


def test_float64_pixel_values_are_cast_to_the_model_dtype():
    config = tiny_config()
    for model_class in ALL_MODEL_CLASSES:
        model = model_class(config).eval()
        inputs = inputs_for(model_class, config)
        with torch.no_grad():
            expected = float_outputs(model(**inputs))
            actual = float_outputs(model(**{**inputs, "pixel_values": inputs["pixel_values"].double()}))
        for key in expected:
            assert actual[key].dtype == torch.float32, key
            torch.testing.assert_close(actual[key], expected[key], atol=1e-6, rtol=0)


def test_finite_check_is_a_switchable_eager_check():
    nan_input = torch.full((1, 3, 4, 32, 32), float("nan"))
    model = STSwinMAEModel(tiny_config()).eval()
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(nan_input)
    unchecked = STSwinMAEModel(tiny_config(check_finite_inputs=False)).eval()
    with torch.no_grad():
        assert torch.isnan(unchecked(nan_input).last_hidden_state).all()
    # torch.export used to stop at the data-dependent `if not isfinite(...).all()`: see test_torch_export in
    # test_modeling_common_st_swin_mae.py (export of every class, then the eager check again).


def test_every_class_accepts_valid_mask_and_checks_its_shape():
    config = tiny_config()
    valid = torch.ones(2, 4, 32, 32, dtype=torch.bool)
    valid[:, :, :4] = False
    for model_class in ALL_MODEL_CLASSES:
        model = model_class(config).eval()
        inputs = inputs_for(model_class, config)
        with torch.no_grad():
            model(**inputs, valid_mask=valid)
        with pytest.raises(ValueError, match="valid_mask"):
            model(**inputs, valid_mask=valid[:, 0])
    encoder = STSwinMAEModel(config).eval()
    x = inputs_for(STSwinMAEModel, config)["pixel_values"]
    with torch.no_grad():  # the encoder accepts it and, as documented, does not use it
        assert torch.equal(encoder(x, valid_mask=valid).last_hidden_state, encoder(x).last_hidden_state)


def window_attention_oracle(layer, x, window, shift):
    """Attention probabilities of one block from the naive full-grid attention, gathered into transformers' Swin
    window layout (B * nW, heads, N, N): the window partition of the cyclically shifted grid."""
    _, frames, height, width, channels = x.shape
    lengths = torch.tensor([frames, height, width])
    grid = torch.stack(torch.meshgrid(*[torch.arange(n) for n in (frames, height, width)], indexing="ij"), -1).view(-1, 3)
    window_t, shift_t = torch.tensor(window), torch.tensor(shift)
    rolled = (grid - shift_t) % lengths
    window_id, region = rolled // window_t, (rolled >= lengths - window_t).long() + ((rolled >= lengths - shift_t) & (shift_t > 0)).long()
    allowed = (window_id[:, None] == window_id[None]).all(-1) & (region[:, None] == region[None]).all(-1)
    attention = layer.attention
    table_window = torch.tensor(attention.table_window)
    span = 2 * table_window - 1
    offset = torch.minimum((grid[:, None] - grid[None] + (table_window - 1)).clamp(min=0), span - 1)
    bias = attention.relative_position_bias_table[offset[..., 0] * span[1] * span[2] + offset[..., 1] * span[2] + offset[..., 2]]
    h = layer.layernorm_before(x.reshape(x.shape[0], -1, channels))
    heads, d = attention.num_heads, attention.head_dim
    q = attention.q_proj(h).view(x.shape[0], -1, heads, d).transpose(1, 2)
    k = attention.k_proj(h).view(x.shape[0], -1, heads, d).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2) * d**-0.5 + bias.permute(2, 0, 1)).masked_fill(~allowed, float("-inf"))
    probabilities = scores.softmax(-1)  # (B, heads, L, L)
    # Token order inside the windows of the rolled grid, mapped back to original flat positions.
    rolled_grid = grid.view(frames, height, width, 3)
    original = ((rolled_grid + shift_t) % lengths)
    flat = original[..., 0] * height * width + original[..., 1] * width + original[..., 2]
    order = flat.view(frames // window[0], window[0], height // window[1], window[1], width // window[2], window[2])
    order = order.permute(0, 2, 4, 1, 3, 5).reshape(-1, math.prod(window))  # (nW, N)
    gathered = probabilities[:, :, order[:, :, None], order[:, None, :]]  # (B, heads, nW, N, N)
    return gathered.permute(0, 2, 1, 3, 4).reshape(-1, heads, order.shape[1], order.shape[1])


def test_attention_probabilities_match_the_naive_oracle_in_swin_window_layout():
    config = tiny_config(window_size=(2, 4, 4))
    blocks = STSwinMAEBlocks(config, dim=16, depth=2, num_heads=2, drop_path_rates=[0.0, 0.0]).eval()
    for p in blocks.parameters():
        torch.nn.init.normal_(p, std=0.5) if p.ndim == 2 and p.shape[1] == 2 else None
    x = torch.randn(2, 4, 8, 8, 16)
    window, shift = effective_window_and_shift((4, 8, 8), config.window_size, (1, 2, 2))
    with torch.no_grad():
        after_first = naive_swin_layer(blocks.layers[0], x, window, (0, 0, 0))
        out, attentions = blocks(x, output_attentions=True)
        expected = [window_attention_oracle(blocks.layers[0], x, window, (0, 0, 0)),
                    window_attention_oracle(blocks.layers[1], after_first, window, shift)]
    assert len(attentions) == 2
    for actual, oracle in zip(attentions, expected):
        assert actual.shape == (2 * 2 * 2 * 2, 2, 32, 32)  # (B * nW, heads, N, N)
        torch.testing.assert_close(actual, oracle, atol=1e-5, rtol=1e-5)
    assert torch.equal(out, blocks(x)[0])  # asking for the probabilities does not change the result


def test_bool_masked_pos_and_noise_in_the_flat_videomae_form():
    config = tiny_config(mask_unit_size=(1, 2, 2))
    encoder = STSwinMAEModel(config, use_mask_token=True).eval()
    torch.nn.init.normal_(encoder.embeddings.mask_token)
    x = torch.randn(2, 3, 4, 32, 32)
    grid_mask = torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5
    with torch.no_grad():
        by_grid = encoder(x, bool_masked_pos=grid_mask).last_hidden_state
        by_flat = encoder(x, bool_masked_pos=grid_mask.flatten(1)).last_hidden_state
        unmasked = encoder(x).last_hidden_state
    assert torch.equal(by_grid, by_flat) and not torch.allclose(by_grid, unmasked)
    for bad in (torch.zeros(2, 100, dtype=torch.bool), torch.zeros(2, 8, 8, dtype=torch.bool)):
        with pytest.raises(ValueError, match=r"\(batch, num_patches\) = \(2, 128\)"):
            encoder(x, bool_masked_pos=bad)

    model = STSwinMAEForPreTraining(config).eval()
    with torch.no_grad():
        given = model(x, bool_masked_pos=grid_mask.flatten(1))
    token_mask = given.mask[:, ::2, ::4, ::4]  # one value per token (patch 2 x 4 x 4)
    assert torch.equal(token_mask.bool(), grid_mask)
    with pytest.raises(ValueError, match="either"):
        model(x, bool_masked_pos=grid_mask, mask_seed=0)
    # Noise: per mask unit (flat or grid) and per token (flat VideoMAE form or grid) choose the same units.
    unit_noise = torch.rand(2, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    token_noise = unit_noise.repeat_interleave(2, 2).repeat_interleave(2, 3)  # (2, 2, 8, 8): each unit's value
    with torch.no_grad():
        masks = [model(x, noise=n).mask for n in (unit_noise.flatten(1), unit_noise, token_noise.flatten(1), token_noise)]
    for mask in masks[1:]:
        assert torch.equal(mask, masks[0])
    with pytest.raises(ValueError, match=r"one value per token \(batch_size, num_patches\) = \(2, 128\)"):
        model(x, noise=torch.rand(2, 33))


@pytest.mark.parametrize("model_class", [STSwinMAEModel, STSwinUNetForSemanticSegmentation])
def test_saved_weights_follow_the_umask(tmp_path, model_class):
    """safetensors writes weights 0600; every folder a model is saved to (fine-tuning, the demo, user code) gets the
    umask's permissions like its config.json, so a shared or published folder is readable."""
    old_umask = os.umask(0o022)
    try:
        model_class(tiny_config()).save_pretrained(tmp_path / "model")
        for name in ("model.safetensors", "config.json"):
            assert (tmp_path / "model" / name).stat().st_mode & 0o777 == 0o644, name
    finally:
        os.umask(old_umask)


def test_from_pretrained_overrides_are_normalised_and_checked(tmp_path):
    """Keyword overrides of `from_pretrained` go through the same normalisation and checks as the constructor
    (transformers would set them as raw attributes after __init__: an int window_size then failed in the model with
    a TypeError, an impossible mask_ratio was kept)."""
    tiny_config().save_pretrained(tmp_path)
    config = STSwinMAEConfig.from_pretrained(tmp_path, window_size=2, num_frames=3)
    assert config.window_size == tiny_config(window_size=2).window_size == [2, 2, 2] and config.num_frames == 3
    with pytest.raises(ValueError, match="`mask_ratio` must be"):
        STSwinMAEConfig.from_pretrained(tmp_path, mask_ratio=1.5)
    with pytest.raises(ValueError, match="`window_size` must hold"):
        STSwinMAEConfig.from_pretrained(tmp_path, window_size=0)
    config, unused = STSwinMAEConfig.from_pretrained(tmp_path, mask_ratio=0.5, foo=1, return_unused_kwargs=True)
    assert config.mask_ratio == 0.5 and unused == {"foo": 1}


class _WrappedLinear(torch.nn.Linear):
    """Stands for a PEFT/quantised wrapper: not exactly nn.Linear, so the attention must call it."""

    def __init__(self, linear: torch.nn.Linear, shift: float = 0.0):
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None)
        self.load_state_dict(linear.state_dict())
        self.shift = shift

    def forward(self, x):
        return super().forward(x) + self.shift


def test_one_qkv_gemm_equals_the_three_projections_and_wrappers_still_run():
    """The attention projects q/k/v with one GEMM over concatenated weights; wrapped projections (LoRA adapters)
    are called one by one. Both give the same result, and a wrapper's own forward is never bypassed."""
    config = tiny_config(window_size=(2, 4, 4))
    blocks = STSwinMAEBlocks(config, dim=16, depth=2, num_heads=2, drop_path_rates=[0.0, 0.0]).eval()
    x = torch.randn(2, 4, 8, 8, 16)
    with torch.no_grad():
        fused, _ = blocks(x)
        wrapped = copy.deepcopy(blocks)
        for layer in wrapped.layers:
            for name in ("q_proj", "k_proj", "v_proj"):
                setattr(layer.attention, name, _WrappedLinear(getattr(layer.attention, name)))
        torch.testing.assert_close(wrapped(x)[0], fused, atol=1e-6, rtol=1e-6)
        wrapped.layers[0].attention.v_proj.shift = 1.0  # an adapter that changes v must change the output
        assert not torch.allclose(wrapped(x)[0], fused, atol=1e-3)


def test_a_swin_block_runs_four_gemms_and_no_layout_copies_beyond_its_windows():
    """Operator count of a block's forward (the GPU step is bound by launches): 4 GEMMs (q/k/v together, output,
    two MLP layers), and for the merging between stages one permute-copy instead of four strided slices."""
    from _helpers_ops import CountOperators

    config = tiny_config(window_size=(2, 4, 4))
    blocks = STSwinMAEBlocks(config, dim=16, depth=2, num_heads=2, drop_path_rates=[0.0, 0.0]).eval()
    merging = STSwinMAEModel(config).encoder.stages[1].downsample
    with torch.no_grad(), CountOperators() as counted:
        blocks(torch.randn(2, 4, 8, 8, 16))
        merging(torch.randn(2, 4, 8, 8, merging.norm.normalized_shape[0] // 4))
    assert counted.counts["addmm"] + counted.counts["mm"] == 2 * 4 + 1  # + merging's reduction (attention: SDPA)
    assert counted.counts["slice"] == 0 and counted.counts["cat"] == 4  # the two blocks' q/k/v weights and biases


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stochastic_depth_in_the_residual_add_draws_and_scales_as_drop_path(dtype):
    from degas_hf.models.st_swin_mae.modeling_st_swin_mae import add_residual

    shortcut, branch = torch.randn(6, 2, 3, 3, 8), torch.randn(6, 2, 3, 3, 8).to(dtype)
    torch.manual_seed(3)
    keep = (0.7 + torch.rand(6, 1, 1, 1, 1, dtype=dtype).float()).floor_()  # timm's drop_path draw, decided in fp32
    expected = shortcut + branch.float() / 0.7 * keep.float()
    torch.manual_seed(3)
    actual = add_residual(shortcut, branch, drop_prob=0.3, training=True)
    assert 0 < keep.sum() < 6, "the seed must drop some samples and keep others"
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(add_residual(shortcut, branch, drop_prob=0.3, training=False), shortcut + branch)


def grid_layout_swin_layer(layer, x, window, shift):
    """Reference for one block in Video Swin's own layout, per block: pad the normalised grid with zeros, roll,
    partition, attend, reverse, roll back, crop. x: (B, T, H, W, C)."""
    from degas_hf.models.st_swin_mae.modeling_st_swin_mae import (
        pad_to_multiple, shift_window_mask, window_partition, window_reverse)

    frames, height, width = x.shape[1:4]
    normed = pad_to_multiple(layer.layernorm_before(x), window)
    padded = tuple(normed.shape[1:4])
    mask = shift_window_mask(padded, window, shift, x.device) if any(shift) else None
    if any(shift):
        normed = torch.roll(normed, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
    windows, _ = layer.attention(window_partition(normed, window), window, mask)
    attended = window_reverse(windows, window, padded)
    if any(shift):
        attended = torch.roll(attended, shifts=shift, dims=(1, 2, 3))
    x = x + attended[:, :frames, :height, :width]
    return x + layer.mlp(layer.layernorm_after(x))


@pytest.mark.parametrize("grid", [(3, 6, 10), (5, 9, 7), (1, 5, 4), (4, 8, 8)])
def test_tokens_kept_in_window_order_equal_the_per_block_grid_layout(grid):
    """The blocks keep the tokens in window order across a stage (zeroing the padding after each norm, one gather
    into and out of the shifted windows); that must equal padding, rolling and partitioning the grid per block,
    for grids that need padding too, values and gradients."""
    config = tiny_config(window_size=(2, 4, 4))
    blocks = STSwinMAEBlocks(config, dim=16, depth=4, num_heads=2, drop_path_rates=[0.0] * 4).train()
    for name, p in blocks.named_parameters():
        if "relative_position_bias_table" in name or "bias" in name:
            torch.nn.init.normal_(p, std=0.5)  # a LayerNorm bias makes the padding's normalised value non-zero
    x = torch.randn(2, *grid, 16, requires_grad=True)
    window, shift = effective_window_and_shift(grid, config.window_size, (1, 2, 2))
    expected = x
    for layer in blocks.layers:
        expected = grid_layout_swin_layer(layer, expected, window, shift if any(layer.shift_size) else (0, 0, 0))
    actual, _ = blocks(x)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    (grad_actual,) = torch.autograd.grad(actual.square().sum(), x)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(grad_actual, grad_expected, atol=1e-4, rtol=1e-4)
