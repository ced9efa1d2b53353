"""`degas-hf` command line: one sub-command per module in `degas_hf.commands`.

Each command module defines `add_arguments(parser)` and `run(args) -> int`. Only the chosen command's module is
imported, and command modules import only the standard library at module level, so `degas-hf --help` and argument
errors are immediate; the model classes are registered with transformers (`degas_hf.register_auto_classes`, which
imports transformers and torch) right before the command runs. A missing optional dependency of one command does
not break the others. The console script enters through `degas_hf_cli.main`, which keeps `import degas_hf` from
registering eagerly.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "demo": ("degas_hf.commands.demo", "Pretrain the tiny model on bundled Sentinel-2 imagery, then predict (the main job)."),
    "pretrain": ("degas_hf.commands.pretrain", "Masked-autoencoder pretraining with Accelerate (DDP, FSDP, resumable)."),
    "prepare-ssl4eo": ("degas_hf.commands.prepare_ssl4eo", "Prepare SSL4EO-S12 once into fast tar shards for pretraining."),
    "finetune": ("degas_hf.commands.finetune", "Fine-tune ST-SwinUNet on a downstream task with Trainer."),
    "predict": ("degas_hf.commands.predict", "Sliding-window prediction over GeoTIFF scenes, written as a GeoTIFF."),
    "publish": ("degas_hf.commands.publish", "Validate a model folder, render its card and upload it to the Hub."),
    "export": ("degas_hf.commands.export", "Export a model folder to ONNX or torch.export (.pt2), checked against eager."),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="degas-hf", description="ST-SwinMAE / Degas 100M for satellite image time series.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen command's module is imported (its arguments are needed to parse).
        if argv and argv[0] == name:
            importlib.import_module(module_name).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    import degas_hf

    degas_hf.register_auto_classes()
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
