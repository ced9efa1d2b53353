"""`degas-hf publish FOLDER --repo-id ORG/NAME`: validate a saved model folder, render its model card, check that it
loads with `trust_remote_code=True` where degas_hf is absent, and upload it to the Hub in one commit.

    degas-hf publish outputs/degas-100m --repo-id my-org/degas-100m --dry-run --output publish-tree
    degas-hf publish outputs/floods --repo-id my-org/degas-100m-sen1floods11 \
        --results outputs/floods/results.json --base-model my-org/degas-100m \
        --example examples/spain.tif --tag v0.1.0

See docs/publishing.md.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="A folder written by save_pretrained (config, safetensors, processor, code).")
    parser.add_argument("--repo-id", required=True, help="Hub repository, ORG/NAME.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--revision", default=None, help="Branch to commit to (created if missing); default main.")
    parser.add_argument("--create-pr", action="store_true", help="Open a pull request instead of committing.")
    parser.add_argument("--dry-run", action="store_true",
                        help="Write the exact tree that would be uploaded to --output and print it; upload nothing.")
    parser.add_argument("--output", default=None,
                        help="Dry-run output folder (must not exist or be empty). Default: ./<NAME>-publish-tree.")
    parser.add_argument("--results", default=None, help="Fine-tuning results JSON; fills the card's model-index.")
    parser.add_argument("--base-model", default=None, help="Hub id of the pretrained model (fine-tuned models).")
    parser.add_argument("--example", action="append", default=[], metavar="TIF[=PNG[=TITLE]]",
                        help="Widget example GeoTIFF (repeatable); its quicklooks are made by the published code "
                             "unless a PNG (e.g. from `degas-hf predict`) is given.")
    parser.add_argument("--dataset", action="append", default=None, help="Hub dataset id for the card (repeatable).")
    parser.add_argument("--license", default="apache-2.0", help="License identifier for the card (default apache-2.0).")
    parser.add_argument("--tag", default=None, help="Tag the new commit (e.g. v0.1.0); the card pins this revision.")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--template", default=None, help="Model card template to use instead of model_cards/.")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login).")
    parser.add_argument("--include", action="append", default=[], metavar="PATH",
                        help="Publish this dot file or secret-looking file (e.g. .zenodo.json) that is otherwise left "
                             "out (repeatable). Symbolic links out of the folder are never followed.")
    parser.add_argument("--load-timeout", type=float, default=600.0,
                        help="Seconds allowed for the clean-process load check (default 600).")


def run(args: argparse.Namespace) -> int:
    from degas_hf.hub.publish import PublishError, publish

    output = args.output
    if args.dry_run and output is None:
        output = f"{args.repo_id.split('/')[-1] or 'model'}-publish-tree"
    try:
        result = publish(
            args.folder, args.repo_id, private=args.private, revision=args.revision, create_pr=args.create_pr,
            dry_run=args.dry_run, output_dir=output, results=args.results, examples=args.example,
            base_model=args.base_model, license=args.license, datasets=args.dataset, token=args.token,
            commit_message=args.commit_message, tag=args.tag, template=args.template, load_timeout=args.load_timeout,
            include=args.include,
        )
    except PublishError as exc:
        first, *rest = str(exc).splitlines() or [type(exc).__name__]
        print(f"degas-hf publish: error: {first.rstrip('.:')}. Nothing was uploaded.", file=sys.stderr)
        for line in rest:
            print(line, file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only --output, a full disk
        reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"degas-hf publish: error: {reason}{where}. Nothing was uploaded.", file=sys.stderr)
        return 2
    if result.dry_run:
        print(json.dumps({"dry_run": True, "output": str(result.staging), "files": result.files}, indent=2))
    return 0
