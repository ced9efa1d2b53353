"""Crash-safe training checkpoints on top of `accelerator.save_state`, and the Hub-ready export.

A checkpoint is written into a temporary folder `.tmp-checkpoint-<step>` (every rank writes its part through
`accelerator.save_state`), then the main process writes `trainer_state.json` (step, data position, ...), a
manifest `COMPLETE` listing every file with its size and SHA-256, fsyncs, and renames the folder to
`checkpoint-<step>` (an atomic rename on POSIX file systems). A crash at any point leaves either no
`checkpoint-<step>` folder or a complete one; a folder whose files no longer match the manifest (truncated or
damaged later) is detected by :func:`verify_checkpoint` and skipped by :func:`find_latest_checkpoint`, which then
falls back to the previous complete one.

Nothing in a checkpoint is ever unpickled. Accelerate writes the model (safetensors) and the optimizer
(`optimizer.bin`, read back with `torch.load(weights_only=True)`, which refuses anything but tensors and plain
containers); every rank's RNG states go to `rng_state_<rank>.safetensors` (torch CPU / CUDA generators) and
`rng_state_<rank>.json` (Python, NumPy); the scheduler and the data position live in `trainer_state.json`. The
pickled `random_states_*.pkl` Accelerate writes are deleted before the manifest, and :func:`load_checkpoint`
restores everything itself instead of calling `accelerator.load_state` (which unpickles `custom_checkpoint_*.pkl`).

Multi-node runs need `output_dir` on a file system all nodes share (every rank writes its RNG state there).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_PREFIX",
    "COMPLETE_MARKER",
    "TRAINER_STATE",
    "save_checkpoint",
    "prune_checkpoints",
    "verify_checkpoint",
    "list_checkpoints",
    "find_latest_checkpoint",
    "load_trainer_state",
    "load_checkpoint",
    "export_pretrained",
    "CheckpointError",
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or resumed from; the message says which and why, in one line."""

CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-checkpoint-"
COMPLETE_MARKER = "COMPLETE"
TRAINER_STATE = "trainer_state.json"
_CKPT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER)


def _os_error(err: OSError, what: str) -> CheckpointError:
    if err.errno == errno.ENOSPC:
        return CheckpointError(f"no space left on device while {what}")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CheckpointError(f"cannot write while {what}: {err.strerror} ({err.filename or 'read-only'})")
    return CheckpointError(f"{what} failed: {err.strerror or err}")


def rng_state_files(rank: int) -> tuple[str, str]:
    return f"rng_state_{rank}.safetensors", f"rng_state_{rank}.json"


def save_rng_state(folder: Path, rank: int) -> None:
    """This process's RNG states, without pickle: torch generators as uint8 tensors, Python / NumPy as JSON."""
    import torch
    from safetensors.torch import save_file

    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = state
    st_name, json_name = rng_state_files(rank)
    save_file(tensors, str(folder / st_name))
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    _write_json_atomic(folder / json_name, {
        "python": {"version": version, "state": list(state), "gauss_next": gauss},
        "numpy": {"name": name, "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
    })


def load_rng_state(folder: Path, rank: int) -> bool:
    """Restore what :func:`save_rng_state` wrote; False when this rank has no saved state."""
    import torch
    from safetensors.torch import load_file

    st_name, json_name = rng_state_files(rank)
    if not (folder / st_name).is_file() or not (folder / json_name).is_file():
        return False
    tensors = load_file(str(folder / st_name))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda_")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    data = json.loads((folder / json_name).read_text())
    py = data["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"]), py["gauss_next"]))
    npy = data["numpy"]
    np.random.set_state((npy["name"], np.asarray(npy["keys"], dtype=np.uint32), int(npy["pos"]), int(npy["has_gauss"]),
                         float(npy["cached_gaussian"])))
    return True


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, trainer_state: dict[str, Any],
                    keep_last: int | None = 3, checksums: bool = True) -> Path:
    """Save the full training state for `step` atomically. Call on EVERY process (save_state is collective).

    Returns the final `checkpoint-<step>` path. Keeps the newest `keep_last` complete checkpoints (None: all).
    A failed write (disk full, read-only folder) removes the partial folder and raises :class:`CheckpointError`;
    the previous checkpoints are untouched.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"{CHECKPOINT_PREFIX}{step:08d}"
    tmp = output_dir / f"{TMP_PREFIX}{step:08d}"
    try:
        if accelerator.is_main_process:
            output_dir.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        rank = getattr(accelerator, "process_index", 0)
        pickled = tmp / f"random_states_{rank}.pkl"  # Accelerate's pickle; replaced by the files below
        if pickled.exists():
            pickled.unlink()
        save_rng_state(tmp, rank)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            umask_permissions(tmp)
            _write_json_atomic(tmp / TRAINER_STATE, trainer_state)
            manifest = {"step": int(step), "files": {}}
            for p in _files(tmp):
                _fsync_file(p)
                entry = {"size": p.stat().st_size}
                if checksums:
                    entry["sha256"] = _sha256(p)
                manifest["files"][str(p.relative_to(tmp))] = entry
            _write_json_atomic(tmp / COMPLETE_MARKER, manifest)
            _fsync_dir(tmp)
            if final.exists():  # a re-run of the same step (e.g. after resuming from an older checkpoint)
                shutil.rmtree(final)
            os.rename(tmp, final)
            _fsync_dir(output_dir)
            prune_checkpoints(output_dir, step, keep_last)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = find_latest_checkpoint(output_dir, checksums=False)
        kept = f"; the previous checkpoint {previous} is kept" if previous is not None else ""
        raise CheckpointError(str(_os_error(err, f"saving {final.name} in {output_dir}")) + kept) from None
    accelerator.wait_for_everyone()
    return final


STALE_PREFIX = "stale-checkpoint-"


def prune_checkpoints(output_dir: str | os.PathLike, current_step: int, keep_last: int | None) -> None:
    """After saving `current_step`: set aside checkpoints of an abandoned timeline, then keep the newest `keep_last`
    COMPLETE ones.

    Checkpoints with a step above `current_step` come from a run that was resumed from an older checkpoint; left in
    place, `--resume` would jump back to them. They are renamed `stale-checkpoint-<step>` (kept for inspection,
    never resumed from). Damaged or incomplete checkpoints never count towards `keep_last`, so they cannot push a
    good one out; they are removed once older than every kept one.
    """
    output_dir = Path(output_dir)
    complete = []
    for path in list_checkpoints(output_dir):
        step = int(_CKPT_RE.match(path.name).group(1))
        if step > current_step:
            stale = output_dir / f"{STALE_PREFIX}{path.name[len(CHECKPOINT_PREFIX):]}"
            shutil.rmtree(stale, ignore_errors=True)
            os.rename(path, stale)
            logger.warning("Set aside %s (a later step of an abandoned run) as %s", path.name, stale.name)
        elif verify_checkpoint(path, checksums=False)[0]:
            complete.append(path)
    if not keep_last or len(complete) <= int(keep_last):
        return
    oldest_kept = int(_CKPT_RE.match(complete[-int(keep_last)].name).group(1))
    for path in list_checkpoints(output_dir):
        if int(_CKPT_RE.match(path.name).group(1)) < oldest_kept:
            shutil.rmtree(path, ignore_errors=True)


def verify_checkpoint(path: str | os.PathLike, checksums: bool = True) -> tuple[bool, str]:
    """(True, "") when `path` is a complete checkpoint whose files match its manifest, else (False, why)."""
    path = Path(path)
    marker = path / COMPLETE_MARKER
    if not marker.is_file():
        return False, f"no {COMPLETE_MARKER} marker (the save did not finish)"
    try:
        manifest = json.loads(marker.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return False, f"unreadable {COMPLETE_MARKER} marker: {err}"
    if TRAINER_STATE not in files:
        return False, f"{TRAINER_STATE} is not in the manifest"
    for rel, entry in files.items():
        p = path / rel
        if not p.is_file():
            return False, f"{rel} is missing"
        size = p.stat().st_size
        if size != entry.get("size"):
            return False, f"{rel} has {size} bytes, the manifest says {entry.get('size')} (truncated?)"
        if checksums and "sha256" in entry and _sha256(p) != entry["sha256"]:
            return False, f"{rel} does not match its SHA-256 in the manifest (damaged)"
    return True, ""


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """`checkpoint-<step>` folders (complete or not), oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def find_latest_checkpoint(output_dir: str | os.PathLike, checksums: bool = True) -> Path | None:
    """The newest checkpoint that passes :func:`verify_checkpoint`; damaged newer ones are reported and skipped."""
    for path in reversed(list_checkpoints(output_dir)):
        ok, why = verify_checkpoint(path, checksums=checksums)
        if ok:
            return path
        logger.warning("Skipping incomplete checkpoint %s: %s", path, why)
    return None


def load_trainer_state(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(path) / TRAINER_STATE).read_text())


def load_checkpoint(accelerator, model, optimizer, scheduler, path: str | os.PathLike) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and this rank's RNG states from a checkpoint without unpickling
    anything (see the module docstring). Returns the trainer state. Raises :class:`CheckpointError` when the
    checkpoint holds another architecture or a file that is not plain tensors (a crafted pickle)."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    state = load_trainer_state(path)
    distributed = str(getattr(accelerator, "distributed_type", ""))
    if "FSDP" in distributed or "DEEPSPEED" in distributed:
        # sharded states need Accelerate's loaders; none of our own objects is registered with it, and the RNG
        # files it would unpickle are not in our checkpoints (restored below instead)
        accelerator.load_state(str(path))
    else:
        unwrapped = accelerator.unwrap_model(model)
        weights = path / "model.safetensors"
        try:
            saved = load_file(str(weights))
        except Exception as err:  # noqa: BLE001 - safetensors raises several kinds on bad files
            raise CheckpointError(f"cannot resume from {path}: {weights.name} is unreadable ({err})") from None
        own = unwrapped.state_dict()
        missing = [k for k in own if k not in saved]
        unexpected = [k for k in saved if k not in own]
        reshaped = [k for k in own if k in saved and tuple(own[k].shape) != tuple(saved[k].shape)]
        if missing or unexpected or reshaped:
            example = (f"{reshaped[0]}: {tuple(saved[reshaped[0]].shape)} in the checkpoint, "
                       f"{tuple(own[reshaped[0]].shape)} here") if reshaped else (missing or unexpected)[0]
            raise CheckpointError(
                f"cannot resume from {path}: it holds another architecture ({len(missing)} missing, {len(unexpected)} "
                f"unexpected, {len(reshaped)} differently shaped tensors, e.g. {example}); resume with the model "
                "configuration it was written with")
        unwrapped.load_state_dict(saved, strict=True)
        try:
            opt_state = torch.load(path / "optimizer.bin", map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - UnpicklingError for anything but tensors and plain containers
            raise CheckpointError(f"cannot resume from {path}: optimizer.bin is not a plain tensor file "
                                  f"(refused, nothing was executed): {str(err).splitlines()[0]}") from None
        try:
            optimizer.load_state_dict(opt_state)
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(f"cannot resume from {path}: the optimizer state does not fit this model "
                                  f"({str(err).splitlines()[0]})") from None
        scaler = getattr(accelerator, "scaler", None)
        if scaler is not None and (path / "scaler.pt").is_file():
            try:
                scaler_state = torch.load(path / "scaler.pt", map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - as for optimizer.bin
                raise CheckpointError(f"cannot resume from {path}: scaler.pt is not a plain tensor file "
                                      f"(refused, nothing was executed): {str(err).splitlines()[0]}") from None
            scaler.load_state_dict(scaler_state)
    if scheduler is not None:
        if "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        else:  # written by an older degas-hf (pickled scheduler, not loaded): the schedule is a function of the step
            scheduler.last_epoch = int(state["step"]) - 1
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scheduler.step()
    if not load_rng_state(path, getattr(accelerator, "process_index", 0)):
        logger.warning("%s holds no RNG state for rank %d (written by an older degas-hf or by fewer processes); "
                       "the run goes on from freshly seeded generators", path, getattr(accelerator, "process_index", 0))
    return state


def umask_permissions(folder: str | os.PathLike) -> None:
    """Give every file of `folder` the permissions the user's umask allows (optimizer and RNG states are written by
    safetensors too, 0600)."""
    from ..models.st_swin_mae.modeling_st_swin_mae import follow_umask

    follow_umask(Path(folder).rglob("*"))


def clean_temporary(output_dir: str | os.PathLike) -> None:
    """Remove `.tmp-checkpoint-*` leftovers of a crashed save (main process only)."""
    output_dir = Path(output_dir)
    if output_dir.is_dir():
        for p in output_dir.iterdir():
            if p.name.startswith(TMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True)


def export_pretrained(model, processor, folder: str | os.PathLike, accelerator=None) -> Path:
    """Write a Hub-ready folder: `config.json`, `model.safetensors`, `preprocessor_config.json` and the model code
    (copied by `save_pretrained` through `register_for_auto_class`), loadable with `AutoModel.from_pretrained`
    (also with `trust_remote_code=True` where degas-hf is not installed).

    With an `accelerator`, call it on every process: the state dict is gathered (FSDP / DeepSpeed) and only the main
    process writes.
    """
    folder = Path(folder)
    if accelerator is not None:
        state_dict = accelerator.get_state_dict(model)
        unwrapped = accelerator.unwrap_model(model)
        is_main = accelerator.is_main_process
    else:
        state_dict, unwrapped, is_main = None, model, True
    if is_main:
        folder.mkdir(parents=True, exist_ok=True)
        type(unwrapped.config).register_for_auto_class()
        type(unwrapped).register_for_auto_class("AutoModelForPreTraining"
                                                if type(unwrapped).__name__.endswith("ForPreTraining") else "AutoModel")
        kwargs = {} if state_dict is None else {"state_dict": state_dict}
        unwrapped.save_pretrained(folder, safe_serialization=True, **kwargs)
        if processor is not None:
            type(processor).register_for_auto_class("AutoImageProcessor")
            processor.save_pretrained(folder)
        umask_permissions(folder)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return folder
