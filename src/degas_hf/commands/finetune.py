"""`degas-hf finetune`: fine-tune ST-SwinUNet on a downstream task with `transformers.Trainer`.

Examples::

    degas-hf finetune --task sen1floods11 --data sen1floods11/v1.1 --model degas-100m-pretrained --output-dir runs/flood
    degas-hf finetune --task phileo_building --data phileo/patches --model DIR --n-shot 100 --epochs 20
    degas-hf finetune --task generic --data my_fields --model DIR --band-names B02 B03 B04 B8A B11 B12 \\
        --num-frames 3 --num-classes 5      (or --band-names B02,B03,B04,B8A,B11,B12)
"""

from __future__ import annotations

import argparse
import errno
import json
import sys

from ._arguments import band_name_list as split_band_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..training.tasks import TASKS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "tasks:\n" + "\n".join(f"  {name:20s} {spec.description}" for name, spec in TASKS.items())
    parser.add_argument("--task", required=True, help="downstream task (see the list below; '-' and '_' interchangeable)")
    parser.add_argument("--data", required=True, help="dataset folder in the task's on-disk layout")
    parser.add_argument("--model", required=True, help="pretrained model folder (or cached Hub id), or a preset name (degas-tiny, degas-100m) for random init")
    parser.add_argument("--output-dir", default="finetune_output", help="checkpoints, results.json, results.md and figures (default: %(default)s)")
    parser.add_argument("--model-name", help="name of the fine-tuned model in the results (default: <model>-<task>)")
    parser.add_argument("--overwrite", action="store_true", help="replace the run (results.json, model/) already in --output-dir")

    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=float, default=10.0, help="default: %(default)s")
    train.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimiser steps (overrides --epochs)")
    train.add_argument("--batch-size", type=int, default=8, help="per-device batch size (default: %(default)s)")
    train.add_argument("--eval-batch-size", type=int, default=None, help="default: --batch-size")
    train.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default: %(default)s)")
    train.add_argument("--weight-decay", type=float, default=0.05, help="default: %(default)s")
    train.add_argument("--warmup", type=float, default=0.0, help="warm-up steps (int) or fraction of the steps (<1)")
    train.add_argument("--scheduler", default="cosine", help="transformers scheduler type (default: %(default)s)")
    train.add_argument("--crop-size", type=int, default=None, help="random training crops / centre evaluation crops of this size")
    train.add_argument("--freeze-encoder", action="store_true", help="train decoder and head only (frozen ST-SwinMAE encoder)")
    train.add_argument("--layer-decay", type=float, default=None, help="layer-wise learning-rate decay factor, e.g. 0.75")
    train.add_argument("--class-weights", default=None, help="'auto' (inverse sqrt frequency), 'inverse', 'median', or comma-separated weights")
    train.add_argument("--lora-rank", type=int, default=0, help="LoRA rank on the attention projections (needs peft; 0 = off)")
    train.add_argument("--lora-alpha", type=int, default=16, help="default: %(default)s")
    train.add_argument("--eval-strategy", default="epoch", choices=["no", "steps", "epoch"], help="default: %(default)s")
    train.add_argument("--save-strategy", default="no", choices=["no", "steps", "epoch", "best"], help="checkpoints during training (default: %(default)s)")
    train.add_argument("--logging-steps", type=int, default=10)
    train.add_argument("--num-workers", type=int, default=0, help="data-loader workers (default: %(default)s)")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--max-train-samples", type=int, default=None, help="truncate the training set (quick runs)")
    train.add_argument("--max-eval-samples", type=int, default=None, help="truncate every evaluation set")
    train.add_argument("--no-check-labels", action="store_true", help="skip reading every label file before training")
    train.add_argument("--no-figures", action="store_true", help="skip the confusion-matrix and predictions figures")
    train.add_argument("--no-save-model", action="store_true", help="do not save the fine-tuned model")
    train.add_argument("--compile", action="store_true", help="torch.compile the model before training (degas_hf.training.compile)")
    train.add_argument("--activation-checkpointing", choices=["none", "full", "selective"], default="none",
                       help="recompute in the backward for less memory: full (whole blocks) or selective (element-wise "
                            "operators only, no GEMM twice)")

    data = parser.add_argument_group("dataset options")
    data.add_argument("--bands", nargs="+", default=None, metavar="BAND", help="(space- or comma-separated) ""input bands (default: the model's config.band_names); other bands re-initialise the patch embedding")
    data.add_argument("--eval-split", default=None, help="evaluation split during training (default: the task's)")
    data.add_argument("--test-splits", nargs="+", default=None, help="splits evaluated after training (default: the task's, e.g. test bolivia)")
    data.add_argument("--modality", choices=["s1", "s2", "s1s2"], default=None, help="Sen1Floods11: S2Hand (default), S1Hand or both")
    data.add_argument("--n-shot", type=int, default=None, help="PhilEO: n training patches per region")
    data.add_argument("--n-shot-seed", type=int, default=None, help="PhilEO: seed of the n-shot draw (default: the bench's 12345)")
    data.add_argument("--indices", default=None, metavar="PATH",
                      help="PhilEO: the bench's fixed selection (an indices_*_<label>_<n>.json file, or the folder holding them)")
    data.add_argument("--regions", nargs="+", default=None, help="PhilEO: keep only these regions")
    data.add_argument("--target-scale", type=float, default=None, help="PhilEO regression: multiply the %% targets (default 0.01: fractions 0-1; 1 keeps %%)")
    data.add_argument("--band-names", nargs="+", default=None, metavar="BAND",
                      help="generic: band names of one date, in file order (space- or comma-separated: B02 B03 or B02,B03)")
    data.add_argument("--num-frames", type=int, default=None, help="generic: dates per image file (date-major)")
    data.add_argument("--num-classes", type=int, default=None, help="generic: number of classes")
    data.add_argument("--class-names", nargs="+", default=None, help="generic: class names")
    data.add_argument("--regression", action="store_true", help="generic: float targets")
    data.add_argument("--label-suffix", default=None, help="generic: label file = <name><suffix>.tif (default: '' in labels/, '_label' beside <name>_input.tif)")
    data.add_argument("--dataset-kwargs", default=None, help="JSON object of further reader arguments")


def _check_generic_flags(args: argparse.Namespace) -> None:
    """The generic task's flags, checked with messages that name them."""
    if args.band_names is not None:
        if not args.band_names:
            raise ValueError("--band-names: no band name given")
        duplicates = sorted({b for b in args.band_names if args.band_names.count(b) > 1})
        if duplicates:
            raise ValueError(f"--band-names: each band once, found {duplicates} more than once in {args.band_names}")
    if args.num_classes is not None and args.num_classes < 1:
        raise ValueError(f"--num-classes must be at least 1, found {args.num_classes}")
    if args.num_frames is not None and args.num_frames < 1:
        raise ValueError(f"--num-frames must be at least 1, found {args.num_frames}")
    if args.num_classes is not None and args.regression:
        raise ValueError("give --num-classes (classification) or --regression, not both")
    if args.class_names is not None and args.num_classes is not None and len(args.class_names) != args.num_classes:
        raise ValueError(f"--class-names gives {len(args.class_names)} names for --num-classes {args.num_classes}")


def _dataset_kwargs(args: argparse.Namespace, task: str) -> dict:
    try:
        kwargs = json.loads(args.dataset_kwargs) if args.dataset_kwargs else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"--dataset-kwargs: not a JSON object ({err})") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--dataset-kwargs: expected a JSON object, found {type(kwargs).__name__}")
    args.band_names = split_band_names(args.band_names)
    if task == "generic":
        _check_generic_flags(args)
    options = {
        "modality": args.modality, "n_shot": args.n_shot, "n_shot_seed": args.n_shot_seed, "indices": args.indices,
        "regions": args.regions, "target_scale": args.target_scale,
        "band_names": args.band_names, "num_frames": args.num_frames, "num_classes": args.num_classes,
        "class_names": args.class_names, "label_suffix": args.label_suffix,
    }
    if args.regression:
        options["regression"] = True
    applicable = {
        "sen1floods11": {"modality"},
        "phileo_lc": {"n_shot", "n_shot_seed", "indices", "regions"},
        "phileo_building": {"n_shot", "n_shot_seed", "indices", "regions", "target_scale"},
        "phileo_roads": {"n_shot", "n_shot_seed", "indices", "regions", "target_scale"},
        "generic": {"band_names", "num_frames", "num_classes", "class_names", "label_suffix", "regression"},
    }.get(task, set())
    for name, value in options.items():
        if value is None:
            continue
        if name not in applicable:
            raise ValueError(f"--{name.replace('_', '-')} does not apply to task {task!r}")
        kwargs[name] = value
    if task == "generic" and "band_names" not in kwargs:
        raise ValueError("task 'generic' needs --band-names (and --num-classes or --regression)")
    if task == "generic" and "num_classes" not in kwargs and not kwargs.get("regression"):
        raise ValueError("task 'generic' needs --num-classes N (classification) or --regression")
    return kwargs


def _class_weights(value: str | None):
    if value is None or value in ("auto", "inverse", "inverse_sqrt", "median"):
        return value
    try:
        return [float(v) for v in value.split(",")]
    except ValueError as err:
        raise ValueError(f"--class-weights: expected 'auto', 'inverse', 'median' or comma-separated numbers, got {value!r}") from err


def _say(message: str) -> None:
    print(f"degas-hf finetune: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run the command; a bad dataset, argument, model folder or output folder prints one line
    `degas-hf finetune: error: ...` (naming the flag or file) and returns 2."""
    try:
        return _run(args)
    except (ValueError, ImportError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"degas-hf finetune: error: {message}", file=sys.stderr)
        return 2
    except OSError as err:  # read-only folder, disk full, ... while training or writing
        reason = "no space left on device" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"degas-hf finetune: error: {reason}{where}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from ..training.finetune import FinetuneConfig, finetune, markdown_rows, resolve_task

    task = resolve_task(args.task)
    args.bands = split_band_names(args.bands)
    save_strategy = args.save_strategy
    training_args = {}
    if save_strategy == "best":
        training_args = {"load_best_model_at_end": True, "metric_for_best_model": "loss", "save_total_limit": 1}
        save_strategy = args.eval_strategy
    config = FinetuneConfig(
        task=task,
        data_dir=args.data,
        model=args.model,
        output_dir=args.output_dir,
        model_name=args.model_name,
        dataset_kwargs=_dataset_kwargs(args, task),
        bands=args.bands,
        crop_size=args.crop_size,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size or args.batch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup,
        lr_scheduler_type=args.scheduler,
        freeze_encoder=args.freeze_encoder,
        layer_decay=args.layer_decay,
        class_weights=_class_weights(args.class_weights),
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        eval_split=args.eval_split,
        test_splits=args.test_splits,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        seed=args.seed,
        dataloader_num_workers=args.num_workers,
        logging_steps=args.logging_steps,
        eval_strategy=args.eval_strategy,
        save_strategy=save_strategy,
        check_labels=not args.no_check_labels,
        figures=not args.no_figures,
        save_model=not args.no_save_model,
        overwrite=args.overwrite,
        compile=args.compile,
        activation_checkpointing=args.activation_checkpointing,
        training_args=training_args,
    )
    results = finetune(config, log=_say)
    print(markdown_rows(results), end="")
    print(f"results: {args.output_dir}/results.json, {args.output_dir}/results.md")
    return 0
