"""`degas-hf export`: a model folder as an ONNX file or a `torch.export` program (.pt2), checked against eager.

    degas-hf export MODEL_FOLDER --output model.onnx [--format onnx] [--frames T] [--height H] [--width W]
    degas-hf export MODEL_FOLDER --format torch-export --output model.pt2

What is exported is the inference graph of one model class, chosen from the folder's `config.architectures`
(`--head` overrides): a fine-tuned ST-SwinUNet folder gives the segmentation model, `pixel_values -> logits
(B, num_labels, H, W)`; a pretraining or encoder folder gives the encoder, `pixel_values -> last_hidden_state
(B, N, C), pooler_output (B, C)`. The input is `pixel_values (B, C, T, H, W)` float32, normalised as the folder's
image processor does. The batch size is dynamic (`--static-batch` fixes it); frames, height and width are fixed
at export time (the window partition and padding are planned for them): export once per input size you serve.

Before the file is kept, the exported graph is run on a random input of another batch size and compared with the
eager model (maximum absolute difference <= `--tolerance`, default 1e-4; ONNX needs onnxruntime for this, else the
check is skipped with a note, or `--no-check`). The ONNX graph is traced with the eager attention path (the
SDPA kernel's ONNX decomposition fails for a dynamic batch); the two paths compute the same numbers.

The file is written to a temporary name and renamed; an existing output is replaced only with `--overwrite`.
ONNX export needs the optional extra `onnx` (`pip install 'degas-hf[onnx]'`: onnx, onnxscript, onnxruntime).

This module imports only the standard library at module level (fast `--help`); torch is imported by `run`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ._arguments import int_at_least

FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}
HEADS = ("auto", "encoder", "segmentation")
SEGMENTATION_ARCHITECTURE = "STSwinUNetForSemanticSegmentation"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_FOLDER", help="folder saved with save_pretrained (or a cached Hub id)")
    parser.add_argument("--output", "-o", required=True, help="file to write: .onnx for onnx, .pt2 for torch-export")
    parser.add_argument("--format", choices=tuple(FORMATS), default="onnx", help="onnx (default) or torch-export")
    parser.add_argument("--head", choices=HEADS, default="auto",
                        help="what to export: the segmentation model or the encoder (default: from config.architectures)")
    parser.add_argument("--frames", type=int_at_least(1), default=None, help="dates T (default: config.num_frames)")
    parser.add_argument("--height", type=int_at_least(1), default=None, help="pixels (default: config.image_size)")
    parser.add_argument("--width", type=int_at_least(1), default=None, help="pixels (default: config.image_size)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=2,
                        help="example batch for tracing (default 2; the batch stays dynamic unless --static-batch)")
    parser.add_argument("--static-batch", action="store_true", help="fix the batch size to --batch-size")
    parser.add_argument("--tolerance", type=_positive_float, default=1e-4,
                        help="largest absolute difference from eager accepted by the check (default 1e-4)")
    parser.add_argument("--no-check", action="store_true", help="do not compare the exported graph with eager")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")


def _error(message: str) -> int:
    print(f"degas-hf export: error: {message}", file=sys.stderr)
    return 2


def graph_module(model, head: str):
    """`model` wrapped to take `pixel_values` and return plain tensors (what an exported graph can carry): the
    logits for head="segmentation", else (last_hidden_state, pooler_output). Its `output_names` name them."""
    import torch

    class SegmentationGraph(torch.nn.Module):
        output_names = ("logits",)

        def __init__(self, segmenter):
            super().__init__()
            self.segmenter = segmenter

        def forward(self, pixel_values):
            return (self.segmenter(pixel_values=pixel_values, return_dict=True).logits,)

    class EncoderGraph(torch.nn.Module):
        output_names = ("last_hidden_state", "pooler_output")

        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, pixel_values):
            output = self.encoder(pixel_values=pixel_values, return_dict=True)
            return output.last_hidden_state, output.pooler_output

    return (SegmentationGraph(model) if head == "segmentation" else EncoderGraph(model)).eval()


def load_for_export(model_path, head: str = "auto"):
    """The model of `head` ("auto", "encoder" or "segmentation") from a save_pretrained folder, in eval mode, after
    the folder checks of `degas-hf predict` (config, safetensors only, readable weights). Returns (model, head)."""
    from ..inference.loading import read_model_folder

    folder, config = read_model_folder(model_path)
    if config.get("model_type") != "st_swin_mae":
        raise ValueError(f"Model folder {str(folder)!r} is not an ST-SwinMAE model (model_type {config.get('model_type')!r})")
    architectures = config.get("architectures") or []
    if head == "auto":
        head = "segmentation" if SEGMENTATION_ARCHITECTURE in architectures else "encoder"
    if head == "segmentation" and SEGMENTATION_ARCHITECTURE not in architectures:
        raise ValueError(
            f"--head segmentation: the folder holds {architectures or 'no architectures'}, not a fine-tuned "
            f"{SEGMENTATION_ARCHITECTURE} (its head would be random); export the encoder instead"
        )
    from ..models.st_swin_mae.modeling_st_swin_mae import STSwinMAEModel, STSwinUNetForSemanticSegmentation

    model_class = STSwinUNetForSemanticSegmentation if head == "segmentation" else STSwinMAEModel
    try:
        model = model_class.from_pretrained(folder, use_safetensors=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"Cannot load the model from {str(folder)!r}: {first_line}") from None
    return model.eval(), head


def export_model(
    model,
    output,
    *,
    format: str = "onnx",
    head: str = "encoder",
    frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 2,
    dynamic_batch: bool = True,
    check: bool = True,
    tolerance: float = 1e-4,
    overwrite: bool = False,
) -> dict:
    """Exports `model` (an `STSwinMAEModel`, or an `STSwinUNetForSemanticSegmentation` with head="segmentation") to
    `output` and returns a report: {"output", "format", "input_shape", "output_names", "max_abs_diff" (None when not
    checked), "checked_with"}. Raises ValueError for a bad request or an export that does not match eager."""
    import torch

    if format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
    output = Path(output)
    if output.suffix.lower() != FORMATS[format]:
        raise ValueError(f"--output must end with {FORMATS[format]} for --format {format}, got {output.name!r}")
    if not output.parent.is_dir():
        raise ValueError(f"--output: folder {str(output.parent)!r} does not exist")
    if output.is_dir():
        raise ValueError(f"--output {str(output)!r} is a folder, expected a file name")
    if output.exists() and not overwrite:
        raise ValueError(f"--output {str(output)!r} exists; pass --overwrite to replace it")
    if format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as err:
            raise ValueError(f"ONNX export needs the `onnx` extra (pip install 'degas-hf[onnx]'): {err}") from None

    config = model.config
    frames = frames or config.num_frames
    height = height or config.image_size[0]
    width = width or config.image_size[1]
    if head == "segmentation" and config.temporal_aggregation == "concat" and frames != config.num_frames:
        raise ValueError(f"--frames {frames}: this model (temporal_aggregation='concat') takes {config.num_frames} dates")
    model = model.eval()
    if format == "onnx":
        # The SDPA kernel's ONNX decomposition fails for a dynamic batch; the eager path computes the same numbers.
        # Switched back in `finally`, so the caller's model is left as it was.
        previous = config._attn_implementation
        model.set_attn_implementation("eager")
    graph = graph_module(model, head)
    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, config.num_channels, frames, height, width)
    example = torch.randn(shape, generator=generator)
    batch = torch.export.Dim("batch", min=1, max=4096) if dynamic_batch else None
    dynamic_shapes = {"pixel_values": {0: batch}} if dynamic_batch else None

    temporary = output.with_name(f".{output.name}.{os.getpid()}.tmp{output.suffix}")
    try:
        # (Not under no_grad: the ONNX decomposition pass fails on a program traced without grad mode.)
        if format == "onnx":
            program = torch.onnx.export(
                graph, (example,), dynamo=True, dynamic_shapes=dynamic_shapes, input_names=["pixel_values"],
                output_names=list(graph.output_names), optimize=True, verbose=False,
            )
            program.save(str(temporary))
        else:
            program = torch.export.export(graph, (example,), dynamic_shapes=dynamic_shapes)
            torch.export.save(program, str(temporary))
        report = {
            "output": str(output), "format": format, "head": head, "input_shape": ["batch" if dynamic_batch else batch_size,
            *shape[1:]], "output_names": list(graph.output_names), "max_abs_diff": None, "checked_with": None,
        }
        if check:
            check_batch = batch_size + 1 if dynamic_batch else batch_size
            probe = torch.randn((check_batch, *shape[1:]), generator=generator)
            with torch.no_grad():
                expected = [t.numpy() for t in graph(probe)]
            actual, report["checked_with"] = _run_exported(format, temporary, program, probe)
            if actual is not None:
                import numpy as np

                diff = max(float(np.abs(a - e).max()) for a, e in zip(actual, expected))
                report["max_abs_diff"] = diff
                if not diff <= tolerance:
                    raise ValueError(
                        f"the exported graph differs from the eager model by {diff:.3g} (> tolerance {tolerance}); "
                        "nothing was written"
                    )
        os.replace(temporary, output)
    finally:
        if temporary.exists():
            temporary.unlink()
        if format == "onnx":
            model.set_attn_implementation(previous)
    return report


def _run_exported(format: str, path: Path, program, probe):
    """Runs the export: the written ONNX file with onnxruntime; for torch-export, the exported program."""
    import torch

    if format == "onnx":
        try:
            import onnxruntime
        except ImportError:
            return None, "not checked: onnxruntime is not installed"
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"pixel_values": probe.numpy()}), f"onnxruntime {onnxruntime.__version__}"
    # The in-memory program that was just saved: reloading a .pt2 may unpickle, and degas-hf never unpickles.
    with torch.no_grad():
        return [t.numpy() for t in program.module()(probe)], f"the exported program (torch {torch.__version__})"


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.suffix.lower() != FORMATS[args.format]:
        return _error(f"--output must end with {FORMATS[args.format]} for --format {args.format}, got {output.name!r}")
    if output.is_dir():
        return _error(f"--output {str(output)!r} is a folder, expected a file name")
    if output.exists() and not args.overwrite:
        return _error(f"--output {str(output)!r} exists; pass --overwrite to replace it")
    if not output.parent.is_dir():
        return _error(f"--output: folder {str(output.parent)!r} does not exist")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a "Loading weights" bar would sit between the one-line messages
    try:
        model, head = load_for_export(args.model, args.head)
        report = export_model(
            model, output, format=args.format, head=head, frames=args.frames, height=args.height, width=args.width,
            batch_size=args.batch_size, dynamic_batch=not args.static_batch, check=not args.no_check,
            tolerance=args.tolerance, overwrite=args.overwrite,
        )
    except ValueError as err:
        return _error(str(err))
    shape = "x".join(str(s) for s in report["input_shape"])
    print(f"{args.format}: {report['output']} ({head}: pixel_values {shape} -> {', '.join(report['output_names'])})")
    if report["max_abs_diff"] is not None:
        print(f"checked against eager with {report['checked_with']}: max abs difference {report['max_abs_diff']:.2e}")
    elif report["checked_with"]:
        print(report["checked_with"])
    return 0
