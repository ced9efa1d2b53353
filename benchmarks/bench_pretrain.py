"""Pretraining throughput: the degas-100m (or degas-tiny) training step, fp32 and bf16; the data loaders in samples/s
per worker core (raw GeoTIFF layout: the previous reader and the current one side by side; the prepared format);
and `degas-hf pretrain` end to end (steady-state samples/s from its log) next to the model-only step rate.

    python benchmarks/bench_pretrain.py                      # degas-100m, 224 px, batch 1, CPU fp32 + bf16
    python benchmarks/bench_pretrain.py --preset degas-tiny --image-size 64 --batch-size 8
    python benchmarks/bench_pretrain.py --device cuda --batch-size 16 --steps 20
    python benchmarks/bench_pretrain.py --skip-model --e2e-preset degas-tiny   # loaders + end to end only

The step is the one `degas-hf pretrain` runs (Accelerate, AdamW, clipping, per-sample mask noise). The loaders read a
synthetic folder in the exact raw SSL4EO-S12 layout (264 px, 12 L2A bands at 10/20/60 m, 4 seasons), written once to
--data-dir, and its prepared form (`degas-hf prepare-ssl4eo`), with random crops to the image size. Loader rates are
measured in one process with one thread (so they are per core), from the page cache (cold reads are the disk's).
Writes a Markdown table to benchmarks/results/pretrain.md (or --output).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def write_raw_ssl4eo(root: Path, n_locations: int) -> Path:
    import rasterio

    from degas_hf.data.ssl4eo import SSL4EO_BANDS

    res = {"B01": 60, "B09": 60, "B05": 20, "B06": 20, "B07": 20, "B8A": 20, "B11": 20, "B12": 20}
    seasons = ["20210320T104021_X_T31UES", "20210621T103031_X_T31UES", "20210922T103639_X_T31UES",
               "20201221T105441_X_T31UES"]
    rng = np.random.default_rng(0)
    for loc in range(n_locations):
        for season in seasons:
            d = root / "s2a" / f"{loc:07d}" / season
            if d.exists():
                continue
            d.mkdir(parents=True)
            for band in SSL4EO_BANDS["s2a"]:
                size = 264 * 10 // res.get(band, 10)
                name = ("B8A" if band == "B8A" else f"B{int(band[1:])}") + ".tif"
                with rasterio.open(d / name, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint16",
                                   crs="+proj=latlong", transform=rasterio.Affine(1e-4, 0, 4, 0, -1e-4, 51)) as dst:
                    dst.write(rng.integers(1, 6000, (size, size), dtype=np.uint16), 1)
    return root


BANDS6 = ["B02", "B03", "B04", "B8A", "B11", "B12"]


def legacy_reader_class():
    """The raw reader as it was before the prepared format (kept here to measure the current one against): every
    band file read whole, resampled onto the grid of the finest selected band, then cropped; float32 with NaN and
    the image processor's normalisation in the worker."""
    import warnings

    from degas_hf.data.ssl4eo import SSL4EOS12Dataset
    from degas_hf.data.timeseries_folder import DataError, _open, _to_float_with_nan

    class LegacySSL4EOS12Dataset(SSL4EOS12Dataset):
        def item_shape(self, item):
            cache = self.__dict__.setdefault("_legacy_shapes", {})
            if item not in cache:
                h = w = 0
                for p in self._seasons(item)[0].values():
                    with _open(p) as src:
                        h, w = max(h, src.height), max(w, src.width)
                cache[item] = (h, w)
            return cache[item]

        def read_item(self, item, rng, window):
            from rasterio.enums import Resampling

            r0, c0, h, w = window
            full_h, full_w = self.item_shape(item)
            frames = []
            for paths in self._seasons(item):
                bands = []
                for b in self.band_names:
                    p = paths[b]
                    with _open(p) as src:
                        try:
                            with warnings.catch_warnings():
                                warnings.simplefilter("ignore")
                                arr = src.read(1, out_shape=(full_h, full_w), resampling=Resampling.bilinear
                                               if (src.height, src.width) != (full_h, full_w) else Resampling.nearest)
                        except Exception as err:  # noqa: BLE001
                            raise DataError(f"cannot read {p}: {err}") from err
                        nodata = src.nodata if src.nodata is not None else self.nodata
                    bands.append(_to_float_with_nan(arr[r0:r0 + h, c0:c0 + w], nodata))
                frames.append(np.stack(bands))
            return np.stack(frames)

    return LegacySSL4EOS12Dataset


def _processor(bands=BANDS6):
    from degas_hf.models.st_swin_mae.image_processing_st_swin_mae import STSwinMAEImageProcessor

    return STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l2a", band_names=list(bands))


def loader_rate(ds, batch_size: int, batches: int, workers: int = 0, normalize: bool = False) -> float:
    """Samples/s of a DataLoader over `ds` (after one warm-up batch); `normalize`: also normalise each raw batch
    here (what the accelerator does in the training step), to count it on this CPU."""
    from degas_hf.data.timeseries_folder import collate_pretraining
    from degas_hf.training.pretrain import ShardedBatchSampler

    groups = ds.shard_ranges() if hasattr(ds, "shard_ranges") else None
    sampler = ShardedBatchSampler(len(ds), batch_size, seed=1, groups=groups)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate_pretraining, num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    norm = ds.device_normalizer() if normalize else None
    it = iter(loader)
    next(it)  # worker start-up, first file opens
    t = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        if norm is not None:
            norm(batch["raw_values"])
    dt = time.perf_counter() - t
    del it
    return batches * batch_size / dt


def bench_loaders(root: Path, prepared: Path, crop: int, batch_size: int, batches: int, workers: list[int]) -> list:
    from degas_hf.data.prepared import PreparedDataset
    from degas_hf.data.ssl4eo import SSL4EOS12Dataset

    torch.set_num_threads(1)
    proc = _processor()
    spl = 8
    legacy = legacy_reader_class()(root, crop_size=crop, processor=proc, validate="none", samples_per_location=spl)
    raw = SSL4EOS12Dataset(root, crop_size=crop, processor=proc, validate="none", samples_per_location=spl,
                           output="raw")
    raw_norm = SSL4EOS12Dataset(root, crop_size=crop, processor=proc, validate="none", samples_per_location=spl)
    prep = PreparedDataset(prepared, crop_size=crop, processor=proc, samples_per_item=64, output="raw")
    rows = []
    # the raw layout in one process: previous and current reader in alternation, so they share the machine's state
    pairs = {"previous": [], "current": [], "current_norm_cpu": [], "current_processor": []}
    for _ in range(2):
        pairs["previous"].append(loader_rate(legacy, batch_size, batches))
        pairs["current"].append(loader_rate(raw, batch_size, batches))
        pairs["current_norm_cpu"].append(loader_rate(raw, batch_size, batches, normalize=True))
        pairs["current_processor"].append(loader_rate(raw_norm, batch_size, batches))
    best = {k: max(v) for k, v in pairs.items()}
    rows.append(("raw GeoTIFF layout, previous reader (whole bands resampled, processor in the worker)", 0,
                 best["previous"], 1.0))
    rows.append(("raw GeoTIFF layout, current reader, processor in the worker (`output='normalized'`)", 0,
                 best["current_processor"], best["current_processor"] / best["previous"]))
    rows.append(("raw GeoTIFF layout, current reader, uint16 crops (`output='raw'`, as `degas-hf pretrain`)", 0,
                 best["current"], best["current"] / best["previous"]))
    rows.append(("  + the batch normalised on this CPU too (DeviceNormalizer on CPU)", 0, best["current_norm_cpu"],
                 best["current_norm_cpu"] / best["previous"]))
    p_rate = max(loader_rate(prep, batch_size, batches * 4) for _ in range(2))
    rows.append(("prepared format, uint16 crops (as `degas-hf pretrain`)", 0, p_rate, p_rate / best["previous"]))
    p_norm = max(loader_rate(prep, batch_size, batches * 4, normalize=True) for _ in range(2))
    rows.append(("  + the batch normalised on this CPU too", 0, p_norm, p_norm / best["previous"]))
    for w in workers:
        rate = loader_rate(prep, batch_size, batches * 4, workers=w)
        rows.append((f"prepared format, DataLoader with {w} worker process(es)", w, rate, rate / best["previous"]))
    torch.set_num_threads(os.cpu_count() or 1)
    return rows


def bench_end_to_end(prepared: Path, preset: str, crop: int, batch_size: int, steps: int, workers: int,
                     device: str, precision: str, out: Path) -> dict:
    """`degas-hf pretrain` from the prepared folder; steady state from log.jsonl's elapsed times after 2 warm-up
    steps: the median step (robust to other jobs on a shared machine, like the model-only median) and the mean."""
    import json
    import shutil
    import subprocess

    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "degas_hf.cli", "pretrain", "pretrain_degas_100m", f"model.preset={preset}",
           "data.format=prepared", f"data.root={prepared}", f"data.crop_size={crop}", f"data.num_workers={workers}",
           "data.samples_per_item=64", f"train.per_device_batch_size={batch_size}", f"train.max_steps={steps}",
           f"train.mixed_precision={precision}", "optim.warmup_steps=1", "logging.log_every=1",
           "logging.figure_every=0", "logging.tensorboard=false", "logging.progress_bar=false",
           "checkpoint.save_every=0", "checkpoint.save_final=false", f"output_dir={out}"]
    env = dict(os.environ)
    if device == "cpu":
        env["ACCELERATE_USE_CPU"] = "1"
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(log[2:], log[3:])]
    first, last = log[2], log[-1]
    mean_rate = (last["step"] - first["step"]) * batch_size / (last["elapsed_s"] - first["elapsed_s"])
    return {"samples_per_s": batch_size / statistics.median(steps), "mean_samples_per_s": mean_rate, "wall_s": wall,
            "command": "degas-hf " + " ".join(cmd[3:])}


def bench_model(preset: str, image_size: int, frames: int, batch_size: int, steps: int, warmup: int, precision: str,
                device: str, activation_checkpointing: bool) -> dict:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from degas_hf.models.st_swin_mae.configuration_st_swin_mae import STSwinMAEConfig
    from degas_hf.models.st_swin_mae.modeling_st_swin_mae import STSwinMAEForPreTraining
    from degas_hf.training.pretrain import param_groups, sample_noise

    AcceleratorState._reset_state()
    GradientState._reset_state()
    accelerator = Accelerator(mixed_precision=precision, cpu=device == "cpu")
    torch.manual_seed(0)
    config = STSwinMAEConfig.from_preset(preset)
    model = STSwinMAEForPreTraining(config)
    if activation_checkpointing:
        from degas_hf.training.activation_checkpointing import enable_activation_checkpointing

        enable_activation_checkpointing(model, "full")
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95))
    model, opt = accelerator.prepare(model, opt)
    unwrapped = accelerator.unwrap_model(model)
    x = torch.randn(batch_size, config.num_channels, frames, image_size, image_size, device=accelerator.device)
    valid = torch.ones(batch_size, frames, image_size, image_size, dtype=torch.bool, device=accelerator.device)
    grid = tuple(-(-s // p) for s, p in zip((frames, image_size, image_size), config.patch_size))
    units = math.prod(unwrapped.num_mask_units(grid))
    times = []
    for i in range(warmup + steps):
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        noise = sample_noise(torch.arange(batch_size) + 1000 * i, units).to(accelerator.device)
        out = model(pixel_values=x, valid_mask=valid, noise=noise)
        accelerator.backward(out.loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    step = statistics.median(times)
    return {"params": params, "step_s": step, "samples_per_s": batch_size / step,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if accelerator.device.type == "cuda" else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="degas-100m")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--precisions", nargs="+", default=["no", "bf16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--skip-model", action="store_true", help="skip the model-step table")
    p.add_argument("--loader-batch-size", type=int, default=8)
    p.add_argument("--loader-batches", type=int, default=4)
    p.add_argument("--loader-workers", nargs="*", type=int, default=[1, 2])
    p.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "degas_bench_ssl4eo"))
    p.add_argument("--locations", type=int, default=8)
    p.add_argument("--e2e-preset", default="degas-tiny", help="model of the end-to-end run ('' to skip it)")
    p.add_argument("--e2e-steps", type=int, default=12)
    p.add_argument("--e2e-repeats", type=int, default=2,
                   help="end-to-end and model-only runs alternate this many times; the best of each is reported")
    p.add_argument("--e2e-image-size", type=int, default=None, help="crop of the end-to-end run (default: --image-size)")
    p.add_argument("--e2e-batch-size", type=int, default=8)
    p.add_argument("--e2e-workers", type=int, default=1)
    p.add_argument("--e2e-precision", default="no")
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "pretrain.md"))
    p.add_argument("--note", default="", help="a sentence added under the machine line (e.g. load, GPU model)")
    args = p.parse_args(argv)

    rows = []
    if not args.skip_model:
        for precision in args.precisions:
            r = bench_model(args.preset, args.image_size, args.frames, args.batch_size, args.steps, args.warmup,
                            precision, args.device, args.activation_checkpointing)
            name = "fp32" if precision == "no" else precision
            print(f"model {args.preset} {name}: {r['samples_per_s']:.3f} samples/s ({r['step_s']:.2f} s/step)",
                  flush=True)
            rows.append((name, r))
    root = write_raw_ssl4eo(Path(args.data_dir) / "raw", args.locations)
    prepared = Path(args.data_dir) / "prepared"
    from degas_hf.data.prepared import prepare_ssl4eo

    t = time.perf_counter()
    shutil_rm = __import__("shutil").rmtree
    shutil_rm(prepared, ignore_errors=True)
    manifest = prepare_ssl4eo(root, prepared, samples_per_shard=4, progress=False)
    prepare_s = time.perf_counter() - t
    print(f"prepare-ssl4eo: {manifest['samples']} samples in {prepare_s:.1f} s", flush=True)
    loader_rows = bench_loaders(root, prepared, args.image_size, args.loader_batch_size, args.loader_batches,
                                args.loader_workers)
    for name, w, rate, ratio in loader_rows:
        print(f"{name}: {rate:.1f} samples/s ({ratio:.2f}x)", flush=True)
    e2e = None
    if args.e2e_preset:
        size = args.e2e_image_size or args.image_size
        runs, model_rates = [], []
        for _ in range(args.e2e_repeats):  # alternating, so both see the same machine (others' jobs come and go)
            runs.append(bench_end_to_end(prepared, args.e2e_preset, size, args.e2e_batch_size, args.e2e_steps,
                                         args.e2e_workers, args.device, args.e2e_precision,
                                         Path(args.data_dir) / "e2e_run"))
            model_rates.append(bench_model(args.e2e_preset, size, args.frames, args.e2e_batch_size, 8, 2,
                                           args.e2e_precision, args.device, False)["samples_per_s"])
        e2e = max(runs, key=lambda r: r["samples_per_s"])
        e2e["model_only"] = max(model_rates)
        model_only = {"samples_per_s": e2e["model_only"]}
        print(f"end to end {e2e['samples_per_s']:.2f} samples/s, model only {model_only['samples_per_s']:.2f}",
              flush=True)

    threads = torch.get_num_threads()
    lines = [
        "# Pretraining throughput (`benchmarks/bench_pretrain.py`)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible, torch "
        f"{torch.__version__}, {threads} torch threads, device `{args.device}`. Command: "
        f"`python benchmarks/bench_pretrain.py {' '.join(argv if argv is not None else sys.argv[1:])}`.",
        *([args.note] if args.note else []),
        "",
    ]
    if rows:
        lines += [
            f"Training step of `degas-hf pretrain` (forward, masked loss, backward, clipping, AdamW) for {args.preset} "
            f"({rows[0][1]['params'] / 1e6:.1f}M parameters), input {args.batch_size} x {args.frames} frames x "
            f"{args.image_size}^2 px x 6 bands, median of {args.steps} steps after {args.warmup} warm-up"
            + (", activation checkpointing" if args.activation_checkpointing else "") + ":",
            "",
            "| precision | s / step | samples / s |",
            "|---|---|---|",
        ]
        lines += [f"| {n} | {r['step_s']:.2f} | {r['samples_per_s']:.3f} |" for n, r in rows]
        lines.append("")
    lines += [
        f"Data loaders, {args.image_size} px random crops, 6 bands (B02 B03 B04 B8A B11 B12), 4 seasons, batches of "
        f"{args.loader_batch_size}; {args.locations} synthetic locations of the raw layout (264 px, 12 L2A bands at "
        f"native 10/20/60 m), prepared with `prepare-ssl4eo` in {prepare_s:.1f} s ({manifest['bytes'] / 2**20:.0f} "
        "MiB). Rows without workers run in this process with 1 thread: samples/s per core. Best of 2 alternating "
        "runs.",
        "",
        "| loader | worker processes | samples / s | vs previous raw reader |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {w} | {rate:.1f} | {ratio:.2f}x |" for name, w, rate, ratio in loader_rows]
    if e2e:
        lines += [
            "",
            f"End to end: `{e2e['command']}` ({args.e2e_workers} DataLoader worker(s)); steady state from log.jsonl "
            f"(median step of steps 3..{args.e2e_steps}; the mean in brackets), next to the model-only step of the "
            "same model, crop, batch and precision on random tensors (median of 8 steps after 2 warm-up); best of "
            f"{args.e2e_repeats} alternating runs each:",
            "",
            "| `degas-hf pretrain` samples / s | model only samples / s | ratio |",
            "|---|---|---|",
            f"| {e2e['samples_per_s']:.2f} ({e2e['mean_samples_per_s']:.2f}) | {e2e['model_only']:.2f} | "
            f"{e2e['samples_per_s'] / e2e['model_only']:.2f} |",
        ]
    lines.append("")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(lines))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
