"""Benchmark `degas-hf predict` against the targets of issue 11.

    python benchmarks/bench_predict.py                 # CPU: pipeline vs the previous code, quicklook, memory
    python benchmarks/bench_predict.py --gpu           # GPU: whole prediction vs bare bf16 forward, 10980^2 CLI
    python benchmarks/bench_predict.py --pipeline-size 1024 --quicklook-scene 512 --sizes 512 1024   # a quick look

CPU sections (written to benchmarks/results/predict.md):
1. **Pipeline rate**: read, normalise, blend and write a synthetic 6-band, 4-date uint16 scene (one tiled GeoTIFF per
   date) with a model that costs nothing (its "logits" are a view of the input), so only the pipeline is timed:
   the current `SlidingWindowPredictor` against the previous implementation (commit 7dcb4b1's sliding_window.py
   with its GeoTIFF reading and writing, io/geotiff.py and predict.py's GeoTiffSink, loaded from git into temporary
   modules for this comparison only; also 7dcb4b1's sliding_window.py over today's I/O), alternating runs in one
   process, best of `--repeats`. Target: >= 1.6x at 4096^2.
2. **Quicklook overhead**: `predict_geotiff` with and without the quicklook (same zero-cost model) on a tiled,
   pixel-interleaved, deflate-compressed scene; and, for reference, the previous way of making it (decimated
   re-reads of the written files, `save_quicklook`). Target: <= 20 %.
3. **Peak memory**: `degas-hf predict` (console-script entry, degas-tiny, quicklook on) in a subprocess on growing
   scenes; its own peak RSS (VmHWM). Target: flat (8192^2 within 1.2x of 4096^2).

GPU sections (with `--gpu`, written to benchmarks/results/predict_gpu.md; degas-100m ST-SwinUNet, 3 classes,
random weights, window 256, overlap 32, batch 32):
4. `predict_geotiff` in process, quicklook included, bf16 (the default on CUDA), against the bare bf16 forward
   (+ softmax) over the same number of windows. Target: within 1.25x at 4096^2 x 4 dates.
5. `degas-hf predict` as a user runs it (start-up, model load, quicklook) on a 10980^2 x 4-date tile. Target: < 30 s.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BANDS = ["B02", "B03", "B04", "B8A", "B11", "B12"]
PREVIOUS_COMMIT = "7dcb4b1"


# ------------------------------------------------------------------------------------------------------ inputs


def write_scene(folder: Path, size: int, num_dates: int = 4, strip: int = 512, compress=None, tag: str = "") -> list[Path]:
    """Synthetic smooth fields plus noise, uint16, one tiled pixel-interleaved GeoTIFF per date, written in strips."""
    from rasterio.transform import from_origin

    from degas_hf.io import GeoTiffWriter

    paths = []
    rng = np.random.default_rng(0)
    cols = np.arange(size, dtype=np.float32)[None, :]
    for t in range(num_dates):
        path = folder / f"scene_{size}{tag}_t{t}.tif"
        with GeoTiffWriter(path, size, size, len(BANDS), "uint16", crs="EPSG:32633",
                           transform=from_origin(300000, 5900000, 10, 10), nodata=0, band_names=BANDS,
                           compress=compress) as writer:
            for top in range(0, size, strip):
                rows = np.arange(top, min(top + strip, size), dtype=np.float32)[:, None]
                field = np.sin(cols / 97.0 + t) * np.cos(rows / 131.0) + np.sin((rows + cols) / 53.0)
                block = np.stack([1500 + 600 * field * (1 + 0.1 * b) for b in range(len(BANDS))])
                block += rng.normal(0, 50, size=block.shape).astype(np.float32)
                writer.write(np.clip(block, 1, 10000).astype(np.uint16), row_off=top)
        paths.append(path)
    return paths


def save_model(folder: Path, preset: str = "degas-tiny") -> Path:
    from degas_hf.models.st_swin_mae.configuration_st_swin_mae import STSwinMAEConfig
    from degas_hf.models.st_swin_mae.image_processing_st_swin_mae import STSwinMAEImageProcessor
    from degas_hf.models.st_swin_mae.modeling_st_swin_mae import STSwinUNetForSemanticSegmentation

    torch.manual_seed(0)
    model = STSwinUNetForSemanticSegmentation(STSwinMAEConfig.from_preset(preset, num_labels=3))
    model.save_pretrained(folder)
    STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=BANDS).save_pretrained(folder)
    return folder


class ZeroCostModel(torch.nn.Module):
    """Costs nothing: its logits (B, K, h, w) are a view of the input's first K channels of date 0. The pipeline
    around it (read, normalise, softmax, blend, write) is all that is timed."""

    def __init__(self, num_labels: int = 3):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the predictor a dtype and a device
        self.num_labels = num_labels

    def forward(self, pixel_values, valid_mask=None):
        return {"logits": pixel_values[:, : self.num_labels, 0]}


def _previous_module(path: str, name: str, replacements: dict[str, str]):
    """`path` as of PREVIOUS_COMMIT, loaded from git into a temporary module `name` (relative imports rewritten)."""
    try:
        source = subprocess.run(["git", "show", f"{PREVIOUS_COMMIT}:{path}"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise SystemExit(f"the comparison needs git and commit {PREVIOUS_COMMIT} in {ROOT}: {err}") from None
    for old, new in replacements.items():
        source = source.replace(old, new)
    folder = Path(tempfile.mkdtemp(prefix="previous_predict_"))
    file = folder / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def previous_implementation():
    """The sliding-window module as of PREVIOUS_COMMIT, loaded from git into a temporary module."""
    return _previous_module("src/degas_hf/inference/sliding_window.py", "previous_sliding_window", {})


def previous_io():
    """`(GeoTiffTimeSeries, GeoTiffSink)` as of PREVIOUS_COMMIT: the reading and writing the previous pipeline did
    (per-date reads stacked into one array; strips written as they came, so GDAL compressed tiles twice)."""
    geotiff = _previous_module("src/degas_hf/io/geotiff.py", "previous_geotiff",
                               {"from ..models.": "from degas_hf.models."})
    if "previous_sliding_window" not in sys.modules:
        previous_implementation()
    predict = _previous_module("src/degas_hf/inference/predict.py", "previous_predict", {
        "from ..io.geotiff import": "from previous_geotiff import",
        "from ..models.": "from degas_hf.models.",
        "from .quicklook import": "from degas_hf.inference.quicklook import",
        "from .sliding_window import": "from previous_sliding_window import",
    })
    return geotiff.GeoTiffTimeSeries, predict.GeoTiffSink


def _processor():
    from degas_hf.models.st_swin_mae.image_processing_st_swin_mae import STSwinMAEImageProcessor

    return STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=BANDS)


# ------------------------------------------------------------------------------------------------ CPU sections


def time_pipeline(predictor_class, inputs, output: Path, args, io=None, cpu_seconds: list | None = None,
                  **kwargs) -> float:
    """Seconds for one whole run (read, normalise, zero-cost model, blend, write) into GeoTIFF sinks; `io` is
    `(GeoTiffTimeSeries, GeoTiffSink)` classes (default: today's); the run's process CPU time is appended to
    `cpu_seconds`."""
    import rasterio

    from degas_hf.inference import GeoTiffSink, output_paths
    from degas_hf.io import GeoTiffTimeSeries

    series_class, sink_class = io or (GeoTiffTimeSeries, GeoTiffSink)
    predictor = predictor_class(ZeroCostModel(), _processor(), window_size=args.window, overlap=args.overlap,
                                batch_size=args.batch_size, progress=False, **kwargs)
    start, cpu = time.perf_counter(), time.process_time()
    with rasterio.Env(GDAL_CACHEMAX=128), series_class(inputs) as source, contextlib.ExitStack() as stack:
        predictor.predict(source, sink=sink_class(output_paths(output, quicklook=False), source, stack))
    if cpu_seconds is not None:
        cpu_seconds.append(time.process_time() - cpu)  # all threads of this process
    return time.perf_counter() - start


def pipeline_section(tmp: Path, args) -> list[str]:
    from degas_hf.inference import SlidingWindowPredictor

    from degas_hf.inference.sliding_window import default_num_workers

    previous = previous_implementation()
    inputs = write_scene(tmp, args.pipeline_size)
    default = default_num_workers("cpu")
    previous_label = (f"previous ({PREVIOUS_COMMIT}: sliding_window.py and its GeoTIFF reading/writing, one reader "
                      "thread)")
    mixed_label = f"{PREVIOUS_COMMIT}'s sliding_window.py over today's GeoTIFF reading/writing"
    variants = {previous_label: (previous.SlidingWindowPredictor, {"io": previous_io()}),
                mixed_label: (previous.SlidingWindowPredictor, {}),
                f"current, num_workers={default} (the CPU default)": (SlidingWindowPredictor, {})}
    for workers in sorted({2, os.cpu_count() or 1} - {default}):
        variants[f"current, num_workers={workers}"] = (SlidingWindowPredictor, {"num_workers": workers})
    times = {label: [] for label in variants}
    cpu = {label: [] for label in variants}
    for _ in range(args.repeats):  # alternating, so that a change of load hits every variant alike
        for label, (predictor_class, kwargs) in variants.items():
            times[label].append(time_pipeline(predictor_class, inputs, tmp / "out.tif", args, cpu_seconds=cpu[label],
                                              **kwargs))
        print(f"pipeline {args.pipeline_size}^2: " + ", ".join(f"{k}: {v[-1]:.2f} s" for k, v in times.items()),
              flush=True)
    for path in inputs:
        path.unlink()
    megapixels = args.pipeline_size**2 / 1e6
    best = {k: min(v) for k, v in times.items()}
    lines = [
        f"### Pipeline rate (zero-cost model), {args.pipeline_size}^2 x 4 dates x 6 bands uint16",
        "",
        f"Runs alternate; `uptime` load average before: {args.load_before}. Speed-up: best wall time against the "
        "previous pipeline's (first row); next column: against the previous sliding window run over today's GeoTIFF "
        "I/O. CPU: the process's CPU seconds (all threads) per run, median (less sensitive to other jobs than wall "
        "time, but not the target).",
        "",
        "| implementation | runs (s) | best (s) | Mpx/s | speed-up | vs 2nd row | CPU s (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, values in times.items():
        lines.append(f"| {label} | {', '.join(f'{t:.2f}' for t in values)} | {best[label]:.2f} | "
                     f"{megapixels / best[label]:.2f} | {best[previous_label] / best[label]:.2f}x | "
                     f"{best[mixed_label] / best[label]:.2f}x | {float(np.median(cpu[label])):.2f} |")
    return lines + [""]


def quicklook_section(tmp: Path, args) -> list[str]:
    import rasterio

    from degas_hf.inference import predict_geotiff
    from degas_hf.inference.quicklook import save_quicklook
    from degas_hf.io import GeoTiffTimeSeries

    size = args.quicklook_scene
    inputs = write_scene(tmp, size, compress="deflate", tag="_deflate")
    runs = {"no quicklook": [], "quicklook": []}
    for _ in range(args.repeats):
        for label, quicklook in (("no quicklook", False), ("quicklook", True)):
            start = time.perf_counter()
            predict_geotiff(ZeroCostModel(), _processor(), inputs, tmp / f"q_{quicklook}.tif", window_size=args.window,
                            overlap=args.overlap, batch_size=args.batch_size, quicklook=quicklook, progress=False)
            runs[label].append(time.perf_counter() - start)
        print(f"quicklook {size}^2: without {runs['no quicklook'][-1]:.2f} s, with {runs['quicklook'][-1]:.2f} s",
              flush=True)
    best = {k: min(v) for k, v in runs.items()}
    lines = [
        f"### Quicklook overhead, {size}^2 x 4 dates, tiled, pixel-interleaved, deflate-compressed inputs",
        "",
        "| run | runs (s) | best (s) | vs no quicklook |",
        "|---|---|---|---|",
    ]
    for label, values in runs.items():
        lines.append(f"| `predict_geotiff`, {label} | {', '.join(f'{t:.2f}' for t in values)} | {best[label]:.2f} | "
                     f"{best[label] / best['no quicklook']:.2f}x |")
    if not args.skip_previous_quicklook:
        start = time.perf_counter()  # the previous way: decimated re-reads of the inputs and of the written map
        with rasterio.Env(GDAL_CACHEMAX=128), GeoTiffTimeSeries(inputs) as source, \
                GeoTiffTimeSeries([tmp / "q_True.tif"]) as predicted:
            save_quicklook(tmp / "previous_quicklook.png", source, predicted, [2, 1, 0], nodata=255)
        previous = time.perf_counter() - start
        print(f"previous quicklook alone: {previous:.2f} s", flush=True)
        lines.append(f"| previous quicklook alone (decimated re-reads, {PREVIOUS_COMMIT}) | {previous:.2f} | "
                     f"{previous:.2f} | +{previous / best['no quicklook']:.2f}x of the run |")
    for path in inputs:
        path.unlink()
    return lines + [""]


def cli_peak_memory(model_dir: Path, inputs: list[Path], output: Path, args, device: str = "cpu",
                    extra: tuple = ()) -> tuple[float, float]:
    """Peak RSS (MiB) and wall time (s) of `degas-hf predict` in a subprocess, started as the console script does.

    The peak is the child's own high-water mark (VmHWM in /proc), polled until it exits. `ru_maxrss` from wait4
    would be wrong here: Linux carries the parent's high-water mark over fork and exec.
    """
    command = [sys.executable, "-c", "import sys; from degas_hf_cli import main; sys.exit(main())", "predict",
               "--model", str(model_dir), "--output", str(output), *map(str, inputs), "--window", str(args.window),
               "--overlap", str(args.overlap), "--batch-size", str(args.batch_size), "--no-progress",
               "--device", device, *extra]
    return _peak_memory(command)


def zero_cost_peak_memory(inputs: list[Path], output: Path, args) -> tuple[float, float]:
    """Peak RSS (MiB) and wall time (s) of `predict_geotiff` with the zero-cost model (quicklook on) in a
    subprocess: the pipeline's own memory, without a model's."""
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_predict as b; "
              "from degas_hf.inference import predict_geotiff; "
              f"predict_geotiff(b.ZeroCostModel(), b._processor(), {[str(p) for p in inputs]!r}, {str(output)!r}, "
              f"window_size={args.window}, overlap={args.overlap}, batch_size={args.batch_size}, progress=False)")
    return _peak_memory([sys.executable, "-c", script])


def _peak_memory(command: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_kib = 0
    while process.poll() is None:
        try:
            with open(f"/proc/{process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peak_kib = max(peak_kib, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(process.stderr.read().decode()[-2000:])
    return peak_kib / 1024, wall


def memory_section(tmp: Path, args) -> list[str]:
    model_dir = save_model(tmp / "tiny") if args.memory_model == "tiny" else None
    rows = []
    for size in args.sizes:
        inputs = write_scene(tmp, size)
        if model_dir is not None:
            peak, wall = cli_peak_memory(model_dir, inputs, tmp / f"mem_{size}.tif", args)
        else:
            peak, wall = zero_cost_peak_memory(inputs, tmp / f"mem_{size}.tif", args)
        print(f"memory {size}^2: peak {peak:.0f} MiB, {wall:.1f} s", flush=True)
        rows.append((size, peak, wall))
        for path in inputs:
            path.unlink()
    what = ("`degas-hf predict` (degas-tiny, quicklook on, CPU)" if model_dir is not None else
            "`predict_geotiff` with the zero-cost model (the pipeline's own memory, quicklook on, CPU)")
    lines = [
        f"### Peak memory of {what}",
        "",
        "| scene | peak RSS (MiB) | vs smallest | wall (s) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s}x{s} | {p:.0f} | {p / rows[0][1]:.2f}x | {w:.1f} |" for s, p, w in rows]
    return lines + [""]


# ------------------------------------------------------------------------------------------------ GPU sections


def gpu_section(tmp: Path, args) -> list[str]:
    from degas_hf.inference import load_model_and_processor, predict_geotiff, window_starts

    device = torch.device("cuda")
    model_dir = save_model(tmp / "degas-100m", preset="degas-100m")
    model, processor = load_model_and_processor(model_dir, device=device)
    lines = [f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, degas-100m ST-SwinUNet (3 classes), "
             f"window {args.window}, overlap {args.overlap}, batch {args.gpu_batch_size}, bf16 autocast.", ""]
    size = args.gpu_scene
    inputs = write_scene(tmp, size)
    num_windows = len(window_starts(size, args.window, args.window - args.overlap)) ** 2
    pixel_values = torch.randn(args.gpu_batch_size, len(BANDS), 4, args.window, args.window, device=device)
    valid_mask = torch.ones(args.gpu_batch_size, 4, args.window, args.window, dtype=torch.bool, device=device)

    def bare() -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            remaining = num_windows
            while remaining > 0:
                count = min(args.gpu_batch_size, remaining)
                model(pixel_values=pixel_values[:count], valid_mask=valid_mask[:count]).logits.float().softmax(1)
                remaining -= count
        torch.cuda.synchronize()
        return time.perf_counter() - start

    def whole(quicklook: bool) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        predict_geotiff(model, processor, inputs, tmp / f"gpu_{quicklook}.tif", window_size=args.window,
                        overlap=args.overlap, batch_size=args.gpu_batch_size, quicklook=quicklook, progress=False,
                        device=device)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    bare()  # warm-up (kernels, autotuning)
    whole(False)
    results = {"bare bf16 forward + softmax": [], "predict_geotiff, no quicklook": [], "predict_geotiff, quicklook": []}
    for _ in range(args.repeats):
        results["bare bf16 forward + softmax"].append(bare())
        results["predict_geotiff, no quicklook"].append(whole(False))
        results["predict_geotiff, quicklook"].append(whole(True))
        print({k: round(v[-1], 2) for k, v in results.items()}, flush=True)
    best = {k: min(v) for k, v in results.items()}
    base = best["bare bf16 forward + softmax"]
    lines += [f"### {size}^2 x 4 dates ({num_windows} windows)", "", "| run | runs (s) | best (s) | Mpx/s | vs bare |",
              "|---|---|---|---|---|"]
    for label, values in results.items():
        lines.append(f"| {label} | {', '.join(f'{t:.2f}' for t in values)} | {best[label]:.2f} | "
                     f"{size * size / 1e6 / best[label]:.1f} | {best[label] / base:.2f}x |")
    lines.append("")
    for path in inputs:
        path.unlink()
    if args.tile:
        start = time.perf_counter()
        tile = write_scene(tmp, args.tile)
        print(f"tile {args.tile}^2 written in {time.perf_counter() - start:.0f} s", flush=True)
        peak, wall = cli_peak_memory(model_dir, tile, tmp / "tile.tif", args, device="cuda",
                                     extra=("--batch-size", str(args.gpu_batch_size)))
        print(f"CLI on {args.tile}^2: {wall:.1f} s, peak RSS {peak:.0f} MiB", flush=True)
        lines += [f"### `degas-hf predict` on a {args.tile}^2 x 4-date tile (start-up, model load, quicklook)", "",
                  "| wall (s) | Mpx/s | peak RSS (MiB) |", "|---|---|---|",
                  f"| {wall:.1f} | {args.tile**2 / 1e6 / wall:.1f} | {peak:.0f} |", ""]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="run the GPU sections (needs CUDA) instead of the CPU ones")
    parser.add_argument("--pipeline-size", type=int, default=4096, help="scene side for the pipeline rate")
    parser.add_argument("--quicklook-scene", type=int, default=2048, help="scene side for the quicklook overhead")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192], help="scene sides for peak memory")
    parser.add_argument("--memory-model", choices=["tiny", "zero"], default="tiny",
                        help="peak memory of the CLI with degas-tiny, or of the pipeline with the zero-cost model")
    parser.add_argument("--gpu-scene", type=int, default=4096)
    parser.add_argument("--tile", type=int, default=10980, help="GPU: the CLI tile side (0 skips it)")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gpu-batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["pipeline", "quicklook", "memory"])
    parser.add_argument("--skip-previous-quicklook", action="store_true")
    parser.add_argument("--workdir", default=None, help="where scenes are written (default: a temporary folder)")
    parser.add_argument("--output", default=None, help="the Markdown table (default: benchmarks/results/predict[_gpu].md)")
    args = parser.parse_args()
    args.load_before = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    output = Path(args.output or ROOT / "benchmarks" / "results" / ("predict_gpu.md" if args.gpu else "predict.md"))

    header = [
        "# `degas-hf predict`: pipeline rate, quicklook overhead, memory" + (" (GPU)" if args.gpu else ""),
        "",
        f"{datetime.date.today().isoformat()}; {platform.machine()}, {os.cpu_count()} CPU cores, torch "
        f"{torch.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}. Command: "
        f"`python benchmarks/bench_predict.py {' '.join(sys.argv[1:])}`. Synthetic 6-band, 4-date uint16 scenes, "
        f"window {args.window}, overlap {args.overlap}.",
        "",
    ]
    lines = list(header)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        if args.gpu:
            if not torch.cuda.is_available():
                raise SystemExit("--gpu needs a CUDA device")
            lines += gpu_section(tmp, args)
        else:
            lines[2] += f" CPU sections: batch {args.batch_size}."
            if "pipeline" not in args.skip:
                lines += pipeline_section(tmp, args)
            if "quicklook" not in args.skip:
                lines += quicklook_section(tmp, args)
            if "memory" not in args.skip:
                lines += memory_section(tmp, args)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
