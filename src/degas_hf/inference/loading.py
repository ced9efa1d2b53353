"""Loading a model folder (or a cached Hub id) for inference, with every check a user needs before a long run.

`load_model_for_inference(path_or_repo_id)` returns `(model, processor)` or raises one `ValueError` that says what
was expected and what was found:
- a folder that does not exist and is no Hub id in the local cache;
- a folder without `config.json`, with a garbled one, without safetensors weights, with only pickle weights
  (`pytorch_model.bin`, `*.pt`, `*.pkl`: never unpickled), or with missing, truncated or garbled safetensors;
- weights that are not finite (NaN or Inf: the map would be a confident constant);
- a folder whose segmentation head was never trained (a pretraining folder, `config.architectures` other than
  `STSwinUNetForSemanticSegmentation`, or weights missing from the file and so newly initialised), unless
  `allow_untrained_head=True` (then a warning);
- no image processor (`preprocessor_config.json`) and no normalisation preset, or one whose bands differ from the
  model's.

It is shared by `degas-hf predict` and usable by any command that loads a fine-tuned folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from ..hub.folder import check_safetensors_weights

__all__ = ["SEGMENTATION_ARCHITECTURE", "load_model_for_inference", "read_model_folder", "resolve_model_folder"]

logger = logging.getLogger(__name__)

SEGMENTATION_ARCHITECTURE = "STSwinUNetForSemanticSegmentation"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_model_folder(path_or_repo_id) -> Path:
    """A local folder as it is; otherwise a Hub repo id resolved through huggingface_hub's cache (which works
    offline with `HF_HUB_OFFLINE=1` for a repo downloaded before; online it downloads the repo's configuration,
    code and safetensors files, never pickles)."""
    text = os.fspath(path_or_repo_id)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"Model {text!r} is a file, expected a folder saved with save_pretrained (or a Hub id)")
        return path
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep != "/" and os.sep in text
    if looks_like_path or not _REPO_ID.match(text):
        raise ValueError(f"Model folder {text!r} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        folder = snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.py", "*.md"])
    except HFValidationError as err:
        raise ValueError(f"Model {text!r} is neither a folder nor a valid Hub repo id: {err}") from None
    except Exception as err:  # noqa: BLE001 - offline cache miss, network or auth errors: all one user-facing line
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        where = "in the local Hugging Face cache (offline: HF_HUB_OFFLINE=1)" if offline else "on the Hub"
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"Model {text!r} is not a folder, and was not found {where}: {first_line}") from None
    return Path(folder)


def read_model_folder(path_or_repo_id) -> tuple[Path, dict]:
    """`(folder, config.json as a dict)` of a save_pretrained folder or cached Hub id, after checking that its
    config is a JSON object and its weights are readable safetensors (one ValueError otherwise)."""
    folder = resolve_model_folder(path_or_repo_id)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"Model folder {str(folder)!r} has no config.json (expected a save_pretrained folder)")
    try:
        config = json.loads(config_file.read_text())
        if not isinstance(config, dict):
            raise ValueError(f"expected a JSON object, found {type(config).__name__}")
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(config_file)!r} is not valid JSON: {err}") from None
    check_safetensors_weights(folder, what=f"Model folder {str(folder)!r}")
    return folder, config


def _check_finite(model) -> None:
    import torch

    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"The model's weights are not finite: {name} holds {bad} NaN/Inf value(s); the folder is damaged or "
                "training diverged"
            )


def load_model_for_inference(
    path_or_repo_id,
    preset: str | None = None,
    device=None,
    allow_untrained_head: bool = False,
):
    """Load ST-SwinUNet (or another semantic-segmentation model registered with transformers) and its image
    processor for prediction, after checking the folder (see the module docstring for each refusal).

    Args:
        path_or_repo_id: a folder saved with `save_pretrained`, or a Hub repo id (resolved from the local cache).
        preset (`str`, *optional*): normalisation preset when the folder has no `preprocessor_config.json`.
        device: where to put the model (default: where it loads, the CPU).
        allow_untrained_head (`bool`): accept a folder whose head is untrained (random classes), with a warning.

    Returns:
        `(model, processor)`, the model in eval mode.
    """
    folder, config = read_model_folder(path_or_repo_id)

    import degas_hf  # noqa: F401  (registers the Auto classes)

    from ..models.st_swin_mae.image_processing_st_swin_mae import (
        NORMALIZATION_PRESETS,
        STSwinMAEImageProcessor,
        canonical_band_name,
    )

    architectures = config.get("architectures") or []
    untrained = []
    if config.get("model_type") == "st_swin_mae" and architectures and SEGMENTATION_ARCHITECTURE not in architectures:
        untrained.append(f"it holds {architectures}, not a fine-tuned {SEGMENTATION_ARCHITECTURE}")
    try:
        if config.get("model_type") == "st_swin_mae":
            from ..models.st_swin_mae.modeling_st_swin_mae import STSwinUNetForSemanticSegmentation as model_class
        else:
            from transformers import AutoModelForSemanticSegmentation as model_class
        model, info = model_class.from_pretrained(folder, output_loading_info=True, use_safetensors=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"Cannot load the model from {str(folder)!r}: {first_line}") from None
    newly_initialised = list(info.get("missing_keys") or []) + [k for k, *_ in info.get("mismatched_keys") or []]
    if newly_initialised and not untrained:
        shown = ", ".join(sorted(newly_initialised)[:3]) + (", ..." if len(newly_initialised) > 3 else "")
        untrained.append(f"{len(newly_initialised)} weight(s) are not in the file and were newly initialised ({shown})")
    if untrained:
        message = f"Model folder {str(folder)!r} has no trained segmentation head: {untrained[0]}"
        if not allow_untrained_head:
            raise ValueError(message + "; its classes would be random (--allow-untrained-head to predict anyway)")
        logger.warning("%s; predicting anyway (allow_untrained_head): the classes are random", message)
    _check_finite(model)
    if device is not None:
        model = model.to(device)
    model.eval()

    if (folder / "preprocessor_config.json").is_file():
        try:
            processor = STSwinMAEImageProcessor.from_pretrained(folder)
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"Cannot load the image processor from {str(folder)!r}: {err}") from None
    elif preset is not None:
        processor = STSwinMAEImageProcessor.from_preset(preset, band_names=model.config.band_names)
    else:
        raise ValueError(
            f"Model folder {str(folder)!r} has no preprocessor_config.json; pass a normalisation preset "
            f"(one of {sorted(NORMALIZATION_PRESETS)})"
        )
    model_bands = [canonical_band_name(b) for b in getattr(model.config, "band_names", processor.band_names)]
    if [canonical_band_name(b) for b in processor.band_names] != model_bands:
        raise ValueError(
            f"The processor's bands {processor.band_names} differ from the model's {model.config.band_names}"
        )
    return model, processor
