"""Validate a saved model folder, stage the exact tree to publish, check it loads without `degas_hf`, and
upload it to the Hugging Face Hub in one commit.

The steps, in order (nothing touches the network before the last one):

1. `validate_folder(folder)`: config.json (model_type `st_swin_mae`), safetensors weights under their stable
   names, preprocessor_config.json, the copied code files named by `auto_map` (AutoConfig, AutoModel, and
   AutoModelForPreTraining or AutoModelForSemanticSegmentation, AutoImageProcessor) and by `custom_pipelines`.
   Every problem found is listed in one `PublishError`.
2. `load_results(path)`: the fine-tuning results JSON (docs/publishing.md), checked against known tasks and metrics.
3. `stage_tree(...)`: copies the folder (minus training leftovers), the widget example inputs and their PNG
   quicklooks, the results JSON, and the rendered model card (README.md) into a staging folder. What is staged is
   exactly what is uploaded or, with `--dry-run`, what is written out.
4. `check_loads_in_clean_process(staged)`: a fresh interpreter where `import degas_hf` raises loads the staged
   folder with `trust_remote_code=True` through the Auto classes and the custom pipeline and runs one forward.
   A folder that does not load is refused.
5. `upload_tree(staged, repo_id, ...)`: `HfApi.create_repo` (exist_ok) then ONE `HfApi.create_commit` with a sorted
   list of `CommitOperationAdd`, so a failure leaves the repo untouched (never a partial upload).

`publish(...)` runs them all; `degas_hf.commands.publish` is the CLI on top.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

MODEL_TYPE = "st_swin_mae"

# Stable file names: users pin code to these (a renamed weight file broke TerraTorch's Prithvi downloads).
CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
SHARD_RE = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
CODE_MODULES = {
    "configuration_st_swin_mae",
    "modeling_st_swin_mae",
    "image_processing_st_swin_mae",
    "pipeline_st_swin_mae",
}
README_FILE = "README.md"
RESULTS_FILE = "results.json"
EXAMPLES_DIR = "examples"
IMAGES_DIR = "images"

HEAD_PRETRAINING = "AutoModelForPreTraining"
HEAD_SEGMENTATION = "AutoModelForSemanticSegmentation"
ARCHITECTURE_HEADS = {
    "STSwinMAEForPreTraining": HEAD_PRETRAINING,
    "STSwinMAEModel": HEAD_PRETRAINING,  # a bare encoder still needs its pretraining entry to be complete
    "STSwinUNetForSemanticSegmentation": HEAD_SEGMENTATION,
}

# Left out of the published tree: training leftovers, caches, VCS data.
IGNORE_PATTERNS = (
    ".git", ".gitattributes", "__pycache__", "*.pyc", ".ipynb_checkpoints", ".cache", ".DS_Store",
    "checkpoint-*", "runs", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth",
    "training_args.bin", "trainer_state.json",
)
# Pickle-based files are refused: the Hub flags them and they execute code on load.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Left out unless named with `include=` (`--include`): files that usually hold secrets. Dot files and dot folders
# (`.env`, `.netrc`, `.ssh/`, `.huggingface/token`, ...) are left out the same way.
SECRET_PATTERNS = (
    "*.env", "env", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "id_rsa*", "id_dsa*", "id_ecdsa*",
    "id_ed25519*", "credentials", "credentials.*", "*credentials.json", "*_credentials*", "netrc", "_netrc",
    "*.netrc", "token", "token.txt", "*.token", "*_token", "*_token.txt", "hf_token*", "api_key*", "apikey*",
    "secret", "secrets", "secrets.*", "*.secret", "*.secrets", "service_account*.json", "*.kdbx", "*.gpg",
    "pypirc", "npmrc", "htpasswd", "*.htpasswd",
)

REPO_ID_RE = re.compile(r"^(?P<ns>[A-Za-z0-9][A-Za-z0-9_.-]{0,95})/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,95})$")


class PublishError(ValueError):
    """A folder, repo id, results file or environment that cannot be published; raised before any upload.
    One problem reads as one line; several are listed below the message."""

    def __init__(self, message: str, problems: Iterable[str] = ()):
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"{message} {self.problems[0]}"
        elif self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


# --------------------------------------------------------------------------------------------------- repo id
def validate_repo_id(repo_id: str) -> str:
    """`ORG/NAME` with Hub-legal characters; raises `PublishError` otherwise."""
    if not isinstance(repo_id, str) or not repo_id:
        raise PublishError("A repo id of the form ORG/NAME is required (--repo-id).")
    match = REPO_ID_RE.match(repo_id)
    problems = []
    if match is None:
        problems.append("expected exactly one '/' between a namespace and a name, using letters, digits, '-', '_' and '.'"
                        " (at most 96 characters each), starting with a letter or digit")
    else:
        for part in (match["ns"], match["name"]):
            if "--" in part or ".." in part:
                problems.append(f"{part!r}: '--' and '..' are not allowed")
            if part.endswith((".", "-")) or part.endswith(".git"):
                problems.append(f"{part!r}: must not end with '.', '-' or '.git'")
    if problems:
        raise PublishError(f"Malformed repo id {repo_id!r}:", problems)
    return repo_id


# --------------------------------------------------------------------------------------------------- folder
@dataclass
class FolderInfo:
    """What `validate_folder` learned about a model folder."""

    folder: Path
    config: dict
    processor_config: dict
    kind: str  # "pretrained" or "segmentation"
    head: str  # HEAD_PRETRAINING or HEAD_SEGMENTATION
    architecture: str
    weight_files: list[str]
    code_files: list[str]
    files: list[str]  # every file to publish from the folder, relative POSIX paths, sorted
    excluded: list[str] = field(default_factory=list)
    num_parameters: int | None = None
    excluded_reasons: dict[str, str] = field(default_factory=dict)  # excluded path -> why

    @property
    def pipeline_tag(self) -> str:
        return "image-segmentation" if self.kind == "segmentation" else "image-feature-extraction"


def _is_ignored(rel: str) -> bool:
    parts = rel.split("/")
    return any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in IGNORE_PATTERNS)


def _is_secret(rel: str) -> bool:
    parts = rel.split("/")
    return any(part.startswith(".") for part in parts) or any(
        fnmatch.fnmatch(parts[-1].lower(), pattern) for pattern in SECRET_PATTERNS
    )


def _list_files(folder: Path, include: Sequence[str] = ()) -> tuple[list[str], dict[str, str]]:
    """The files to publish (sorted relative POSIX paths) and the ones left out, each with its reason.

    Symbolic links are never followed out of the folder (a link to /etc/passwd is left out, whatever it is named);
    a link to a file inside the folder is published as that file's content; linked folders are not entered.
    Dot files and folders and files named like secrets (SECRET_PATTERNS) are left out unless `include` names them
    (their relative path or name); training leftovers (IGNORE_PATTERNS) are left out."""
    root = folder.resolve()
    named = {str(n).strip("/") for n in include}
    kept: list[str] = []
    excluded: dict[str, str] = {}
    for directory, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(directory)
        for name in sorted(dirnames):
            path = base / name
            if path.is_symlink():
                excluded[path.relative_to(folder).as_posix() + "/"] = "a symbolic link to a folder (not followed)"
        for name in sorted(filenames):
            path = base / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    excluded[rel] = f"a symbolic link out of the folder (to {target})"
                    continue
                if not target.is_file():
                    excluded[rel] = "a symbolic link to no regular file"
                    continue
            elif not path.is_file():
                excluded[rel] = "not a regular file"
                continue
            if _is_ignored(rel):
                excluded[rel] = "a training leftover or cache"
            elif _is_secret(rel) and rel not in named and name not in named:
                excluded[rel] = "a dot file or a name that usually holds secrets (name it with --include to publish it)"
            else:
                kept.append(rel)
    return sorted(kept), dict(sorted(excluded.items()))


def _read_json(path: Path, what: str, problems: list[str]) -> dict | None:
    if not path.is_file():
        problems.append(f"{what}: {path.name} is missing")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{what}: {path.name} is not valid JSON ({exc})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{what}: {path.name} must hold a JSON object")
        return None
    return data


def _check_class_ref(folder: Path, key: str, ref: Any, problems: list[str], where: str) -> str | None:
    """`module.Class` must name a file `module.py` in the folder that defines `Class`. Returns the file name."""
    if isinstance(ref, (list, tuple)):  # tokenizer-style [slow, fast] pairs: check the ones given
        names = [r for r in ref if r]
        files = [_check_class_ref(folder, key, r, problems, where) for r in names]
        return files[0] if files else None
    if not isinstance(ref, str) or "." not in ref:
        problems.append(f"{where}: auto_map[{key!r}] = {ref!r} is not of the form 'module.Class'")
        return None
    if "--" in ref:
        problems.append(f"{where}: auto_map[{key!r}] = {ref!r} points to code in another repo; publish the code "
                        "with the weights (save_pretrained after register_for_auto_class)")
        return None
    module, cls = ref.rsplit(".", 1)
    filename = module.replace(".", "/") + ".py"
    path = folder / filename
    if not path.is_file():
        problems.append(f"{where}: auto_map[{key!r}] names {ref!r} but {filename} is not in the folder "
                        "(the code must be copied next to the weights)")
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    if not re.search(rf"^class\s+{re.escape(cls)}\b", text, flags=re.M) and not re.search(
        rf"^{re.escape(cls)}\s*=", text, flags=re.M
    ):
        problems.append(f"{where}: auto_map[{key!r}] names class {cls} but {filename} does not define it")
    if module not in CODE_MODULES:
        problems.append(f"{where}: {filename} is not one of the stable code file names {sorted(CODE_MODULES)}")
    return filename


_REL_IMPORT_RE = re.compile(r"^\s*from\s+\.(\w+)\s+import\s", flags=re.M)
_ABS_IMPORT_RE = re.compile(r"^(?:from|import)\s+degas_hf\b", flags=re.M)


def _check_code_file(folder: Path, filename: str, problems: list[str]) -> list[str]:
    """The copied code imports its siblings by single-dot relative imports and never `degas_hf`."""
    text = (folder / filename).read_text(encoding="utf-8", errors="replace")
    if _ABS_IMPORT_RE.search(text):
        problems.append(f"{filename} imports degas_hf at module level; Hub code must not need the package")
    deps = []
    for module in _REL_IMPORT_RE.findall(text):
        dep = f"{module}.py"
        if not (folder / dep).is_file():
            problems.append(f"{filename} imports .{module} but {dep} is not in the folder")
        else:
            deps.append(dep)
    return deps


def _count_parameters(folder: Path, weight_files: list[str]) -> int | None:
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover
        return None
    total = 0
    try:
        for name in weight_files:
            with safe_open(str(folder / name), framework="np") as f:
                for key in f.keys():
                    total += math.prod(f.get_slice(key).get_shape())
    except Exception:  # noqa: BLE001 - reported by the weight check instead
        return None
    return total


def _check_weight_file(path: Path, problems: list[str]) -> None:
    """A safetensors file whose header cannot be read (truncated, garbled) is a problem."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as f:  # checks the header and that the data fits the file
            if not list(f.keys()):
                problems.append(f"weights: {path.name} holds no tensors")
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        problems.append(f"weights: {path.name} is not a readable safetensors file (truncated or corrupted: {reason})")


def validate_folder(folder: str | os.PathLike, include: Sequence[str] = ()) -> FolderInfo:
    """Check that `folder` holds a complete, Hub-loadable ST-SwinMAE checkpoint; raise `PublishError` listing
    every problem otherwise. `include` names dot or secret-looking files to publish anyway (see `_list_files`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"Model folder {str(folder)!r} does not exist or is not a directory.")
    problems: list[str] = []
    files, excluded_reasons = _list_files(folder, include)
    excluded = list(excluded_reasons)
    for required in (CONFIG_FILE, PROCESSOR_FILE, WEIGHTS_FILE, WEIGHTS_INDEX_FILE):
        if required in excluded_reasons:
            problems.append(f"{required} is {excluded_reasons[required]}; a published file must be a file of the folder")

    config = _read_json(folder / CONFIG_FILE, "config", problems) or {}
    processor = _read_json(folder / PROCESSOR_FILE, "image processor", problems) or {}

    # Weights: safetensors under the stable names, no pickles.
    weight_files: list[str] = []
    pickles = [rel for rel in files if rel.lower().endswith(PICKLE_SUFFIXES)]
    if (folder / WEIGHTS_FILE).is_file():
        weight_files = [WEIGHTS_FILE]
    elif (folder / WEIGHTS_INDEX_FILE).is_file():
        index = _read_json(folder / WEIGHTS_INDEX_FILE, "weights index", problems) or {}
        shards = sorted(set((index.get("weight_map") or {}).values()))
        if not shards:
            problems.append(f"weights: {WEIGHTS_INDEX_FILE} lists no shards")
        for shard in shards:
            if not SHARD_RE.match(shard):
                problems.append(f"weights: shard {shard!r} does not follow model-XXXXX-of-YYYYY.safetensors")
            if not (folder / shard).is_file():
                problems.append(f"weights: shard {shard} listed in {WEIGHTS_INDEX_FILE} is missing")
        weight_files = shards
    elif pickles and not any(rel.endswith(".safetensors") for rel in files):
        problems.append(f"weights: the folder holds only pickle weights ({', '.join(pickles)}); publish safetensors "
                        "(save_pretrained(safe_serialization=True)): pickle files run code when loaded")
        pickles = []
    else:
        problems.append(f"weights: {WEIGHTS_FILE} (or {WEIGHTS_INDEX_FILE} with its shards) is missing")
    for name in weight_files:
        if (folder / name).is_file() and name in files:
            _check_weight_file(folder / name, problems)
    for rel in files:
        if rel.endswith(".safetensors") and rel not in weight_files:
            problems.append(f"weights: {rel} is not a stable weight file name ({WEIGHTS_FILE} or sharded)")
    for rel in pickles:
        problems.append(f"{rel}: pickle files are not published (use safetensors, or remove it)")

    kind, head, architecture = "pretrained", HEAD_PRETRAINING, ""
    code_files: set[str] = set()
    if config:
        if config.get("model_type") != MODEL_TYPE:
            problems.append(f"config: model_type is {config.get('model_type')!r}, expected {MODEL_TYPE!r}")
        architectures = config.get("architectures") or []
        known = [a for a in architectures if a in ARCHITECTURE_HEADS]
        if not known:
            problems.append(f"config: architectures {architectures} names none of {sorted(ARCHITECTURE_HEADS)}")
        else:
            architecture = known[0]
            head = ARCHITECTURE_HEADS[architecture]
            kind = "segmentation" if head == HEAD_SEGMENTATION else "pretrained"
        auto_map = config.get("auto_map")
        if not isinstance(auto_map, dict):
            problems.append("config: auto_map is missing (call register_for_auto_class before save_pretrained)")
            auto_map = {}
        for key in ("AutoConfig", "AutoModel", head):
            if key not in auto_map:
                problems.append(f"config: auto_map has no {key!r} entry")
        for key, ref in auto_map.items():
            name = _check_class_ref(folder, key, ref, problems, "config")
            if name:
                code_files.add(name)
        pipelines = config.get("custom_pipelines")
        if kind == "segmentation" and (not isinstance(pipelines, dict) or not pipelines):
            problems.append("config: custom_pipelines is missing (save the pipeline with Pipeline.save_pretrained "
                            "or degas_hf.hub.folder.prepare_hub_folder)")
        elif pipelines is not None and not isinstance(pipelines, dict):
            problems.append("config: custom_pipelines must be an object {task: {impl, pt, type}}")
        elif pipelines:
            for task, spec in pipelines.items():
                if not isinstance(spec, dict) or "impl" not in spec:
                    problems.append(f"config: custom_pipelines[{task!r}] has no 'impl'")
                    continue
                name = _check_class_ref(folder, f"custom_pipelines.{task}", spec["impl"], problems, "config")
                if name:
                    code_files.add(name)
                for auto in spec.get("pt") or []:
                    if auto not in auto_map and not hasattr(__import__("transformers"), auto):
                        problems.append(f"config: custom_pipelines[{task!r}] uses {auto} which is neither in "
                                        "auto_map nor a transformers class")
        if kind == "segmentation":
            id2label = config.get("id2label") or {}
            if not id2label:
                problems.append("config: id2label is missing for a segmentation model")
    if processor:
        proc_map = processor.get("auto_map") or {}
        if "AutoImageProcessor" not in proc_map:
            problems.append("image processor: auto_map has no 'AutoImageProcessor' entry")
        for key, ref in proc_map.items():
            name = _check_class_ref(folder, key, ref, problems, "image processor")
            if name:
                code_files.add(name)
    # Follow relative imports so every sibling module is there.
    todo = sorted(code_files)
    while todo:
        for dep in _check_code_file(folder, todo.pop(), problems):
            if dep not in code_files:
                code_files.add(dep)
                todo.append(dep)

    for name in sorted(code_files) + list(weight_files):
        if name in excluded_reasons:
            problems.append(f"{name} is {excluded_reasons[name]}; a published file must be a file of the folder")
    problems = list(dict.fromkeys(problems))
    if problems:
        raise PublishError(f"Model folder {str(folder)!r} cannot be published:", problems)
    return FolderInfo(
        folder=folder, config=config, processor_config=processor, kind=kind, head=head, architecture=architecture,
        weight_files=weight_files, code_files=sorted(code_files), files=files, excluded=excluded,
        num_parameters=_count_parameters(folder, weight_files), excluded_reasons=excluded_reasons,
    )


# --------------------------------------------------------------------------------------------------- results
# Fine-tuning task names (degas_hf.training.finetune.TASKS) -> model-index task and dataset.
KNOWN_TASKS: dict[str, dict[str, str]] = {
    "sen1floods11": dict(type="image-segmentation", name="Flood mapping", dataset_type="sen1floods11",
                         dataset_name="Sen1Floods11"),
    "hls_burn_scars": dict(type="image-segmentation", name="Burn scar mapping",
                           dataset_type="ibm-nasa-geospatial/hls_burn_scars", dataset_name="HLS Burn Scars"),
    "crop_classification": dict(type="image-segmentation", name="Multi-temporal crop segmentation",
                                dataset_type="ibm-nasa-geospatial/multi-temporal-crop-classification",
                                dataset_name="Multi-temporal crop classification"),
    "phileo_lc": dict(type="image-segmentation", name="Land cover",
                      dataset_type="PhilEO-community/PhilEO-downstream", dataset_name="PhilEO Bench land cover"),
    "phileo_building": dict(type="image-segmentation", name="Building density (pixel-wise regression)",
                            dataset_type="PhilEO-community/PhilEO-downstream",
                            dataset_name="PhilEO Bench building density"),
    "phileo_roads": dict(type="image-segmentation", name="Road density (pixel-wise regression)",
                         dataset_type="PhilEO-community/PhilEO-downstream", dataset_name="PhilEO Bench road density"),
    # Users' own data: the results JSON must then name its dataset.
    "generic": dict(type="image-segmentation", name="Semantic segmentation"),
    "semantic-segmentation": dict(type="image-segmentation", name="Semantic segmentation"),
    "regression": dict(type="image-segmentation", name="Pixel-wise regression"),
}
TASK_ALIASES = {
    "floods": "sen1floods11", "sen1floods": "sen1floods11", "burn_scars": "hls_burn_scars",
    "crop": "crop_classification", "multi_temporal_crop": "crop_classification",
    "multi_temporal_crop_classification": "crop_classification", "phileo_landcover": "phileo_lc",
    "phileo_land_cover": "phileo_lc", "landcover": "phileo_lc", "land_cover": "phileo_lc",
    "building_density": "phileo_building", "phileo_buildings": "phileo_building", "folder": "generic",
    "segmentation": "semantic-segmentation", "semantic_segmentation": "semantic-segmentation",
}
# metric key -> pretty name
KNOWN_METRICS: dict[str, str] = {
    "mean_iou": "mIoU", "iou": "IoU", "accuracy": "Accuracy", "overall_accuracy": "Overall accuracy",
    "mean_accuracy": "Mean accuracy", "f1": "F1", "macro_f1": "Macro F1", "precision": "Precision",
    "recall": "Recall", "dice": "Dice", "mse": "MSE", "rmse": "RMSE", "mae": "MAE", "r2": "R2", "loss": "Loss",
}
PER_CLASS_PREFIXES = ("iou_", "accuracy_", "f1_", "precision_", "recall_")
BOOKKEEPING_KEYS = {"runtime", "samples_per_second", "steps_per_second", "epoch"}
METRIC_KEY_PREFIXES = ("eval_", "test_")


def _metric_pretty(key: str) -> str:
    if key in KNOWN_METRICS:
        return KNOWN_METRICS[key]
    prefix = next(p for p in PER_CLASS_PREFIXES if key.startswith(p))
    return f"{KNOWN_METRICS[prefix[:-1]]} ({key[len(prefix):]})"


def _is_known_metric(name: str) -> bool:
    return name in KNOWN_METRICS or any(name.startswith(p) and len(name) > len(p) for p in PER_CLASS_PREFIXES)


@dataclass
class Results:
    """A validated fine-tuning results file: one `(split, metric, value)` entry per model-index metric."""

    task: str
    model: str
    dataset_type: str
    dataset_name: str
    split: str  # the primary split (test if present)
    entries: list[tuple[str, str, float]]
    task_type: str
    task_name: str
    raw: dict
    base_model: str | None = None
    source_path: Path | None = None

    @property
    def metrics(self) -> dict[str, float]:
        """The primary split's metrics, {metric: value}."""
        return {m: v for s, m, v in self.entries if s == self.split}

    @staticmethod
    def metric_name(key: str) -> str:
        return _metric_pretty(key)


def _resolve_task(name: str) -> tuple[str, dict | None]:
    key = str(name or "").strip()
    low = key.lower().replace("-", "_")
    key = TASK_ALIASES.get(low, TASK_ALIASES.get(key.lower(), key))
    if key not in KNOWN_TASKS and low in KNOWN_TASKS:
        key = low
    return key, KNOWN_TASKS.get(key)


def _check_label_metric(name: str, labels: set[str], problems: list[str], where: str) -> None:
    if labels and name not in KNOWN_METRICS:
        label = name.split("_", 1)[1].lower()
        if label not in labels and not label.isdigit():
            problems.append(f"{where} names class {label!r}, not one of the model's labels {sorted(labels)}")


def _label_key(label: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(label).lower()).strip("_")


def load_results(source: str | os.PathLike | dict, *, id2label: dict | None = None) -> Results:
    """Read and check a fine-tuning results JSON. Two layouts are accepted (docs/publishing.md):

    - `degas-hf finetune`'s `results.json` (schema_version 1, docs/finetuning.md): `task` {name, dataset_name, ...,
      id2label}, `model` {name, base_model}, `results` [{split, metric, value}], `per_class` {split: {iou: {label: v}}};
    - a flat file `{task, model, dataset, split, metrics: {name: value}}`.

    Unknown tasks or metrics, labels that disagree with the model's, and non-numbers raise `PublishError`."""
    path = None
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PublishError(f"Results file {str(path)!r} does not exist.") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise PublishError(f"Results file {str(path)!r} is not valid JSON: {exc}") from None
    where = f"Results {str(path)!r}" if path else "Results"
    if not isinstance(data, dict):
        raise PublishError(f"{where} must be a JSON object.")
    problems: list[str] = []
    labels = {str(v).lower() for v in (id2label or {}).values()}
    label_keys = {_label_key(v) for v in (id2label or {}).values()}
    entries: list[tuple[str, str, float]] = []
    base_model = None

    if isinstance(data.get("task"), dict):  # degas-hf finetune schema
        task_info = data["task"]
        if data.get("schema_version") not in (1,):
            problems.append(f"unsupported schema_version {data.get('schema_version')!r} (this publish knows 1)")
        task_key, task = _resolve_task(task_info.get("name"))
        if task is None:
            problems.append(f"unknown task {task_info.get('name')!r}; known: {sorted(KNOWN_TASKS)}")
            task = {}
        dataset_type = task.get("dataset_type") or task_info.get("dataset_type")
        dataset_name = task.get("dataset_name") or task_info.get("dataset_name") or dataset_type
        if task_key == "generic":
            dataset_type = task_info.get("dataset_id") or task_info.get("dataset_type") or dataset_type
            dataset_name = task_info.get("dataset_name") or dataset_type
        if task and not dataset_type:
            problems.append(f"task {task_key!r} needs a dataset name")
        results_labels = {str(v).lower() for v in (task_info.get("id2label") or {}).values()}
        if labels and results_labels and results_labels != labels:
            problems.append(f"the results are for labels {sorted(results_labels)}, the model has {sorted(labels)}")
        model_info = data.get("model") or {}
        model_name = str(model_info.get("name") or "")
        base_model = model_info.get("base_model")
        rows = data.get("results")
        if not isinstance(rows, list) or not rows:
            problems.append("'results' must be a non-empty list of {split, metric, value}")
            rows = []
        for row in rows:
            if not isinstance(row, dict) or not {"split", "metric", "value"} <= set(row):
                problems.append(f"result row {row!r} lacks split, metric or value")
                continue
            metric, value = str(row["metric"]), row["value"]
            if not _is_known_metric(metric):
                problems.append(f"unknown metric {metric!r}; known: {sorted(KNOWN_METRICS)}")
                continue
            if value is None:
                continue  # NaN in the run (e.g. a class absent from the split): not reported
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                problems.append(f"metric {metric!r} ({row['split']}) must be a finite number, got {value!r}")
                continue
            entries.append((str(row["split"]), metric, float(value)))
        splits = [s for s, _, _ in entries]
        split = "test" if "test" in splits else (splits[0] if splits else "test")
        for kind, per_label in ((data.get("per_class") or {}).get(split) or {}).items():
            if kind not in ("iou", "accuracy") or not isinstance(per_label, dict):
                continue
            for label, value in per_label.items():
                if labels and str(label).lower() not in labels:
                    problems.append(f"per-class {kind} names class {label!r}, not one of the model's labels "
                                    f"{sorted(labels)}")
                elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    entries.append((split, f"{kind}_{_label_key(label)}", float(value)))
    else:  # flat layout
        task_key, task = _resolve_task(data.get("task"))
        if task is None:
            problems.append(f"unknown task {data.get('task')!r}; known: {sorted(KNOWN_TASKS)}")
            task = {}
        dataset = data.get("dataset")
        dataset_type, dataset_name = task.get("dataset_type"), task.get("dataset_name")
        if isinstance(dataset, dict):
            dataset_type = dataset.get("id") or dataset.get("type") or dataset_type
            dataset_name = dataset.get("name") or dataset_name or dataset_type
        elif isinstance(dataset, str) and dataset and dataset != dataset_type:
            dataset_type, dataset_name = dataset, dataset
        if task and not dataset_type:
            problems.append(f"task {task_key!r} needs a 'dataset' (a Hub dataset id or {{id, name}})")
        split = data.get("split") or "test"
        if not isinstance(split, str):
            problems.append(f"split must be a string, got {split!r}")
            split = "test"
        model_name = str(data.get("model") or "")
        base_model = data.get("base_model")
        metrics_in = data.get("metrics")
        if not isinstance(metrics_in, dict) or not metrics_in:
            problems.append("'metrics' must be a non-empty object {name: value}")
            metrics_in = {}
        for key, value in metrics_in.items():
            name = str(key)
            for prefix in METRIC_KEY_PREFIXES:
                if name.startswith(prefix):
                    name = name[len(prefix):]
            if name in BOOKKEEPING_KEYS:
                continue
            if not _is_known_metric(name):
                problems.append(f"unknown metric {key!r}; known: {sorted(KNOWN_METRICS)} and per-class "
                                f"{', '.join(p + '<label>' for p in PER_CLASS_PREFIXES)}")
                continue
            if label_keys and name not in KNOWN_METRICS:
                label = name.split("_", 1)[1].lower()
                if label not in label_keys and not label.isdigit():
                    problems.append(f"metric {key!r} names class {label!r}, not one of the model's labels "
                                    f"{sorted(labels)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                problems.append(f"metric {key!r} must be a finite number, got {value!r}")
                continue
            entries.append((split, name, float(value)))
    if not problems and not entries:
        problems.append("no finite metric value to report")
    if problems:
        raise PublishError(f"{where} cannot be used for the model card:", problems)
    return Results(
        task=task_key, model=model_name, dataset_type=dataset_type, dataset_name=dataset_name, split=split,
        entries=entries, task_type=task["type"], task_name=task["name"], raw=data,
        base_model=str(base_model) if base_model else None, source_path=path,
    )


# --------------------------------------------------------------------------------------------------- examples
@dataclass
class Example:
    """A widget example: an input GeoTIFF and, once rendered, its PNG quicklooks (repo-relative paths)."""

    source: Path
    title: str
    output_png: Path | None = None  # a quicklook given by the user (e.g. from `degas-hf predict`)
    input_path: str = ""  # examples/<name>.tif in the repo
    rgb_path: str = ""  # images/<name>_rgb.png
    output_path: str = ""  # images/<name>_prediction.png

    @property
    def stem(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.source.stem)


def parse_example(spec: str) -> Example:
    """`INPUT.tif`, `INPUT.tif=OUTPUT.png` or `INPUT.tif=OUTPUT.png=Title`."""
    parts = spec.split("=")
    source = Path(parts[0])
    if not source.is_file():
        raise PublishError(f"Example input {parts[0]!r} does not exist.")
    if source.suffix.lower() not in (".tif", ".tiff"):
        raise PublishError(f"Example input {parts[0]!r} must be a GeoTIFF (.tif).")
    output = Path(parts[1]) if len(parts) > 1 and parts[1] else None
    if output is not None and (not output.is_file() or output.suffix.lower() != ".png"):
        raise PublishError(f"Example output {parts[1]!r} must be an existing PNG.")
    title = parts[2] if len(parts) > 2 and parts[2] else source.stem
    return Example(source=source, title=title, output_png=output)


# --------------------------------------------------------------------------------------------------- staging
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_tree(root: str | os.PathLike) -> list[str]:
    """Every file under `root`, as sorted POSIX paths relative to it."""
    root = Path(root)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def format_tree(root: str | os.PathLike) -> str:
    root = Path(root)
    lines = []
    for rel in list_tree(root):
        path = root / rel
        lines.append(f"  {rel:<48} {path.stat().st_size:>12,d} B  sha256:{_sha256(path)[:12]}")
    return "\n".join(lines)


def stage_tree(
    info: FolderInfo,
    staging: str | os.PathLike,
    *,
    results: Results | None = None,
    examples: Sequence[Example] = (),
) -> Path:
    """Copy what is published from the folder into `staging` (created; must be empty): the folder's files minus
    training leftovers and any README.md (replaced by the rendered card), the results JSON as `results.json`, and
    the widget example inputs as `examples/<name>.tif` (user-given output PNGs as `images/...`). Sets the repo paths
    on each `Example`."""
    staging = Path(staging)
    staging.mkdir(parents=True, exist_ok=True)
    if any(staging.iterdir()):
        raise PublishError(f"Staging folder {str(staging)!r} is not empty.")
    for rel in info.files:
        if rel == README_FILE:
            continue  # replaced by the rendered card
        dst = staging / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(info.folder / rel, dst)
    if results is not None:
        text = json.dumps(results.raw, indent=2, sort_keys=True) + "\n"
        (staging / RESULTS_FILE).write_text(text, encoding="utf-8")
    seen = set()
    for ex in examples:
        if ex.stem in seen:
            raise PublishError(f"Two examples share the name {ex.stem!r}; rename one.")
        seen.add(ex.stem)
        ex.input_path = f"{EXAMPLES_DIR}/{ex.stem}.tif"
        ex.rgb_path = f"{IMAGES_DIR}/{ex.stem}_rgb.png"
        suffix = "prediction" if info.kind == "segmentation" else "reconstruction"
        ex.output_path = f"{IMAGES_DIR}/{ex.stem}_{suffix}.png"
        (staging / EXAMPLES_DIR).mkdir(exist_ok=True)
        (staging / IMAGES_DIR).mkdir(exist_ok=True)
        shutil.copy2(ex.source, staging / ex.input_path)
        if ex.output_png is not None:
            shutil.copy2(ex.output_png, staging / ex.output_path)
    return staging


def example_specs(staging: Path, examples: Sequence[Example]) -> dict[str, dict]:
    """What the clean-process load needs to run each example: its staged path and dates per file."""
    from ..io import infer_frames_per_file, inspect_raster

    specs = {}
    for ex in examples:
        path = staging / ex.input_path
        try:
            frames = infer_frames_per_file(inspect_raster(path).descriptions)
        except Exception as exc:  # noqa: BLE001
            raise PublishError(f"Example {str(ex.source)!r} is not a readable GeoTIFF: {exc}") from None
        specs[ex.stem] = {"path": str(path.resolve()), "frames_per_file": frames}
    return specs


def finish_tree(
    staging: Path,
    info: FolderInfo,
    *,
    repo_id: str,
    results: Results | None = None,
    examples: Sequence[Example] = (),
    predictions_dir: str | os.PathLike | None = None,
    **card_kwargs,
) -> Path:
    """Render the example quicklooks (from the clean-process predictions) and the model card into `staging`."""
    from .model_card import render_model_card
    from .quicklook import render_example_quicklooks

    if examples and predictions_dir is not None:
        render_example_quicklooks(staging, info, examples, Path(predictions_dir))
    card = render_model_card(info, repo_id=repo_id, results=results, examples=examples, **card_kwargs)
    card.save(staging / README_FILE)
    return staging


# --------------------------------------------------------------------------------------------------- clean load
_CLEAN_LOAD_SCRIPT = r'''
import importlib.abc, json, sys

class _BlockDegas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "degas_hf" or name.startswith("degas_hf."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: Hub code must load without degas_hf)")
        return None

sys.meta_path.insert(0, _BlockDegas())
spec = json.loads(sys.argv[1])
folder = spec["folder"]
report = {}
import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoModel

torch.manual_seed(0)
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
report["config_class"] = f"{type(config).__module__}.{type(config).__name__}"
head_cls = getattr(transformers, spec["head"])
model = head_cls.from_pretrained(folder, trust_remote_code=True).eval()
report["model_class"] = f"{type(model).__module__}.{type(model).__name__}"
base = AutoModel.from_pretrained(folder, trust_remote_code=True)
report["base_class"] = f"{type(base).__module__}.{type(base).__name__}"
del base
processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
report["processor_class"] = f"{type(processor).__module__}.{type(processor).__name__}"

C = len(config.band_names)
T = int(config.num_frames)
H, W = [min(int(s), spec["max_size"]) for s in config.image_size]
rng = np.random.default_rng(0)
raw = rng.uniform(100.0, 3000.0, size=(T, C, H, W)).astype("float32")  # the processor takes (T, C, H, W)
inputs = processor(raw, return_tensors="pt")
report["pixel_values"] = list(inputs["pixel_values"].shape)
segmentation = spec["head"] == "AutoModelForSemanticSegmentation"
regression = getattr(config, "problem_type", None) == "regression"

def forward(batch):
    kwargs = {"pixel_values": batch["pixel_values"], "valid_mask": batch.get("valid_mask")}
    if not segmentation:
        kwargs["mask_seed"] = 0
    with torch.no_grad():
        return model(**kwargs)

out = forward(inputs)
if segmentation:
    tensor = out.logits
    expected = [1, int(config.num_labels), H, W]
    if list(tensor.shape) != expected:
        raise SystemExit(f"logits shape {list(tensor.shape)} != {expected}")
else:
    tensor = out.reconstruction
    report["loss"] = float(out.loss) if getattr(out, "loss", None) is not None else None
if not torch.isfinite(tensor).all():
    raise SystemExit("the forward pass produced NaN or Inf")
report["output_shape"] = list(tensor.shape)

out_dir = spec["out_dir"]
for name, ex in spec.get("examples", {}).items():
    batch = processor(ex["path"], frames_per_file=ex["frames_per_file"], return_tensors="pt")
    out = forward(batch)
    if segmentation:
        post = processor.post_process_regression if regression else processor.post_process_semantic_segmentation
        result = post(out, valid_mask=batch["valid_mask"])[0]
        np.save(f"{out_dir}/{name}.npy", result.cpu().numpy())
    else:
        np.save(f"{out_dir}/{name}.npy", out.reconstruction[0].cpu().numpy())
        np.save(f"{out_dir}/{name}_mask.npy", out.mask[0].cpu().numpy())
        np.save(f"{out_dir}/{name}_input.npy", batch["pixel_values"][0].cpu().numpy())
        with open(f"{out_dir}/{name}.json", "w") as f:
            json.dump({"frame": 0}, f)
    report.setdefault("examples", {})[name] = list(batch["pixel_values"].shape)

pipelines = getattr(config, "custom_pipelines", None) or {}
if pipelines:
    from transformers import pipeline
    task = sorted(pipelines)[0]
    pipe = pipeline(task=task, model=folder, trust_remote_code=True)
    report["pipeline_class"] = f"{type(pipe).__module__}.{type(pipe).__name__}"
    first = next(iter(spec.get("examples", {}).values()), None)
    if first is None:
        result = pipe(raw)
    elif first["frames_per_file"] > 1:
        result = pipe(first["path"], frames_per_file=first["frames_per_file"])
    else:
        result = pipe(first["path"])
    report["pipeline_output"] = type(result).__name__

leaked = sorted(m for m in sys.modules if m == "degas_hf" or m.startswith("degas_hf."))
if leaked:
    raise SystemExit(f"degas_hf modules were imported: {leaked}")
print("DEGAS_CLEAN_LOAD_REPORT " + json.dumps(report))
'''


def check_loads_in_clean_process(
    folder: str | os.PathLike,
    *,
    head: str,
    examples: dict[str, str] | None = None,
    out_dir: str | os.PathLike | None = None,
    timeout: float = 600.0,
    max_size: int = 64,
) -> dict:
    """Load `folder` with `trust_remote_code=True` in a fresh interpreter where `degas_hf` cannot be imported,
    run one forward pass (and the custom pipeline on each example GeoTIFF, saving its class map as
    `<out_dir>/<name>.npy`), and return the subprocess's report. Raises `PublishError` if anything fails."""
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="degas-clean-load-") as tmp:
        spec = dict(folder=str(folder), head=head, examples=dict(examples or {}), out_dir=str(out_dir or tmp),
                    max_size=int(max_size))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(
            HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(Path(tmp) / "modules"),
            HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        )
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-c", _CLEAN_LOAD_SCRIPT, json.dumps(spec)],
                cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise PublishError(f"Loading {str(folder)!r} in a clean process took longer than {timeout:.0f} s.") from None
    marker = "DEGAS_CLEAN_LOAD_REPORT "
    lines = [line for line in proc.stdout.splitlines() if line.startswith(marker)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise PublishError(
            f"The folder does not load with trust_remote_code=True without degas_hf installed "
            f"(exit code {proc.returncode}); refusing to publish it. Last lines:\n    " + "\n    ".join(tail)
        )
    return json.loads(lines[-1][len(marker):])


# --------------------------------------------------------------------------------------------------- upload
def resolve_token(token: str | None = None) -> str | None:
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def is_managed_file(path_in_repo: str) -> bool:
    """Files that `publish` owns in a repo: weights, results and example images. A re-publish that no longer has one
    deletes it, so a stale `model.safetensors` can never shadow new sharded weights (transformers tries it first)."""
    name = path_in_repo.split("/")[-1]
    return (
        path_in_repo in (WEIGHTS_FILE, WEIGHTS_INDEX_FILE, RESULTS_FILE)
        or (path_in_repo == name and SHARD_RE.match(name) is not None)
        or path_in_repo.startswith((f"{EXAMPLES_DIR}/", f"{IMAGES_DIR}/"))
    )


def build_operations(
    staging: str | os.PathLike, existing: Sequence[str] = ()
) -> list[CommitOperationAdd | CommitOperationDelete]:
    """Every staged file as an add, plus a delete for each managed file of the repo (`existing`) the tree lacks.
    Other files of the repo (a LICENSE added by hand, say) are left alone."""
    staging = Path(staging)
    staged = list_tree(staging)
    operations: list[CommitOperationAdd | CommitOperationDelete] = [
        CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(staging / rel)) for rel in staged
    ]
    stale = sorted(set(existing) - set(staged))
    operations += [CommitOperationDelete(path_in_repo=rel) for rel in stale if is_managed_file(rel)]
    return operations


def existing_repo_files(api: HfApi, repo_id: str, revision: str | None, token: str) -> list[str]:
    """Files at `revision` of the repo, or none for a repo or branch that does not exist yet."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return list(api.list_repo_files(repo_id=repo_id, revision=revision, repo_type="model", token=token))
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return []


def upload_tree(
    staging: str | os.PathLike,
    repo_id: str,
    *,
    token: str,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    commit_description: str | None = None,
    tag: str | None = None,
    api: HfApi | None = None,
):
    """Create the repo if needed (and the branch `revision` unless opening a PR against it), then upload the whole
    staged tree in ONE `create_commit`, deleting managed files the new tree no longer has (`build_operations`).
    Returns the `CommitInfo`."""
    api = api or HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True, token=token)
    if revision and revision != "main" and not create_pr:
        api.create_branch(repo_id=repo_id, branch=revision, repo_type="model", exist_ok=True, token=token)
    operations = build_operations(staging, existing_repo_files(api, repo_id, revision, token))
    info = api.create_commit(
        repo_id=repo_id, repo_type="model", operations=operations,
        commit_message=commit_message or f"Publish {repo_id.split('/')[-1]} with degas-hf",
        commit_description=commit_description, revision=revision, create_pr=create_pr, token=token,
    )
    if tag:
        api.create_tag(repo_id=repo_id, tag=tag, revision=getattr(info, "oid", None) or revision, repo_type="model",
                       token=token)
    return info


@dataclass
class PublishResult:
    staging: Path
    files: list[str]
    load_report: dict
    commit: Any = None  # CommitInfo when uploaded
    dry_run: bool = False


def publish(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    dry_run: bool = False,
    output_dir: str | os.PathLike | None = None,
    results: str | os.PathLike | None = None,
    examples: list[str | Example] = (),
    base_model: str | None = None,
    license: str = "apache-2.0",
    datasets: list[str] | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    tag: str | None = None,
    template: str | os.PathLike | None = None,
    load_timeout: float = 600.0,
    include: Sequence[str] = (),
    log=print,
) -> PublishResult:
    """Validate, stage, load-check and (unless `dry_run`) upload `folder` to `repo_id` in one commit.

    Every check that can fail (repo id, folder, results, examples, token, clean load) runs before the upload.
    With `dry_run`, the staged tree is written to `output_dir` (which must not exist or be empty). Symbolic links
    out of the folder are never followed; dot files and secret-looking names are left out unless `include` names
    them; everything left out is listed through `log`."""
    validate_repo_id(repo_id)
    if tag and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", tag):
        raise PublishError(f"Malformed tag {tag!r}.")
    info = validate_folder(folder, include=include)
    if info.excluded_reasons:
        log(f"Left out of the upload ({len(info.excluded_reasons)}):")
        for rel, reason in info.excluded_reasons.items():
            log(f"  {rel}: {reason}")
    results_obj = load_results(results, id2label=info.config.get("id2label")) if results else None
    if info.kind == "segmentation" and not base_model and results_obj is not None and results_obj.base_model:
        try:  # finetune records what it loaded: a Hub id is kept, a local path is not a base_model
            base_model = validate_repo_id(results_obj.base_model) if not Path(results_obj.base_model).exists() else None
        except PublishError:
            base_model = None
        if base_model is None:
            log(f"note: the results' base model {results_obj.base_model!r} is not a Hub id; pass --base-model ORG/NAME")
    if base_model:
        try:
            validate_repo_id(base_model)
        except PublishError as exc:
            raise PublishError(f"base_model must be a Hub model id ORG/NAME: {exc}") from None
    if results_obj is not None and info.kind != "segmentation":
        raise PublishError("A results JSON belongs to a fine-tuned (segmentation) model, not a pretrained encoder.")
    example_objs = [e if isinstance(e, Example) else parse_example(str(e)) for e in examples]
    if not dry_run:
        token = resolve_token(token)
        if not token:
            raise PublishError("No Hugging Face token: set HF_TOKEN, run `hf auth login`, or pass --token "
                               "(or use --dry-run).")
    if dry_run:
        if output_dir is None:
            raise PublishError("--dry-run needs an output folder (--output).")
        output_dir = Path(output_dir)
        if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
            raise PublishError(f"Output folder {str(output_dir)!r} exists and is not empty.")
        staging = output_dir
        tmp = None
    else:
        tmp = tempfile.TemporaryDirectory(prefix="degas-publish-")
        staging = Path(tmp.name) / "tree"
    try:
        stage_tree(info, staging, results=results_obj, examples=example_objs)
        log(f"Checking that {repo_id} loads with trust_remote_code=True without degas_hf ...")
        with tempfile.TemporaryDirectory(prefix="degas-predictions-") as predictions:
            report = check_loads_in_clean_process(
                staging, head=info.head, examples=example_specs(staging, example_objs), out_dir=predictions,
                timeout=load_timeout,
            )
            log(f"  ok: {report.get('model_class')} -> output {report.get('output_shape')}")
            finish_tree(
                staging, info, repo_id=repo_id, results=results_obj, examples=example_objs,
                predictions_dir=predictions, base_model=base_model, license=license, datasets=datasets,
                revision=tag or revision, template=template,
            )
        files = list_tree(staging)
        if dry_run:
            log(f"Dry run: the tree that would be uploaded to {repo_id} is in {staging}:")
            log(format_tree(staging))
            return PublishResult(staging=staging, files=files, load_report=report, dry_run=True)
        log(f"Uploading {len(files)} files to {repo_id} in one commit ...")
        commit = upload_tree(
            staging, repo_id, token=token, private=private, revision=revision, create_pr=create_pr,
            commit_message=commit_message, tag=tag,
        )
        log(f"  done: {getattr(commit, 'commit_url', None) or commit}")
        if create_pr:
            log(f"  pull request: {getattr(commit, 'pr_url', None)}")
        return PublishResult(staging=staging, files=files, load_report=report, commit=commit)
    except BaseException:
        if dry_run and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)  # never leave a half-written tree behind
        raise
    finally:
        if tmp is not None:
            tmp.cleanup()


__all__ = [
    "Example", "FolderInfo", "KNOWN_METRICS", "KNOWN_TASKS", "PublishError", "PublishResult", "Results",
    "build_operations", "check_loads_in_clean_process", "format_tree", "list_tree", "load_results",
    "example_specs", "finish_tree", "parse_example", "publish", "resolve_token", "stage_tree", "upload_tree", "validate_folder",
    "validate_repo_id",
]
