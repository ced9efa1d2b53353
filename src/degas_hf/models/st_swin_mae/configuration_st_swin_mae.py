"""ST-SwinMAE model configuration.

This file is Hub-bound: it is copied next to the weights by ``save_pretrained`` and imported with
``trust_remote_code=True``, so it imports nothing beyond the standard library and transformers.
"""

import inspect

from transformers import PretrainedConfig

# The degas-100m architecture (docs: architecture.md). `STSwinMAEConfig()` equals this preset.
DEGAS_100M = dict(
    band_names=("B02", "B03", "B04", "B8A", "B11", "B12"),
    num_frames=4,
    image_size=(224, 224),
    patch_size=(2, 4, 4),
    window_size=(2, 7, 7),
    embed_dim=128,
    depths=(2, 2, 18, 2),
    num_heads=(4, 8, 16, 32),
    decoder_depths=(2, 2, 2),
    decoder_num_heads=(16, 8, 4),
)

# A small model with the same structure, for tests, demos and CPU experiments (~1M parameters).
DEGAS_TINY = dict(
    band_names=("B02", "B03", "B04", "B8A", "B11", "B12"),
    num_frames=4,
    image_size=(64, 64),
    patch_size=(2, 4, 4),
    window_size=(2, 4, 4),
    embed_dim=24,
    depths=(1, 1, 2, 1),
    num_heads=(2, 2, 4, 4),
    decoder_depths=(1, 1, 1),
    decoder_num_heads=(4, 2, 2),
    drop_path_rate=0.0,
)

PRESETS = {"degas-100m": DEGAS_100M, "degas-tiny": DEGAS_TINY}


def _triple(value, name: str) -> tuple[int, int, int]:
    """An int or a length-3 sequence as a (t, h, w) tuple of ints."""
    if isinstance(value, int):
        return (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"`{name}` must be an int or a (t, h, w) triple, got {value!r}")
    return value


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"`{name}` must be an int or an (h, w) pair, got {value!r}")
    return value


class STSwinMAEConfig(PretrainedConfig):
    r"""
    Configuration of the spatio-temporal Swin masked autoencoder (ST-SwinMAE, arXiv 2405.02512) and of its
    transfer-learning sibling ST-SwinUNet. With no arguments it is the degas-100m architecture. Every choice
    that the paper leaves open is a field here (see architecture.md and the model card).

    Inputs are `pixel_values` of shape (batch, channels, frames, height, width) = (B, C, T, H, W).

    Args:
        band_names (`tuple[str]`, defaults to `("B02", "B03", "B04", "B8A", "B11", "B12")`):
            The input bands, in the order the channels of `pixel_values` hold them. `num_channels` is their count.
        num_frames (`int`, defaults to 4):
            Frames (dates) the model was built for. Any T >= 1 is accepted at run time; it matters only for
            `temporal_aggregation="concat"` in ST-SwinUNet, whose layer is sized for it.
        image_size (`int` or `(h, w)`, defaults to 224):
            Spatial size used in pretraining. Other sizes are accepted (padded to multiples, cropped back).
        patch_size (`int` or `(t, h, w)`, defaults to `(2, 4, 4)`):
            3D patch (tubelet) size of the Conv3d patch embedding. Frames not divisible by `t` are padded by
            repeating the last frame; spatial sizes not divisible are zero-padded; outputs are cropped back.
        window_size (`int` or `(t, h, w)`, defaults to `(2, 7, 7)`):
            3D attention window in tokens. Along an axis where the token grid is not larger than the window,
            the window is clamped to the grid and shifting is disabled (the Video Swin rule).
        embed_dim (`int`, defaults to 128):
            Channels of the first stage; each spatial patch merging doubles them.
        depths (`tuple[int]`, defaults to `(2, 2, 18, 2)`):
            Swin blocks per encoder stage. Stage s (s > 0) begins with a 2x2 spatial patch merging.
        num_heads (`tuple[int]`, defaults to `(4, 8, 16, 32)`):
            Attention heads per encoder stage.
        decoder_depths (`tuple[int]`, defaults to `(2, 2, 2)`):
            Swin blocks per decoder stage. Decoder stage s begins with a 2x spatial patch expanding, so it
            has to hold `len(depths) - 1` entries to return to the first stage's scale.
        decoder_num_heads (`tuple[int]`, defaults to `(16, 8, 4)`):
            Attention heads per decoder stage.
        mlp_ratio (`float`, defaults to 4.0):
            Hidden size of the MLP relative to the block's channels.
        qkv_bias (`bool`, defaults to `True`):
            Whether the query, key and value projections have a bias.
        hidden_act (`str`, defaults to `"gelu"`):
            Activation of the MLPs.
        hidden_dropout_prob (`float`, defaults to 0.0):
            Dropout after the patch embedding and inside the MLPs and projections.
        attention_probs_dropout_prob (`float`, defaults to 0.0):
            Dropout on attention probabilities.
        drop_path_rate (`float`, defaults to 0.1):
            Stochastic depth, rising linearly over the encoder blocks (and over the decoder blocks).
        layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of the layer norms.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the truncated normal used for linear weights, mask token and bias tables.
        mask_ratio (`float`, defaults to 0.75):
            Fraction of mask units hidden during pretraining.
        mask_unit_size (`int` or `(t, h, w)`, defaults to `(1, 4, 4)`):
            Size, in tokens, of one masking unit (SwinMAE window masking). (1, 4, 4) with patch (2, 4, 4) is one
            temporal token by 16 x 16 pixels.
        norm_pix_loss (`bool`, defaults to `False`):
            Whether the reconstruction target is normalised per patch (MAE).
        temporal_aggregation (`str`, defaults to `"concat"`):
            How ST-SwinUNet reduces its per-frame features to one 2D map: `"concat"` (concatenate the temporal
            tokens, then a linear layer; needs the input to give the same temporal tokens as `num_frames`) or
            `"mean"` (average over time; any T).
        semantic_loss_ignore_index (`int`, defaults to -100):
            Label value ignored by the segmentation loss.
        check_finite_inputs (`bool`, defaults to `True`):
            Whether the forward raises a ValueError on NaN/Inf `pixel_values` (and on out-of-range class labels).
            These checks read the data, so on an accelerator each costs a host-device sync; they are skipped
            anyway while `torch.compile`, `torch.export` or `torch.jit.trace` traces the model. Set it to `False`
            for throughput when the data are known to be clean (the image processor fills nodata).
    """

    model_type = "st_swin_mae"
    attribute_map = {"num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"}

    def __init__(
        self,
        band_names=DEGAS_100M["band_names"],
        num_frames=DEGAS_100M["num_frames"],
        image_size=DEGAS_100M["image_size"],
        patch_size=DEGAS_100M["patch_size"],
        window_size=DEGAS_100M["window_size"],
        embed_dim=DEGAS_100M["embed_dim"],
        depths=DEGAS_100M["depths"],
        num_heads=DEGAS_100M["num_heads"],
        decoder_depths=DEGAS_100M["decoder_depths"],
        decoder_num_heads=DEGAS_100M["decoder_num_heads"],
        mlp_ratio=4.0,
        qkv_bias=True,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.1,
        layer_norm_eps=1e-5,
        initializer_range=0.02,
        mask_ratio=0.75,
        mask_unit_size=(1, 4, 4),
        norm_pix_loss=False,
        temporal_aggregation="concat",
        semantic_loss_ignore_index=-100,
        check_finite_inputs=True,
        **kwargs,
    ):
        kwargs.pop("num_channels", None)  # derived from band_names; present in saved config.json
        self.band_names = [str(b) for b in band_names]
        if len(self.band_names) == 0 or len(set(self.band_names)) != len(self.band_names):
            raise ValueError(f"`band_names` must be non-empty and unique, got {self.band_names}")
        self.num_frames = int(num_frames)
        self.image_size = list(_pair(image_size, "image_size"))
        self.patch_size = list(_triple(patch_size, "patch_size"))
        self.window_size = list(_triple(window_size, "window_size"))
        self.embed_dim = int(embed_dim)
        self.depths = [int(d) for d in depths]
        self.num_heads = [int(h) for h in num_heads]
        self.decoder_depths = [int(d) for d in decoder_depths]
        self.decoder_num_heads = [int(h) for h in decoder_num_heads]
        self.mlp_ratio = float(mlp_ratio)
        self.qkv_bias = bool(qkv_bias)
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = float(hidden_dropout_prob)
        self.attention_probs_dropout_prob = float(attention_probs_dropout_prob)
        self.drop_path_rate = float(drop_path_rate)
        self.layer_norm_eps = float(layer_norm_eps)
        self.initializer_range = float(initializer_range)
        self.mask_ratio = float(mask_ratio)
        self.mask_unit_size = list(_triple(mask_unit_size, "mask_unit_size"))
        self.norm_pix_loss = bool(norm_pix_loss)
        self.temporal_aggregation = temporal_aggregation
        self.semantic_loss_ignore_index = int(semantic_loss_ignore_index)
        self.check_finite_inputs = bool(check_finite_inputs)
        self._check()
        super().__init__(**kwargs)

    def _check(self):
        """One clear ValueError per inconsistent field (also run when a config.json is loaded)."""
        positive_tuples = {
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "window_size": self.window_size,
            "mask_unit_size": self.mask_unit_size,
            "num_heads": self.num_heads,
            "decoder_num_heads": self.decoder_num_heads,
        }
        for name, values in positive_tuples.items():
            if any(v < 1 for v in values):
                raise ValueError(f"`{name}` must hold integers >= 1, got {list(values)}")
        if len(self.depths) == 0 or any(d < 1 for d in self.depths):
            raise ValueError(f"`depths` must be a non-empty list of integers >= 1 (blocks per stage), got {self.depths}")
        if any(d < 0 for d in self.decoder_depths):
            raise ValueError(f"`decoder_depths` must hold integers >= 0 (blocks per decoder stage), got {self.decoder_depths}")
        if self.embed_dim < 1:
            raise ValueError(f"`embed_dim` must be an integer >= 1, got {self.embed_dim}")
        if not self.mlp_ratio > 0 or self.mlp_ratio * self.embed_dim < 1:
            raise ValueError(f"`mlp_ratio` must be > 0 and leave at least one hidden unit, got {self.mlp_ratio}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {value}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"`layer_norm_eps` must be > 0, got {self.layer_norm_eps}")
        if not self.initializer_range >= 0:
            raise ValueError(f"`initializer_range` must be >= 0, got {self.initializer_range}")
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"`depths` {self.depths} and `num_heads` {self.num_heads} must have the same length")
        if len(self.decoder_depths) != len(self.depths) - 1:
            raise ValueError(
                f"`decoder_depths` needs len(depths) - 1 = {len(self.depths) - 1} stages, got {self.decoder_depths}"
            )
        if len(self.decoder_depths) != len(self.decoder_num_heads):
            raise ValueError(
                f"`decoder_depths` {self.decoder_depths} and `decoder_num_heads` {self.decoder_num_heads} "
                "must have the same length"
            )
        for stage, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**stage) % heads:
                raise ValueError(f"encoder stage {stage}: {self.embed_dim * 2**stage} channels not divisible by {heads} heads")
        for stage, heads in enumerate(self.decoder_num_heads):
            dim = self.embed_dim * 2 ** (len(self.depths) - 2 - stage)
            if dim % heads:
                raise ValueError(f"decoder stage {stage}: {dim} channels not divisible by {heads} heads")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"`mask_ratio` must be in [0, 1), got {self.mask_ratio}")
        if self.temporal_aggregation not in ("concat", "mean"):
            raise ValueError(f"`temporal_aggregation` must be 'concat' or 'mean', got {self.temporal_aggregation!r}")
        if self.num_frames < 1:
            raise ValueError(f"`num_frames` must be >= 1, got {self.num_frames}")

    # Derived, read-only quantities (never stored separately, so they cannot disagree with the fields).
    @property
    def num_channels(self) -> int:
        return len(self.band_names)

    @property
    def num_layers(self) -> int:
        return len(self.depths)

    @property
    def hidden_size(self) -> int:
        """Channels of the last encoder stage."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def num_temporal_tokens(self) -> int:
        """Temporal tokens for `num_frames` frames (padded up to a multiple of the temporal patch)."""
        return -(-self.num_frames // self.patch_size[0])

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "STSwinMAEConfig":
        """A named architecture: `"degas-100m"` (the paper's model) or `"degas-tiny"` (tests and demos)."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        # transformers sets keyword overrides (`from_pretrained(path, window_size=7)`) as raw attributes after
        # __init__, skipping its normalisation and `_check`: our own fields go through __init__ instead.
        fields = inspect.signature(cls.__init__).parameters.keys() - {"self", "kwargs"}
        own = {key: kwargs.pop(key) for key in list(kwargs) if key in fields}
        return super().from_dict({**config_dict, **own}, **kwargs)

    def to_dict(self):
        output = super().to_dict()
        output["num_channels"] = self.num_channels  # informative for readers of config.json
        return output


__all__ = ["STSwinMAEConfig"]
