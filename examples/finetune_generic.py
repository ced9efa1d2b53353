"""Fine-tune ST-SwinUNet on your own data: a folder of image GeoTIFFs with matching label GeoTIFFs.

Expected layout of --data:
    <DATA>/images/<name>.tif    T x C bands, date-major (all bands of date 1, then date 2, ...)
    <DATA>/labels/<name>.tif    1 band, same size: class indices 0..K-1 (255 and -1 ignored) or float targets
  or, side by side in one folder:
    <DATA>/<name>_input.tif and <DATA>/<name>_label.tif
  and optionally:
    <DATA>/train.txt, val.txt, test.txt   one <name> per line; a split without a file holds the images no file
                                          names; with no file at all, 20 % of the images (seed 0) are held out
                                          as val and test (the run says which)

Normalisation: bands the pretrained model knows keep its statistics; the others are estimated on the training
images; both are saved in model/preprocessor_config.json.

Runs `finetune(FinetuneConfig(...))`, the same as `degas-hf finetune --task generic ...`. The bands are mapped onto
the model's by name, so name them as the model does (B02 B03 B04 B8A B11 B12 for Degas 100M):

    python examples/finetune_generic.py --data my_fields --model path/to/degas-100m \
        --band-names B02 B03 B04 B8A B11 B12 --num-frames 3 --num-classes 5
    degas-hf finetune --task generic --data my_fields --model path/to/degas-100m \
        --band-names B02 B03 B04 B8A B11 B12 --num-frames 3 --num-classes 5
"""

from degas_hf.training.finetune import config_from_args, finetune, finetune_argument_parser, markdown_rows


def main(argv=None):
    parser = finetune_argument_parser(__doc__, output_dir="runs/generic")
    parser.add_argument("--band-names", nargs="+", required=True, help="band names of one date, in file order (B02 B03 ... or B02,B03,...)")
    parser.add_argument("--num-frames", type=int, default=1, help="dates per image file (date-major)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--num-classes", type=int, help="classification: labels 0..K-1")
    target.add_argument("--regression", action="store_true", help="float targets (masked MSE)")
    args = parser.parse_args(argv)
    band_names = [name for value in args.band_names for name in value.split(",") if name]
    dataset_kwargs = {"band_names": band_names, "num_frames": args.num_frames}
    dataset_kwargs.update({"regression": True} if args.regression else {"num_classes": args.num_classes})
    config = config_from_args(args, task="generic", dataset_kwargs=dataset_kwargs, class_weights=None if args.regression else "auto")
    results = finetune(config)
    print(markdown_rows(results), end="")
    return results


if __name__ == "__main__":
    main()
