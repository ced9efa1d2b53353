"""The checks transformers runs on its own vision models (`ModelTesterMixin`, `ConfigTester`), written for the three
ST-SwinMAE classes: their (B, C, T, H, W) input, window attention and masking make the library's 4-D-image test
mixins inapplicable as they are (and transformers' tests/ package is not installed), so the same checks are
written out here, on the same pattern: a `STSwinMAEModelTester` makes a tiny config and inputs, a `ConfigTester`
checks the configuration, and `STSwinMAEModelTest` runs every common check over `all_model_classes`.

The tiny config exercises what the model's special cases hang on: a shifted window along time, height and width
(the token grid is larger than the window on every axis), a clamped window (the last stage), padding of frames and
of the padded grid, and a shifted decoder block.
"""

import copy
import inspect
import json
import math
import tempfile
import unittest

import torch

from degas_hf import STSwinMAEConfig, STSwinMAEForPreTraining, STSwinMAEModel, STSwinUNetForSemanticSegmentation
from degas_hf.models.st_swin_mae.modeling_st_swin_mae import (
    STSwinMAEForPreTrainingOutput,
    STSwinMAEModelOutput,
    STSwinUNetSemanticSegmenterOutput,
)


class STSwinMAEModelTester:
    """Tiny configs and inputs, as transformers' `*ModelTester` classes make them."""

    def __init__(
        self,
        parent,
        batch_size=2,
        num_frames=6,
        image_size=16,
        band_names=("B02", "B03", "B04"),
        patch_size=(2, 4, 4),
        window_size=(2, 2, 2),
        embed_dim=8,
        depths=(2, 1),
        num_heads=(1, 2),
        decoder_depths=(2,),
        decoder_num_heads=(1,),
        mask_unit_size=(1, 2, 2),
        num_labels=3,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.image_size = image_size
        self.band_names = band_names
        self.patch_size = patch_size
        self.window_size = window_size
        self.embed_dim = embed_dim
        self.depths = depths
        self.num_heads = num_heads
        self.decoder_depths = decoder_depths
        self.decoder_num_heads = decoder_num_heads
        self.mask_unit_size = mask_unit_size
        self.num_labels = num_labels
        # Derived: the token grid of the first stage and the stages' grids.
        self.token_grid = tuple(-(-s // p) for s, p in zip((num_frames, image_size, image_size), patch_size))
        self.stage_grids = [
            (self.token_grid[0], -(-self.token_grid[1] // 2**s), -(-self.token_grid[2] // 2**s)) for s in range(len(depths))
        ]
        self.num_patches = math.prod(self.token_grid)

    def get_config(self, **overrides):
        values = dict(
            band_names=self.band_names, num_frames=self.num_frames, image_size=self.image_size,
            patch_size=self.patch_size, window_size=self.window_size, embed_dim=self.embed_dim, depths=self.depths,
            num_heads=self.num_heads, decoder_depths=self.decoder_depths, decoder_num_heads=self.decoder_num_heads,
            mask_unit_size=self.mask_unit_size, mask_ratio=0.5, drop_path_rate=0.0, num_labels=self.num_labels,
        )
        values.update(overrides)
        return STSwinMAEConfig(**values)

    def prepare_config_and_inputs(self, seed=0):
        generator = torch.Generator().manual_seed(seed)
        shape = (self.batch_size, len(self.band_names), self.num_frames, self.image_size, self.image_size)
        pixel_values = torch.randn(shape, generator=generator)
        labels = torch.randint(0, self.num_labels, (self.batch_size, self.image_size, self.image_size), generator=generator)
        return self.get_config(), pixel_values, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}

    def inputs_for(self, model_class, inputs_dict, return_labels=False):
        """transformers' `_prepare_for_class`: a fixed mask for pretraining (deterministic), labels when asked."""
        inputs = dict(inputs_dict)
        batch_size = inputs["pixel_values"].shape[0]
        if model_class is STSwinMAEForPreTraining:
            units = math.prod(-(-g // u) for g, u in zip(self.token_grid, self.mask_unit_size))
            inputs["noise"] = torch.rand(batch_size, units, generator=torch.Generator().manual_seed(1))
        if return_labels and model_class is STSwinUNetForSemanticSegmentation:
            inputs["labels"] = self.prepare_config_and_inputs()[2][:batch_size]
        return inputs

    def create_and_check_model(self, config, pixel_values):
        model = STSwinMAEModel(config).eval()
        with torch.no_grad():
            result = model(pixel_values)
        last_grid = self.stage_grids[-1]
        self.parent.assertEqual(result.last_hidden_state.shape, (self.batch_size, math.prod(last_grid), config.hidden_size))
        self.parent.assertEqual(result.pooler_output.shape, (self.batch_size, config.hidden_size))

    def create_and_check_for_pretraining(self, config, pixel_values):
        model = STSwinMAEForPreTraining(config).eval()
        with torch.no_grad():
            result = model(pixel_values, mask_seed=0)
        self.parent.assertEqual(result.reconstruction.shape, pixel_values.shape)
        self.parent.assertEqual(result.mask.shape, (self.batch_size, *pixel_values.shape[2:]))
        self.parent.assertEqual(result.loss.shape, ())

    def create_and_check_for_semantic_segmentation(self, config, pixel_values, labels):
        model = STSwinUNetForSemanticSegmentation(config).eval()
        with torch.no_grad():
            result = model(pixel_values, labels=labels)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.num_labels, self.image_size, self.image_size))
        self.parent.assertTrue(torch.isfinite(result.loss))


class ConfigTester:
    """transformers' ConfigTester checks, plus this config's own validation."""

    def __init__(self, parent, config_class, **inputs):
        self.parent = parent
        self.config_class = config_class
        self.inputs = inputs

    def check_common_properties(self):
        config = self.config_class(**self.inputs)
        for name in ("embed_dim", "num_heads", "depths", "hidden_size", "num_channels", "num_attention_heads",
                     "num_hidden_layers"):
            self.parent.assertTrue(hasattr(config, name), name)
        self.parent.assertEqual(config.num_hidden_layers, len(config.depths))
        self.parent.assertEqual(config.num_attention_heads, config.num_heads)

    def create_and_test_config_to_json_string(self):
        config = self.config_class(**self.inputs)
        parsed = json.loads(config.to_json_string())
        for key, value in self.inputs.items():
            self.parent.assertEqual(parsed[key], list(value) if isinstance(value, tuple) else value, key)

    def create_and_test_config_to_json_file_and_from_pretrained(self):
        config = self.config_class(**self.inputs)
        with tempfile.TemporaryDirectory() as folder:
            config.to_json_file(f"{folder}/config.json")
            self.parent.assertEqual(self.config_class.from_json_file(f"{folder}/config.json").to_dict(), config.to_dict())
            config.save_pretrained(folder)
            self.parent.assertEqual(self.config_class.from_pretrained(folder).to_dict(), config.to_dict())

    def create_and_test_config_with_num_labels(self):
        config = self.config_class(**self.inputs, num_labels=5)
        self.parent.assertEqual(len(config.id2label), 5)
        config.num_labels = 2
        self.parent.assertEqual(len(config.label2id), 2)

    def check_config_can_be_init_without_params(self):
        self.parent.assertIsNotNone(self.config_class())

    def check_invalid_values_are_refused(self):
        for field, bad in [("depths", (1, 0)), ("num_heads", (1, -2)), ("window_size", 0), ("patch_size", (2, 0, 4)),
                           ("embed_dim", -8), ("mlp_ratio", -1.0), ("mask_ratio", 1.5), ("decoder_depths", (-1,))]:
            with self.parent.assertRaisesRegex(ValueError, f"`{field}`"):
                self.config_class(**{**self.inputs, field: bad})

    def run_common_tests(self):
        self.check_common_properties()
        self.create_and_test_config_to_json_string()
        self.create_and_test_config_to_json_file_and_from_pretrained()
        self.create_and_test_config_with_num_labels()
        self.check_config_can_be_init_without_params()
        self.check_invalid_values_are_refused()


def _float_tensors(output):
    return {k: v for k, v in output.items() if isinstance(v, torch.Tensor) and torch.is_floating_point(v)}


class STSwinMAEModelTest(unittest.TestCase):
    all_model_classes = (STSwinMAEModel, STSwinMAEForPreTraining, STSwinUNetForSemanticSegmentation)
    output_classes = {
        STSwinMAEModel: STSwinMAEModelOutput,
        STSwinMAEForPreTraining: STSwinMAEForPreTrainingOutput,
        STSwinUNetForSemanticSegmentation: STSwinUNetSemanticSegmenterOutput,
    }

    def setUp(self):
        torch.manual_seed(0)
        self.model_tester = STSwinMAEModelTester(self)
        self.config_tester = ConfigTester(self, STSwinMAEConfig, embed_dim=8, depths=(2, 1), num_heads=(1, 2),
                                          decoder_depths=(1,), decoder_num_heads=(1,))

    # ---- configuration and shapes ---------------------------------------------------------------------
    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model(self):
        config, pixel_values, _ = self.model_tester.prepare_config_and_inputs()
        self.model_tester.create_and_check_model(config, pixel_values)

    def test_for_pretraining(self):
        config, pixel_values, _ = self.model_tester.prepare_config_and_inputs()
        self.model_tester.create_and_check_for_pretraining(config, pixel_values)

    def test_for_semantic_segmentation(self):
        self.model_tester.create_and_check_for_semantic_segmentation(*self.model_tester.prepare_config_and_inputs())

    def test_forward_signature(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            parameters = list(inspect.signature(model_class(config).forward).parameters)
            self.assertEqual(parameters[0], "pixel_values")
            for name in ("valid_mask", "output_attentions", "output_hidden_states", "return_dict"):
                self.assertIn(name, parameters, f"{model_class.__name__}.forward lacks {name}")

    def test_model_get_input_embeddings(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            self.assertIsInstance(model_class(config).get_input_embeddings(), torch.nn.Module)

    # ---- save / load, determinism, batching -----------------------------------------------------------
    def test_save_load(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config).eval()
            inputs = self.model_tester.inputs_for(model_class, inputs_dict)
            with torch.no_grad():
                before = _float_tensors(model(**inputs))
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder)
                reloaded = model_class.from_pretrained(folder).eval()
            with torch.no_grad():
                after = _float_tensors(reloaded(**inputs))
            self.assertEqual(before.keys(), after.keys())
            for key in before:
                torch.testing.assert_close(after[key], before[key], atol=1e-5, rtol=0)

    def test_determinism(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config).eval()
            inputs = self.model_tester.inputs_for(model_class, inputs_dict)
            with torch.no_grad():
                first, second = model(**inputs)[0], model(**inputs)[0]
            self.assertTrue(torch.equal(first, second), model_class.__name__)

    def test_batching_equivalence(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config).eval()
            inputs = self.model_tester.inputs_for(model_class, inputs_dict)
            with torch.no_grad():
                batched = _float_tensors(model(**inputs, output_hidden_states=True))
                single = _float_tensors(model(**{k: v[:1] for k, v in inputs.items()}, output_hidden_states=True))
            for key in single:
                if key != "loss":
                    torch.testing.assert_close(single[key][0], batched[key][0], atol=1e-5, rtol=1e-5, msg=key)

    def test_model_outputs_equivalence(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()

        def flatten(value):
            if isinstance(value, (tuple, list)):
                return [t for v in value for t in flatten(v)]
            return [value] if value is not None else []

        for model_class in self.all_model_classes:
            model = model_class(config).eval()
            inputs = self.model_tester.inputs_for(model_class, inputs_dict, return_labels=True)
            for extra in ({}, {"output_hidden_states": True}, {"output_attentions": True},
                          {"output_hidden_states": True, "output_attentions": True}):
                with torch.no_grad():
                    as_dict = model(**inputs, **extra, return_dict=True)
                    as_tuple = model(**inputs, **extra, return_dict=False)
                self.assertIsInstance(as_dict, self.output_classes[model_class])
                a, b = flatten(as_dict.to_tuple()), flatten(as_tuple)
                self.assertEqual(len(a), len(b))
                for x, y in zip(a, b):
                    torch.testing.assert_close(x, y, atol=0, rtol=0)

    # ---- attentions and hidden states -----------------------------------------------------------------
    def _expected_attention_shapes(self, config, batch_size):
        shapes = []
        for stage, grid in enumerate(self.model_tester.stage_grids):
            window = tuple(min(g, w) for g, w in zip(grid, config.window_size))
            num_windows = math.prod(-(-g // w) for g, w in zip(grid, window))
            tokens = math.prod(window)
            shapes += [(batch_size * num_windows, config.num_heads[stage], tokens, tokens)] * config.depths[stage]
        return shapes

    def test_attention_outputs(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        expected = self._expected_attention_shapes(config, self.model_tester.batch_size)
        for model_class in self.all_model_classes:
            inputs = self.model_tester.inputs_for(model_class, inputs_dict)
            model = model_class(config).eval()
            with torch.no_grad():
                by_argument = model(**inputs, output_attentions=True)
                plain = model(**inputs)
            self.assertIsNone(plain.attentions)
            self.assertIsNone(by_argument.hidden_states)  # attentions alone do not switch hidden states on
            self.assertEqual([tuple(a.shape) for a in by_argument.attentions], expected)
            for probabilities in by_argument.attentions:
                torch.testing.assert_close(probabilities.sum(-1), torch.ones(probabilities.shape[:-1]), atol=1e-5, rtol=0)
            config_with_flag = copy.deepcopy(config)
            config_with_flag._attn_implementation = "eager"  # transformers refuses the flag on an SDPA config
            config_with_flag.output_attentions = True
            flagged = model_class(config_with_flag).eval()
            flagged.load_state_dict(model.state_dict())
            with torch.no_grad():
                by_config = flagged(**inputs)
            for a, b in zip(by_argument.attentions, by_config.attentions):
                torch.testing.assert_close(a, b, atol=1e-6, rtol=0)

    def test_hidden_states_output(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        grids = [self.model_tester.token_grid, *self.model_tester.stage_grids]
        channels = [config.embed_dim] + [config.embed_dim * 2**s for s in range(len(config.depths))]
        for model_class in self.all_model_classes:
            inputs = self.model_tester.inputs_for(model_class, inputs_dict)
            model = model_class(config).eval()
            with torch.no_grad():
                output = model(**inputs, output_hidden_states=True)
            self.assertEqual(len(output.hidden_states), len(config.depths) + 1)
            for tokens, maps, grid, c in zip(output.hidden_states, output.reshaped_hidden_states, grids, channels):
                self.assertEqual(tuple(tokens.shape), (self.model_tester.batch_size, math.prod(grid), c))
                self.assertEqual(tuple(maps.shape), (self.model_tester.batch_size, c, *grid))
                torch.testing.assert_close(maps.flatten(2).transpose(1, 2), tokens, atol=0, rtol=0)
            config_with_flag = copy.deepcopy(config)
            config_with_flag.output_hidden_states = True
            flagged = model_class(config_with_flag).eval()
            with torch.no_grad():
                self.assertEqual(len(flagged(**inputs).hidden_states), len(config.depths) + 1)

    def test_retain_grad_hidden_states_attentions(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config).train()
            inputs = self.model_tester.inputs_for(model_class, inputs_dict, return_labels=True)
            output = model(**inputs, output_hidden_states=True, output_attentions=True)
            hidden_states, attentions = output.hidden_states[0], output.attentions[0]
            hidden_states.retain_grad()
            attentions.retain_grad()
            first = output[0] if model_class is STSwinMAEModel else output.loss
            (first * torch.randn(first.shape)).sum().backward()  # (a plain sum of layer-normed tokens is constant)
            self.assertIsNotNone(hidden_states.grad, model_class.__name__)
            self.assertIsNotNone(attentions.grad, model_class.__name__)
            self.assertGreater(hidden_states.grad.abs().sum().item(), 0)

    # ---- attention implementations ------------------------------------------------------------------------
    def test_eager_matches_sdpa_inference(self):
        """With shift masks (this config shifts along t, h and w), padding, the mask token (flat VideoMAE-form
        `bool_masked_pos`) and output_attentions (SDPA computes that call on the eager path)."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        bool_masked_pos = torch.rand(self.model_tester.batch_size, self.model_tester.num_patches) > 0.5
        for model_class in self.all_model_classes:
            sdpa = model_class(copy.deepcopy(config)).eval()
            self.assertEqual(sdpa.config._attn_implementation, "sdpa")
            eager = model_class(copy.deepcopy(config)).eval()
            eager.load_state_dict(sdpa.state_dict())
            eager.set_attn_implementation("eager")
            inputs = self.model_tester.inputs_for(model_class, inputs_dict)
            if model_class is STSwinMAEForPreTraining:
                inputs.pop("noise")
                inputs["bool_masked_pos"] = bool_masked_pos
            for extra in ({}, {"output_attentions": True}):
                with torch.no_grad():
                    a, b = _float_tensors(sdpa(**inputs, **extra)), _float_tensors(eager(**inputs, **extra))
                for key in a:
                    torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5, msg=key)

    # ---- training -----------------------------------------------------------------------------------------
    def test_training(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config).train()
            output = model(**self.model_tester.inputs_for(model_class, inputs_dict, return_labels=True))
            if model_class is STSwinMAEModel:  # no loss: a fixed random projection of the tokens
                loss = (output.last_hidden_state * torch.randn(output.last_hidden_state.shape)).sum()
            else:
                loss = output.loss
            loss.backward()
            missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            self.assertEqual(missing, [], model_class.__name__)

    def test_training_gradient_checkpointing(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in (STSwinMAEForPreTraining, STSwinUNetForSemanticSegmentation):
            model = model_class(config).train()
            reference = copy.deepcopy(model)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            self.assertTrue(all(m.gradient_checkpointing for m in model.modules() if hasattr(m, "gradient_checkpointing")))
            inputs = self.model_tester.inputs_for(model_class, inputs_dict, return_labels=True)
            loss, ref_loss = model(**inputs).loss, reference(**inputs).loss
            loss.backward()
            ref_loss.backward()
            torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=0)
            for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
                torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
            # Attentions pass through checkpointed layers as well.
            self.assertEqual(len(model(**inputs, output_attentions=True).attentions), sum(config.depths))

    # ---- initialisation ---------------------------------------------------------------------------------
    def test_initialization(self):
        # transformers' `_config_zero_init`: with a vanishing initializer range, weights are ~0 and norms exactly
        # 1/0; a parameter that `_init_weights` misses keeps its constructor's (or, when loading, garbage) values.
        config = self.model_tester.get_config(initializer_range=1e-10)
        for model_class in self.all_model_classes:
            for model in (model_class(config), model_class.from_pretrained(None, config=config, state_dict={})):
                for name, p in model.named_parameters():
                    mean = ((p.data.mean() * 1e9).round() / 1e9).item()
                    self.assertIn(mean, (0.0, 1.0), f"{model_class.__name__}.{name} was not initialised by _init_weights")

    def test_mismatched_shapes_have_properly_initialized_weights(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        with tempfile.TemporaryDirectory() as folder:
            STSwinUNetForSemanticSegmentation(config).save_pretrained(folder)
            model, info = STSwinUNetForSemanticSegmentation.from_pretrained(
                folder, num_labels=7, ignore_mismatched_sizes=True, output_loading_info=True
            )
        self.assertEqual(model.segmentation_head.weight.shape[0], 7)
        self.assertTrue(info["mismatched_keys"])
        self.assertLess(model.segmentation_head.weight.std().item(), 3 * config.initializer_range)

    # ---- compile and export ---------------------------------------------------------------------------------
    def test_torch_compile_fullgraph(self):
        """No graph break in any forward (the data-reading checks are skipped while dynamo traces), also when the
        shift-mask and position-index caches are cold; dynamo's own "eager" backend keeps this fast."""
        from degas_hf.models.st_swin_mae import modeling_st_swin_mae

        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config).eval()
            inputs = self.model_tester.inputs_for(model_class, inputs_dict, return_labels=True)
            torch._dynamo.reset()
            modeling_st_swin_mae._DEVICE_CACHE.clear()
            compiled = torch.compile(model, backend="eager", fullgraph=True)
            with torch.no_grad():
                actual, expected = _float_tensors(compiled(**inputs)), _float_tensors(model(**inputs))
            for key in expected:
                torch.testing.assert_close(actual[key], expected[key], atol=1e-5, rtol=0, msg=key)
        torch._dynamo.reset()

    # ---- export -------------------------------------------------------------------------------------------
    def test_torch_export(self):
        """Dynamic batch for every class and a static batch, compared with eager at 1e-4 at another batch size
        (pretraining: `noise` given; `mask_seed` draws from a torch.Generator, which export does not trace). The
        data-reading NaN check is skipped while exporting and still runs in eager use afterwards."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        batch = torch.export.Dim("batch", min=1, max=64)
        cases = [(model_class, True) for model_class in self.all_model_classes] + [(STSwinMAEModel, False)]
        for model_class, dynamic in cases:
            model = model_class(config).eval()
            inputs = self.model_tester.inputs_for(model_class, inputs_dict)
            shapes = {name: {0: batch} for name in inputs} if dynamic else None
            program = torch.export.export(model, (), inputs, dynamic_shapes=shapes)
            check_batch = 3 if dynamic else self.model_tester.batch_size
            probe = {"pixel_values": torch.randn(check_batch, *inputs["pixel_values"].shape[1:])}
            if "noise" in inputs:
                probe["noise"] = torch.rand(check_batch, inputs["noise"].shape[1])
            with torch.no_grad():
                expected, actual = _float_tensors(model(**probe)), _float_tensors(program.module()(**probe))
            self.assertEqual(expected.keys(), actual.keys())
            for key in expected:
                torch.testing.assert_close(actual[key], expected[key], atol=1e-4, rtol=0, msg=f"{key} {dynamic=}")
        # The caches the export filled hold real tensors: eager use goes on, with its NaN check.
        with torch.no_grad():
            model(**probe)
            with self.assertRaisesRegex(ValueError, "NaN or Inf"):
                model(**{**probe, "pixel_values": torch.full_like(probe["pixel_values"], float("nan"))})


if __name__ == "__main__":
    unittest.main()
