"""degas-hf: ST-SwinMAE / ST-SwinUNet (Degas 100M) for satellite image time series, as Transformers models.

Importing the package registers the configuration and models with the Auto classes, so
`AutoModel.from_pretrained(folder)` works on a saved folder without `trust_remote_code`.

The one exception is the `degas-hf` console script (`degas_hf_cli`), which defers the registration (it imports
transformers and torch) until a command runs, so that `--help` and argument errors are immediate. The public names
below are then loaded on first access, and `register_auto_classes()` can be called at any time (it is idempotent).
"""

import sys

__version__ = "0.1.0"

__all__ = [
    "STSwinMAEConfig",
    "STSwinMAEModel",
    "STSwinMAEForPreTraining",
    "STSwinUNetForSemanticSegmentation",
    "STSwinMAEImageProcessor",
    "register_auto_classes",
]

_registered = False


def register_auto_classes() -> None:
    """Register `st_swin_mae` with AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForSemanticSegmentation
    and AutoImageProcessor, and bind the public names of this package."""
    global _registered
    if _registered:
        return
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForPreTraining,
        AutoModelForSemanticSegmentation,
    )

    from .models.st_swin_mae import (
        STSwinMAEConfig,
        STSwinMAEForPreTraining,
        STSwinMAEImageProcessor,
        STSwinMAEModel,
        STSwinUNetForSemanticSegmentation,
    )

    AutoConfig.register(STSwinMAEConfig.model_type, STSwinMAEConfig, exist_ok=True)
    AutoModel.register(STSwinMAEConfig, STSwinMAEModel, exist_ok=True)
    AutoModelForPreTraining.register(STSwinMAEConfig, STSwinMAEForPreTraining, exist_ok=True)
    AutoModelForSemanticSegmentation.register(STSwinMAEConfig, STSwinUNetForSemanticSegmentation, exist_ok=True)
    AutoImageProcessor.register(STSwinMAEConfig, image_processor_classes={"pil": STSwinMAEImageProcessor}, exist_ok=True)
    STSwinMAEImageProcessor.register_for_auto_class("AutoImageProcessor")  # saved folders carry the processor code
    globals().update(
        STSwinMAEConfig=STSwinMAEConfig,
        STSwinMAEModel=STSwinMAEModel,
        STSwinMAEForPreTraining=STSwinMAEForPreTraining,
        STSwinUNetForSemanticSegmentation=STSwinUNetForSemanticSegmentation,
        STSwinMAEImageProcessor=STSwinMAEImageProcessor,
    )
    _registered = True


def __getattr__(name: str):
    if name in __all__:
        register_auto_classes()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _registration_deferred() -> bool:
    entry_point = sys.modules.get("degas_hf_cli")
    return bool(getattr(entry_point, "DEFER_REGISTRATION", False))


if not _registration_deferred():
    register_auto_classes()
