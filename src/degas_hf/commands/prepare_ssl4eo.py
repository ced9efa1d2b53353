"""`degas-hf prepare-ssl4eo SRC DST [--bands ...] [--workers N]`: SSL4EO-S12 once into the prepared format.

SRC is the raw GeoTIFF release (`SRC/s2a/<7-digit id>/<season>/<BAND>.tif`) or the v1.1 zarr chunks
(`*.zarr.zip`, `pip install degas-hf[zarr]`); DST an empty (or new) folder. Samples are resampled once onto the
10 m grid and stored as fixed-size arrays in tar shards with a SHA-256 manifest; `degas-hf pretrain ...
data.format=prepared data.root=DST` reads them. Run the same command again to resume an interrupted run;
`--verify DST` re-checks a finished one. See docs/pretraining.md.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", nargs="?", help="SSL4EO-S12 source: raw release root (holding s2a/) or v1.1 zarr folder")
    parser.add_argument("dst", nargs="?", help="destination folder (new or empty, or an interrupted preparation)")
    parser.add_argument("--bands", nargs="+", default=None, metavar="BAND",
                        help="bands to keep, space- or comma-separated (default: B02 B03 B04 B8A B11 B12 for S2)")
    parser.add_argument("--modality", default="s2a", help="s2a (L2A, default), s2c (L1C) or s1")
    parser.add_argument("--split", default=None, help="v1.1 zarr: train or val (needed when SRC holds both)")
    parser.add_argument("--workers", type=int, default=0, help="processes writing shards in parallel (0: this one)")
    parser.add_argument("--samples-per-shard", type=int, default=128,
                        help="samples per tar shard (128 x 6 bands x 4 dates x 264^2 uint16 = 428 MB)")
    parser.add_argument("--grid-size", type=int, default=None, help="sample grid in pixels (default: the 10 m grid)")
    parser.add_argument("--on-bad-sample", choices=("skip", "error"), default="skip",
                        help="a location with missing bands or seasons: skip and count it (default) or stop")
    parser.add_argument("--verify", metavar="DST", default=None,
                        help="instead of preparing: check every shard of a prepared folder against its SHA-256")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from degas_hf.data.prepared import prepare_ssl4eo, verify_prepared
    from degas_hf.data.timeseries_folder import DataError

    def fail(message: str) -> int:
        print(f"degas-hf prepare-ssl4eo: error: {message}", file=sys.stderr)
        return 2

    try:
        if args.verify:
            from tqdm.auto import tqdm

            from degas_hf.data.prepared import read_manifest

            total = read_manifest(args.verify)["samples"]
            with tqdm(total=total, desc="verify", unit="sample", disable=args.no_progress) as bar:
                manifest = verify_prepared(args.verify, checksums=True, progress=bar.update)
            print(json.dumps({"verified": args.verify, "samples": manifest["samples"],
                              "shards": len(manifest["shards"])}))
            return 0
        if not args.src or not args.dst:
            return fail("give SRC and DST (or --verify DST)")
        bands = None
        if args.bands:
            bands = [b for item in args.bands for b in item.replace(",", " ").split()]
        if args.workers < 0:
            return fail(f"--workers must be >= 0, got {args.workers}")
        if args.samples_per_shard < 1:
            return fail(f"--samples-per-shard must be >= 1, got {args.samples_per_shard}")
        if args.grid_size is not None and args.grid_size < 1:
            return fail(f"--grid-size must be >= 1, got {args.grid_size}")
        manifest = prepare_ssl4eo(args.src, args.dst, band_names=bands, modality=args.modality, split=args.split,
                                  workers=args.workers, samples_per_shard=args.samples_per_shard,
                                  grid_size=args.grid_size, skip_bad=args.on_bad_sample == "skip",
                                  progress=not args.no_progress)
    except (DataError, ImportError) as err:
        return fail(str(err))
    except OSError as err:
        return fail(f"{err.filename or args.dst}: {err.strerror or err}")
    summary = {"dst": args.dst, "samples": manifest["samples"], "skipped": manifest["skipped"],
               "shards": len(manifest["shards"]), "bytes": manifest["bytes"],
               "sample_shape": manifest["sample_shape"], "dtype": manifest["dtype"],
               "already_complete": bool(manifest.get("already_complete"))}
    if manifest["skipped"]:
        reasons = [s["reason"] for s in manifest.get("skipped_items", [])[:3]]
        print(f"degas-hf prepare-ssl4eo: skipped {manifest['skipped']} sample(s) with missing or unreadable data "
              f"(listed in {args.dst}/manifest.json), e.g. {reasons}", file=sys.stderr)
    print(json.dumps(summary))
    return 0
