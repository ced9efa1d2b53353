"""`degas-hf predict`: sliding-window prediction over GeoTIFF scenes, written as a georeferenced GeoTIFF.

    degas-hf predict --model DIR_OR_HUB_ID --output OUT.tif INPUT.tif [INPUT2.tif ...]

One input file per date (same CRS, transform and size), or one file holding several dates (`--frames-per-file`).
Writes OUT.tif (class map, uint8 with a colour table and class names, nodata 255; or float32 values for regression
models, nodata NaN), optionally OUT.probabilities.tif, and a PNG quicklook OUT.png beside it. Bad input exits with
status 2 and one line on stderr; no partial output is left behind (SIGTERM included; temporaries of a run killed
with SIGKILL are removed by the next run of the same output).

This module imports only the standard library at module level, so `degas-hf predict --help` and argument errors
are immediate; torch and the model code are imported by `run`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from ._arguments import band_name_list, int_at_least

PRECISION_CHOICES = ("fp32", "bf16", "fp16")


def _window(text: str):
    try:
        parts = [int(p) for p in text.lower().replace("x", ",").split(",") if p]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW pixels, got {text!r}") from None
    if not parts or len(parts) > 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW pixels (>= 1), got {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="GeoTIFF(s): one per date, in date order")
    parser.add_argument("--model", required=True,
                        help="folder saved with save_pretrained (ST-SwinUNet), or a Hub repo id (from the local cache "
                             "when offline)")
    parser.add_argument("--output", "-o", required=True,
                        help="output GeoTIFF, named .tif or .tiff (its folder must exist); OUT.png and "
                             "OUT.probabilities.tif go beside it")
    parser.add_argument(
        "--band-names", nargs="+", default=None, metavar="NAME",
        help="names of the input bands, in file order: space- or comma-separated (default: the band descriptions)",
    )
    parser.add_argument("--frames-per-file", type=int_at_least(1), default=1,
                        help="dates per input file, bands date-major")
    parser.add_argument(
        "--preset", default=None,
        help="normalisation preset when the model folder has no preprocessor_config.json (e.g. ssl4eo-s12-l1c)",
    )
    parser.add_argument("--window", type=_window, default=256, help="window size, N or HxW (default 256)")
    parser.add_argument("--overlap", type=int_at_least(0), default=64,
                        help="overlap between windows in pixels (default 64)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=8, help="windows per forward (default 8)")
    parser.add_argument("--blend", choices=("cosine", "linear", "none"), default="cosine", help="overlap blending")
    parser.add_argument("--probabilities", action="store_true", help="also write OUT.probabilities.tif")
    parser.add_argument(
        "--nodata-policy", choices=("all", "any"), default="all",
        help="output nodata where all dates (default) or any date lack data",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--devices", type=int_at_least(1), default=1,
                        help="number of GPUs sharing the scene (from --device's index; default 1)")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default=None,
                        help="forward precision (autocast); default bf16 on CUDA, fp32 on the CPU")
    parser.add_argument("--num-workers", type=int_at_least(0), default=None,
                        help="threads reading and normalising windows (default: min(8, CPUs) with a GPU, CPUs/4 on the CPU)")
    parser.add_argument("--compile", action="store_true", help="compile the model with torch.compile first")
    parser.add_argument("--cog", action="store_true", help="write Cloud-Optimized GeoTIFFs (with overviews)")
    parser.add_argument("--allow-untrained-head", action="store_true",
                        help="predict with a folder whose segmentation head is untrained (random classes)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs (OUT.tif, OUT.probabilities.tif, OUT.png) that already exist")
    parser.add_argument("--no-quicklook", action="store_true", help="do not write the PNG quicklook")
    parser.add_argument("--quicklook-size", type=int_at_least(16), default=1024,
                        help="long side of the quicklook in pixels")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


class _Terminated(BaseException):
    """Raised in the main thread by SIGTERM, so that every output's temporary file is removed on the way out."""


def _on_sigterm(signum, frame):
    raise _Terminated()


# Python argument names in library errors, and the flags a command-line user typed instead.
FLAG_NAMES = {
    "`band_names`": "--band-names",
    "`frames_per_file`": "--frames-per-file",
    "frames_per_file=": "--frames-per-file ",
    "`batch_size`": "--batch-size",
    "`nodata_policy`": "--nodata-policy",
    "`num_workers`": "--num-workers",
    "allow_untrained_head": "--allow-untrained-head",
}


def _error(message: str) -> int:
    for name, flag in FLAG_NAMES.items():
        message = message.replace(name, flag)
    print(f"degas-hf predict: error: {message}", file=sys.stderr)
    return 2


def _check_arguments(args) -> str | None:
    """Argument mistakes argparse cannot see; returns the error line, or None."""
    names = band_name_list(args.band_names)
    if args.band_names is not None:
        files = [n for n in names if n.lower().endswith((".tif", ".tiff")) or os.path.isfile(n)]
        if files:
            return (f"--band-names took {files[0]!r}, which is a file name: put the INPUT files before --band-names "
                    "or end the names with --")
        if not names:
            return "--band-names: expected at least one name"
    if isinstance(args.window, int):
        smallest = args.window
    else:
        smallest = min(args.window)
    if args.overlap >= smallest:
        return f"--overlap {args.overlap} must be smaller than --window {args.window}"
    return None


def run(args: argparse.Namespace) -> int:
    problem = _check_arguments(args)
    if problem:
        return _error(problem)
    band_names = band_name_list(args.band_names)

    import torch

    from ..inference.predict import load_model_and_processor, output_paths, predict_geotiff
    from ..inference.sliding_window import resolve_devices, resolve_precision
    from ..io.geotiff import check_output_path

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.no_progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # "Loading weights" bars
    try:  # before loading anything: each message names the flag
        outputs = output_paths(args.output, probabilities=args.probabilities, quicklook=not args.no_quicklook)
        check_output_path(args.output)
    except ValueError as err:
        return _error(f"--output: {err}")
    existing = [str(path) for path in outputs.values() if path.exists()]
    if existing and not args.overwrite:
        return _error(f"--output: {', '.join(existing)} already exist(s); pass --overwrite to replace")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        devices = resolve_devices(device, args.devices if args.devices > 1 else None)
    except ValueError as err:
        flag = f"--devices {args.devices}" if args.devices > 1 else f"--device {device}"
        return _error(f"{flag}: {err}")
    try:
        precision = resolve_precision(args.precision, devices[0])
    except ValueError as err:
        return _error(f"--precision {args.precision}: {err}")
    if args.compile:
        try:
            from ..training.compile import compile_model  # noqa: F401
        except ImportError as err:
            return _error(f"--compile: torch.compile support is not available here ({err})")

    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _in_main_thread() else None
    try:
        model, processor = load_model_and_processor(
            args.model, preset=args.preset, device=devices[0], allow_untrained_head=args.allow_untrained_head
        )
        written = predict_geotiff(
            model, processor, args.inputs, args.output, band_names=band_names,
            frames_per_file=args.frames_per_file, window_size=args.window, overlap=args.overlap,
            batch_size=args.batch_size, blend=args.blend, probabilities=args.probabilities,
            nodata_policy=args.nodata_policy, device=devices[0], quicklook=not args.no_quicklook,
            quicklook_size=args.quicklook_size, progress=not args.no_progress, precision=precision,
            devices=devices if len(devices) > 1 else None, num_workers=args.num_workers, cog=args.cog,
            compile=args.compile,
        )
    except ValueError as err:
        return _error(str(err))
    except _Terminated:
        print("degas-hf predict: terminated (SIGTERM); no output was written", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
