"""`degas-hf pretrain CONFIG.yaml [KEY=VALUE ...] [--resume [CHECKPOINT]]`: masked-autoencoder pretraining.

CONFIG is a YAML file or the name of a configuration shipped with the package (`pretrain_degas_100m`,
`pretrain_demo`). Multi-process: `torchrun --nproc_per_node N -m degas_hf.cli pretrain ...` or
`accelerate launch -m degas_hf.training.pretrain ...`. See docs/pretraining.md.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Defined here, not in training.pretrain, so that `--help` and argument errors do not wait for torch.
    parser.add_argument("config", nargs="?", help="YAML configuration (see configs/pretrain_degas_100m.yaml, "
                        "docs/pretraining.md)")
    # REMAINDER: overrides and options mix in any order (`CONFIG --resume a=1 b=2`); split in `_parse_command_line`
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                        help="overrides of config keys, e.g. train.max_steps=100 data.root=/data/ssl4eo-s12")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                        help="continue from the newest complete checkpoint in output_dir (or from CHECKPOINT)")
    parser.add_argument("--output-dir", default=None, help="shortcut for output_dir=...")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing export_dir or a finished run in output_dir (overwrite=true)")


def run(args: argparse.Namespace) -> int:
    from degas_hf.training.pretrain import run as _run

    return _run(args)
