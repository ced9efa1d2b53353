"""Render model cards for Degas checkpoints from the Jinja templates in `model_cards/`.

The YAML metadata is built with huggingface_hub's `ModelCardData` (library_name, pipeline_tag, tags, datasets,
license, base_model, widget examples, and a `model-index` built from the fine-tuning results JSON, never typed by
hand). The body is rendered from `model_cards/degas-100m.md` (pretrained encoder) or `model_cards/finetuned.md`
(any fine-tuned ST-SwinUNet), which include `model_cards/_common.md`. Every number in the card comes from the
folder's config.json / preprocessor_config.json / weights, or from the results JSON.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

# `model_cards/` at the repository root; a symlink in this package keeps them reachable once installed.
_CANDIDATE_TEMPLATE_DIRS = (
    Path(__file__).resolve().parent / "model_cards",
    Path(__file__).resolve().parents[3] / "model_cards",
)
PRETRAINED_TEMPLATE = "degas-100m.md"
FINETUNED_TEMPLATE = "finetuned.md"

BASE_TAGS = ["earth-observation", "remote-sensing", "sentinel-2", "satellite-imagery", "time-series",
             "st-swin-mae", "video-swin", "custom_code"]
PRETRAINING_DATASET = "wangyi111/SSL4EO-S12"

# Sentinel-2 MSI band facts (ESA), for the bands table.
S2_BANDS = {
    "B01": ("Coastal aerosol", 443, 60), "B02": ("Blue", 490, 10), "B03": ("Green", 560, 10),
    "B04": ("Red", 665, 10), "B05": ("Red edge 1", 705, 20), "B06": ("Red edge 2", 740, 20),
    "B07": ("Red edge 3", 783, 20), "B08": ("NIR", 842, 10), "B8A": ("Narrow NIR", 865, 20),
    "B09": ("Water vapour", 945, 60), "B10": ("SWIR cirrus", 1375, 60), "B11": ("SWIR 1", 1610, 20),
    "B12": ("SWIR 2", 2190, 20), "VV": ("Sentinel-1 VV backscatter", None, 10),
    "VH": ("Sentinel-1 VH backscatter", None, 10),
}

CITATION = """@article{nakayama2024stswinmae,
  title   = {Spatio-Temporal SwinMAE: A Swin Transformer based Multiscale Representation Learner for Temporal Satellite Imagery},
  author  = {Nakayama, Yohei and Su, Jiawei},
  journal = {arXiv preprint arXiv:2405.02512},
  year    = {2024},
  note    = {v2 (Oct 2024, with Luis M. Pazos-Out{\\'o}n): "SatSwinMAE: Efficient Autoencoding for Multiscale Time-series Satellite Imagery"}
}"""


def template_dir() -> Path:
    env = os.environ.get("DEGAS_MODEL_CARDS_DIR")
    candidates = ([Path(env)] if env else []) + list(_CANDIDATE_TEMPLATE_DIRS)
    for path in candidates:
        if (path / PRETRAINED_TEMPLATE).is_file():
            return path
    raise FileNotFoundError(f"Model card templates not found in {[str(c) for c in candidates]}")


def _band_rows(config: dict, processor: dict) -> list[dict]:
    from ..models.st_swin_mae.image_processing_st_swin_mae import canonical_band_name

    names = config.get("band_names") or []
    proc_names = [canonical_band_name(b) for b in processor.get("band_names") or names]
    means, stds = processor.get("image_mean") or [], processor.get("image_std") or []
    rows = []
    for i, name in enumerate(names):
        key = canonical_band_name(name)
        desc, wavelength, resolution = S2_BANDS.get(key, ("", None, None))
        j = proc_names.index(key) if key in proc_names else None
        rows.append(dict(
            index=i, name=name, description=desc, wavelength=wavelength, resolution=resolution,
            mean=(means[j] if j is not None and j < len(means) else None),
            std=(stds[j] if j is not None and j < len(stds) else None),
        ))
    return rows


def _fmt_params(n: int | None) -> str:
    if not n:
        return "unknown"
    return f"{n / 1e6:.1f}M ({n:,d})" if n >= 1e6 else f"{n / 1e3:.1f}k ({n:,d})"


def _label_rows(config: dict) -> list[dict]:
    from ..inference.quicklook import PALETTE

    labels = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    rows = []
    for i in sorted(labels):
        r, g, b = (int(c) for c in PALETTE[i % len(PALETTE)])
        rows.append(dict(id=i, label=labels[i], color=f"#{r:02x}{g:02x}{b:02x}"))
    return rows


def build_card_data(info, *, repo_id: str, results=None, examples: Sequence = (), base_model: str | None = None,
                    license: str = "apache-2.0", datasets: Sequence[str] | None = None) -> ModelCardData:
    """The card's YAML metadata (see module docstring)."""
    model_name = repo_id.split("/")[-1]
    tags = list(BASE_TAGS)
    if info.kind == "segmentation":
        tags += ["st-swin-unet", "semantic-segmentation"]
        if info.config.get("problem_type") == "regression":
            tags.append("pixel-regression")
        if results is not None:
            tags.append(results.task.replace("_", "-"))
    else:
        tags += ["masked-autoencoder", "self-supervised-learning", "foundation-model"]
    tags = list(dict.fromkeys(tags))
    ds = list(datasets or [])
    # Only what is known goes in: a pretrained folder does not record its data (pass `datasets`, `--dataset`).
    if info.kind == "segmentation" and results is not None and "/" in (results.dataset_type or ""):
        ds = list(dict.fromkeys(ds + [results.dataset_type]))
    eval_results = None
    if results is not None:
        source_url = f"https://huggingface.co/{repo_id}/blob/main/results.json"
        eval_results = [
            EvalResult(
                task_type=results.task_type, task_name=results.task_name,
                dataset_type=results.dataset_type, dataset_name=results.dataset_name,
                dataset_split=split, metric_type=key, metric_value=value, metric_name=results.metric_name(key),
                source_name="degas-hf fine-tuning results (results.json)", source_url=source_url,
            )
            for split, key, value in results.entries
        ]
    widget = []
    for ex in examples:
        item = {"src": ex.input_path, "example_title": ex.title}
        if ex.output_path:
            item["output"] = {"url": ex.output_path}
        widget.append(item)
    kwargs: dict[str, Any] = {}
    if widget:
        kwargs["widget"] = widget
    return ModelCardData(
        library_name="transformers", pipeline_tag=info.pipeline_tag, tags=tags, license=license,
        datasets=ds or None, base_model=base_model if info.kind == "segmentation" else None,
        model_name=model_name, eval_results=eval_results, metrics=sorted({r.metric_type for r in eval_results})
        if eval_results else None, **kwargs,
    )


def render_model_card(
    info,
    *,
    repo_id: str,
    results=None,
    examples: Sequence = (),
    base_model: str | None = None,
    license: str = "apache-2.0",
    datasets: Sequence[str] | None = None,
    revision: str | None = None,
    template: str | os.PathLike | None = None,
    training_summary: dict | None = None,
) -> ModelCard:
    """A `ModelCard` for the validated folder `info` (a `publish.FolderInfo`)."""
    card_data = build_card_data(info, repo_id=repo_id, results=results, examples=examples, base_model=base_model,
                                license=license, datasets=datasets)
    if template is not None:
        template = Path(template)
        loader = jinja2.FileSystemLoader([str(template.parent), str(template_dir())])
        name = template.name
    else:
        loader = jinja2.FileSystemLoader(str(template_dir()))
        name = FINETUNED_TEMPLATE if info.kind == "segmentation" else PRETRAINED_TEMPLATE
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    config = info.config
    # Every processor field the templates read, with the processor's own defaults: a folder saved from
    # `STSwinMAEImageProcessor()` or a generic fine-tuning run has no preset, and older files may lack fields.
    processor = {"preset": None, "rescale_factor": 1.0, "do_rescale": True, "do_normalize": True, "nodata_value": None,
                 "fill_value": 0.0, "image_processor_type": None, **(info.processor_config or {})}
    head_class = {"segmentation": "AutoModelForSemanticSegmentation"}.get(info.kind, "AutoModelForPreTraining")
    summary = dict(training_summary or {})
    if results is not None and isinstance(results.raw.get("training"), dict):
        summary = {**{k: v for k, v in results.raw["training"].items() if not isinstance(v, (dict, list))},
                   **summary}
    text = env.get_template(name).render(
        card_data=card_data.to_yaml(),
        repo_id=repo_id,
        model_name=repo_id.split("/")[-1],
        revision=revision,
        kind=info.kind,
        head_class=head_class,
        architecture=info.architecture,
        pipeline_tag=info.pipeline_tag,
        config=config,
        processor=processor,
        processor_class=(processor.get("image_processor_type") or "STSwinMAEImageProcessor"),
        bands=_band_rows(config, processor),
        labels=_label_rows(config),
        regression=config.get("problem_type") == "regression",
        num_parameters=_fmt_params(info.num_parameters),
        results=results,
        examples=list(examples),
        base_model=base_model,
        license=license,
        datasets=card_data.datasets or [],
        pipelines=sorted((config.get("custom_pipelines") or {}).keys()),
        pretraining_dataset=PRETRAINING_DATASET,
        training_summary=summary,
        citation=CITATION,
    )
    return ModelCard(text)


__all__ = ["BASE_TAGS", "CITATION", "build_card_data", "render_model_card", "template_dir"]
