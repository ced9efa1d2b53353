"""Fine-tune ST-SwinUNet (Degas 100M) on Sen1Floods11 flood mapping (hand-labelled chips, S2Hand; test + Bolivia hold-out).

Expected layout of --data:
    <DATA>/data/flood_events/HandLabeled/{S2Hand,S1Hand,LabelHand}/<EVENT>_<CHIP>_<LAYER>.tif
        S2Hand: 13 bands (L1C x 10000, mapped onto the model's bands by name); LabelHand: 1 water, 0 not, -1 missing
    <DATA>/splits/flood_handlabeled/flood_{train,valid,test,bolivia}_data.csv   (no header)
  Download: gsutil -m rsync -r gs://sen1floods11/v1.1 sen1floods11/v1.1

This is the step-by-step walkthrough with a plain `transformers.Trainer`: reader -> model -> Trainer -> evaluate
every split -> results.json / figures. The other examples/finetune_<task>.py scripts, and
`degas-hf finetune --task sen1floods11 ...`, run the same steps through `finetune(FinetuneConfig(...))`.

    python examples/finetune_sen1floods11.py --data sen1floods11/v1.1 --model path/to/degas-100m --output-dir runs/sen1floods11
    python examples/finetune_sen1floods11.py --data sen1floods11/v1.1 --model degas-tiny --max-steps 20   # smoke run, random init
"""

import argparse
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

import degas_hf  # noqa: F401  (registers the Auto classes)
from degas_hf.data import Sen1Floods11, class_weights_from_counts
from degas_hf.training import (
    SegmentationMetrics,
    SegmentationDataCollator,
    WeightedCrossEntropyLoss,
    build_optimizer,
    freeze_encoder,
    preprocess_logits_for_segmentation,
)
from degas_hf.hub.folder import prepare_hub_folder
from degas_hf.training.finetune import (
    build_results,
    check_output_dir,
    default_model_name,
    load_base_config,
    load_model_for_task,
    write_figures,
    write_results,
)

EVAL_SPLIT, TEST_SPLITS = "val", ("test", "bolivia")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder (layout above)")
    parser.add_argument("--model", required=True, help="pretrained model folder, or a preset name (degas-tiny, degas-100m) for random init")
    parser.add_argument("--output-dir", default="runs/sen1floods11")
    parser.add_argument("--epochs", type=float, default=20)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--layer-decay", type=float, default=None, help="layer-wise LR decay, e.g. 0.75")
    parser.add_argument("--freeze-encoder", action="store_true", help="train the decoder and head only")
    parser.add_argument("--crop-size", type=int, default=224, help="random training / centre evaluation crops of the 512 x 512 chips")
    parser.add_argument("--modality", default="s2", choices=["s2", "s1", "s1s2"], help="S2Hand, S1Hand or both")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in --output-dir")
    args = parser.parse_args(argv)
    check_output_dir(args.output_dir, args.overwrite)  # refuses a folder holding a run before any work

    # 1. The model's bands decide the input channels: the reader maps the task's bands onto them by name
    #    (a band the task cannot supply raises here, before training).
    #    load_base_config is AutoConfig.from_pretrained(args.model), or the preset's config for a preset name.
    bands = list(load_base_config(args.model).band_names)
    reader_kwargs = dict(bands=bands, modality=args.modality, crop_size=args.crop_size)
    train = Sen1Floods11(args.data, "train", random_crop=True, seed=0, **reader_kwargs)
    evaluation = {split: Sen1Floods11(args.data, split, **reader_kwargs) for split in (EVAL_SPLIT, *TEST_SPLITS)}
    label_counts = train.validate_labels()  # every label file checked (values, sizes) before training
    for dataset in evaluation.values():
        dataset.validate_labels()
    info = train.info

    # 2. ST-SwinUNet with the pretrained encoder + decoder, a new head, and the task's frame count.
    #    Equivalent to AutoModelForSemanticSegmentation.from_pretrained(args.model, num_labels=..., id2label=...,
    #    num_frames=..., problem_type=..., ignore_mismatched_sizes=True), or a random model for a preset name.
    model = load_model_for_task(args.model, info)
    if args.freeze_encoder:
        freeze_encoder(model)
    optimizer = build_optimizer(model, args.lr, weight_decay=0.05, layer_decay=args.layer_decay)
    # Class weights from the training pixel frequencies (inverse square root), as a Trainer loss function.
    loss = WeightedCrossEntropyLoss(class_weights_from_counts(label_counts, "inverse_sqrt"))

    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=f"{args.output_dir}/checkpoints",
            num_train_epochs=args.epochs,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size,
            lr_scheduler_type="cosine",
            eval_strategy="epoch",
            save_strategy="no",
            logging_steps=10,
            remove_unused_columns=False,  # the model takes pixel_values, valid_mask, labels
            batch_eval_metrics=True,  # metrics accumulate per batch (constant memory)
            report_to="none",
            dataloader_pin_memory=torch.cuda.is_available(),
        ),
        data_collator=SegmentationDataCollator(),
        train_dataset=train,
        eval_dataset=evaluation[EVAL_SPLIT],
        compute_metrics=SegmentationMetrics(info.num_labels, info.id2label),
        preprocess_logits_for_metrics=preprocess_logits_for_segmentation,
        optimizers=(optimizer, None),
        compute_loss_func=loss,
    )
    trainer.train()

    # 3. Evaluate every split, write results.json / results.md (model cards read them) and the figures.
    evaluations, confusion = {}, {}
    for split, dataset in evaluation.items():
        evaluations[split] = trainer.evaluate(dataset, metric_key_prefix=split)
        confusion[split] = trainer.compute_metrics.last_confusion_matrix  # (K, K) of that evaluation
    output_dir = Path(args.output_dir)
    test_split = TEST_SPLITS[0]
    figures = write_figures(trainer.model, evaluation[test_split], info, output_dir, test_split, confusion[test_split])
    results = build_results(info, default_model_name(args.model, "sen1floods11"), args.model, evaluations, confusion, figures=figures)
    write_results(results, output_dir)
    # Hub-ready: weights, config with custom_pipelines, the processor and the code (pipeline() and publish take it)
    prepare_hub_folder(trainer.model, train.processor, output_dir / "model")
    for row in results["results"]:
        print(f"{row['split']:8s} {row['name']:18s} {row['value']}")
    return results


if __name__ == "__main__":
    main()
