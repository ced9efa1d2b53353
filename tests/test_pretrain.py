"""Pretraining loop: configuration errors, data sharding, 2 CPU ranks (torchrun + gloo) against 1 rank, SIGKILL and
exact resume, truncated-checkpoint fallback, Hub-ready export. Tiny model, 32-48 px, a few steps."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")

from degas_hf.training import checkpointing as ck  # noqa: E402
from degas_hf.training.pretrain import ConfigError, ShardedBatchSampler, load_config, train  # noqa: E402

BANDS = ["B02", "B03", "B04", "B8A", "B11", "B12"]
SAMPLE_S2 = Path(__file__).resolve().parents[1] / "src" / "degas_hf" / "sample_data" / "worldcereal_flanders" / "s2"


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", GLOO_SOCKET_IFNAME="lo", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    """2 series x 4 dates of 32 px, 6 named bands, no nodata (so every rank's loss has the same pixel count)."""
    root = tmp_path_factory.mktemp("series")
    rng = np.random.default_rng(0)
    for site in ("site_a", "site_b"):
        (root / site).mkdir()
        for t in range(4):
            with rasterio.open(root / site / f"2021-0{t + 1}-15.tif", "w", driver="GTiff", width=32, height=32,
                               count=6, dtype="uint16", crs="EPSG:32631",
                               transform=rasterio.Affine(10, 0, 0, 0, -10, 0), nodata=0) as dst:
                dst.write(rng.integers(200, 4000, (6, 32, 32), dtype=np.uint16))
                dst.descriptions = tuple(BANDS)
    return root


@pytest.fixture(scope="module")
def prepared_root(tmp_path_factory) -> Path:
    """The raw SSL4EO-S12 layout (4 locations, 32 px, random DN, no nodata) prepared with prepare-ssl4eo."""
    from test_ssl4eo import write_ssl4eo

    from degas_hf.data.prepared import prepare_ssl4eo

    base = tmp_path_factory.mktemp("ssl4eo")
    raw = write_ssl4eo(base / "raw", n_locations=4, size10=32, nodata_corner=False, random_values=True)
    prepare_ssl4eo(raw, base / "prepared", samples_per_shard=2, progress=False)
    return base / "prepared"


def prepared_overrides(root, out, **kw) -> list[str]:
    return base_overrides(root, out, data__format="prepared", data__samples_per_item=4, **kw)


def base_overrides(root, out, **kw) -> list[str]:
    values = {
        "model.preset": "degas-tiny", "data.format": "timeseries_folder", "data.root": str(root),
        "data.crop_size": 32, "data.num_frames": 4, "data.samples_per_item": 16, "data.num_workers": 0,
        "optim.lr": 2e-3, "optim.warmup_steps": 2, "train.max_steps": 6, "train.per_device_batch_size": 2,
        "train.threads": 1, "logging.tensorboard": "false", "logging.progress_bar": "false",
        "logging.figure_every": 0, "logging.log_every": 1, "checkpoint.save_every": 2, "checkpoint.keep_last": 0,
        "output_dir": str(out),
    }
    values.update({k.replace("__", "."): v for k, v in kw.items()})
    return [f"{k}={v}" for k, v in values.items()]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# ---------------------------------------------------------------------------------------------------------------


def test_config_errors(tmp_path, synthetic_root, capsys):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("model:\n  preset: degas-tiny\ntrain:\n  max_step: 5\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_step' in .*bad.yaml.*did you mean 'train.max_steps'"):
        load_config(cfg_file)
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.betaz' in the command line"):
        load_config(None, base_overrides(synthetic_root, tmp_path) + ["optim.betaz=[0.9,0.9]"])
    with pytest.raises(ConfigError, match="'trian'"):
        load_config(None, ["trian.max_steps=3"])
    with pytest.raises(ConfigError, match="train.max_steps.*integer"):
        load_config(None, base_overrides(synthetic_root, tmp_path) + ["train.max_steps=lots"])
    with pytest.raises(ConfigError, match="data.root is not set"):
        load_config(None, ["model.preset=degas-tiny"])
    cfg = load_config(None, base_overrides(synthetic_root, tmp_path) + ["model.config.mask_ration=0.5"])
    with pytest.raises(ConfigError, match=r"model.config.mask_ration.*did you mean 'mask_ratio'"):
        train(cfg)
    with pytest.raises(ConfigError, match=r"lack the model's band\(s\) \['B12'\]"):
        train(load_config(None, base_overrides(synthetic_root, tmp_path) + ["data.band_names=[B02,B03,B04,B8A,B11]"]))
    # the shipped configurations load (data.root given on the command line)
    from degas_hf.training.pretrain import _resolve_config

    full = load_config(_resolve_config("pretrain_degas_100m"), ["data.root=/data/ssl4eo-s12"])
    assert full.optim.betas == [0.9, 0.95] and full.optim.weight_decay == 0.05 and full.model.preset == "degas-100m"
    load_config(_resolve_config("pretrain_demo"), [f"data.root={SAMPLE_S2}"])
    # the CLI: bad key and bad data fail with status 2 and one clear line, before anything is trained
    from degas_hf.cli import main

    assert main(["pretrain", str(cfg_file)]) == 2
    assert "train.max_step" in capsys.readouterr().err
    empty = tmp_path / "empty_data"
    empty.mkdir()
    out = tmp_path / "never"
    assert main(["pretrain", "pretrain_demo", f"data.root={empty}", f"output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "holds no files" in err
    assert not out.exists()


def test_sharded_sampler_matches_single_rank():
    one = iter(ShardedBatchSampler(20, 4, num_replicas=1, rank=0, seed=5))
    r0 = iter(ShardedBatchSampler(20, 2, num_replicas=2, rank=0, seed=5))
    r1 = iter(ShardedBatchSampler(20, 2, num_replicas=2, rank=1, seed=5))
    for _ in range(12):  # crosses epochs (5 global batches per epoch)
        assert next(r0) + next(r1) == next(one)
    resumed = iter(ShardedBatchSampler(20, 4, seed=5, start=7))
    again = iter(ShardedBatchSampler(20, 4, seed=5))
    for _ in range(7):
        next(again)
    assert [next(resumed) for _ in range(6)] == [next(again) for _ in range(6)]
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        ShardedBatchSampler(3, 2, num_replicas=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_two_cpu_ranks_torchrun(tmp_path, synthetic_root, prepared_root):
    """torchrun --nproc_per_node 2 with ACCELERATE_USE_CPU=1 (gloo): identical weights on both ranks, and the same
    weights as 1 rank with twice the batch (no nodata and a fixed mask ratio: every rank's loss averages the same
    number of pixels, so the mean of the rank means is the global mean). The 2-rank run also uses activation
    checkpointing (non-reentrant, DDP-safe), which recomputes the same values."""
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        from safetensors.torch import save_file
        from degas_hf.training.pretrain import load_config, train
        overrides = {base_overrides(synthetic_root, tmp_path / "ddp", model__activation_checkpointing="true")!r}
        prefix = ""
        if sys.argv[1:] == ["prepared"]:  # raw uint16 crops normalised in the step, shard-local sampler
            overrides, prefix = {prepared_overrides(prepared_root, tmp_path / "ddp_prepared")!r}, "prepared_"
        summary = train(load_config(None, overrides), return_model=True)
        assert summary["num_processes"] == 2, summary
        state = {{k: v.contiguous() for k, v in summary["model"].state_dict().items()}}
        save_file(state, "{tmp_path}/%srank%d.safetensors" % (prefix, summary["process_index"]))
    """))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(script)]
    for extra in ([], ["prepared"]):
        cmd[cmd.index("--master_port") + 1] = str(_free_port())
        proc = subprocess.run(cmd + extra, env=_env(ACCELERATE_USE_CPU="1"), capture_output=True, text=True,
                              timeout=280)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    from safetensors.torch import load_file

    rank0, rank1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), k
    # the main process also exported the Hub-ready folder and wrote the checkpoints
    assert ck.find_latest_checkpoint(tmp_path / "ddp").name == "checkpoint-00000006"
    last = tmp_path / "ddp" / "checkpoint-00000006"
    assert (last / "rng_state_1.safetensors").exists() and (last / "rng_state_1.json").exists()
    assert not list(last.glob("*.pkl")), "checkpoints hold no pickle"

    single = train(load_config(None, base_overrides(synthetic_root, tmp_path / "single", train__per_device_batch_size=4)))
    one = weights(Path(single["export_dir"]))
    ddp = weights(tmp_path / "ddp" / "final")
    for k in rank0:
        torch.testing.assert_close(ddp[k], one[k], rtol=1e-4, atol=2e-5, msg=k)
        assert torch.equal(ddp[k], rank0[k]), k  # the export is the trained model
    losses_ddp = [json.loads(l)["loss"] for l in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    losses_one = [json.loads(l)["loss"] for l in (tmp_path / "single" / "log.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(losses_ddp, losses_one, rtol=1e-4)

    p0, p1 = load_file(str(tmp_path / "prepared_rank0.safetensors")), load_file(str(tmp_path / "prepared_rank1.safetensors"))
    one = weights(Path(train(load_config(None, prepared_overrides(prepared_root, tmp_path / "prepared_single",
                                                                  train__per_device_batch_size=4)))["export_dir"]))
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k
        torch.testing.assert_close(p0[k], one[k], rtol=1e-4, atol=2e-5, msg=k)


def _demo_like(out, **kw) -> list[str]:
    """Real data (the bundled Sentinel-2 series, clouds as nodata), 48 px crops, batch 4."""
    return base_overrides(SAMPLE_S2, out, data__crop_size=48, data__samples_per_item=64, data__in_memory="true",
                          train__per_device_batch_size=4, train__max_steps=40, checkpoint__save_every=3, **kw)


@pytest.mark.timeout(300)
def test_sigkill_resume_is_exact_and_truncated_checkpoint_is_skipped(tmp_path):
    # 1) uninterrupted reference run (also: TensorBoard, figures, loss curve, export)
    ref = train(load_config(None, _demo_like(tmp_path / "ref", logging__tensorboard="true", logging__figure_every=12)))
    assert ref["step"] == 40
    ref_w = weights(Path(ref["export_dir"]))
    assert (tmp_path / "ref" / "figures" / "reconstruction_step00000012.png").stat().st_size > 1000
    assert (tmp_path / "ref" / "loss_curve.png").exists()
    assert list((tmp_path / "ref" / "tensorboard").rglob("events.out.tfevents*"))
    from transformers import AutoImageProcessor, AutoModel

    import degas_hf  # noqa: F401  (registers the Auto classes)

    assert type(AutoModel.from_pretrained(ref["export_dir"])).__name__ == "STSwinMAEModel"
    assert type(AutoImageProcessor.from_pretrained(ref["export_dir"])).__name__ == "STSwinMAEImageProcessor"
    assert (Path(ref["export_dir"]) / "modeling_st_swin_mae.py").exists()

    # 2) the same run in a subprocess (`python -m degas_hf.training.pretrain`), SIGKILLed mid-way
    run = tmp_path / "run"
    cfg_yaml = tmp_path / "cfg.yaml"
    cfg_yaml.write_text("model:\n  preset: degas-tiny\n")
    proc = subprocess.Popen([sys.executable, "-m", "degas_hf.training.pretrain", str(cfg_yaml), *_demo_like(run)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 200
    try:
        while not (run / "checkpoint-00000006" / ck.COMPLETE_MARKER).exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the run did not reach step 6"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = ck.find_latest_checkpoint(run)
    assert killed_at is not None and int(killed_at.name.split("-")[1]) < 40, "the run finished before the kill"
    assert not (run / "final").exists()

    # 3) resume from the latest complete checkpoint: bit-identical final weights
    res = train(load_config(None, _demo_like(run)), resume=True)
    assert res["step"] == 40
    res_w = weights(Path(res["export_dir"]))
    for k in ref_w:
        assert torch.equal(res_w[k], ref_w[k]), k
    steps = [json.loads(l)["step"] for l in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))  # no step logged twice, none missing

    # 4) truncate the newest checkpoint: it is detected, the previous complete one is used, the result is the same
    newest = ck.list_checkpoints(run)[-1]
    assert newest.name == "checkpoint-00000040"
    blob = newest / "model.safetensors"
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    ok, why = ck.verify_checkpoint(newest)
    assert not ok and "model.safetensors" in why and "truncated" in why
    (run / "checkpoint-00000043").mkdir()  # a folder without the completeness marker (crash before the rename)
    assert ck.find_latest_checkpoint(run).name == "checkpoint-00000039"
    shutil.rmtree(run / "checkpoint-00000043")
    res2 = train(load_config(None, _demo_like(run)), resume=True)
    for k in ref_w:
        assert torch.equal(weights(Path(res2["export_dir"]))[k], ref_w[k]), k
    assert ck.verify_checkpoint(run / "checkpoint-00000040")[0]  # rewritten, complete again

    # 5) starting afresh over existing checkpoints is refused
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(load_config(None, _demo_like(run)))


def test_gradient_accumulation_and_bf16(tmp_path, synthetic_root):
    """batch 2 x 2 accumulation steps == batch 4 (same samples, same masks); bf16 autocast runs on CPU."""
    big = train(load_config(None, base_overrides(synthetic_root, tmp_path / "big", train__per_device_batch_size=4,
                                                 train__max_steps=3, checkpoint__save_every=0)))
    acc = train(load_config(None, base_overrides(synthetic_root, tmp_path / "acc", train__gradient_accumulation_steps=2,
                                                 train__max_steps=3, checkpoint__save_every=0)))
    assert acc["step"] == 3 and ck.load_trainer_state(acc["last_checkpoint"])["micro_batches_done"] == 6
    a, b = weights(Path(big["export_dir"])), weights(Path(acc["export_dir"]))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=2e-5, msg=k)
    bf16 = train(load_config(None, base_overrides(synthetic_root, tmp_path / "bf16", train__mixed_precision="bf16",
                                                  train__max_steps=2, checkpoint__save_every=0)))
    assert np.isfinite(bf16["loss"])


def test_pruning_keeps_complete_checkpoints_and_sets_aside_an_abandoned_timeline(tmp_path):
    """A damaged newest checkpoint must not push good ones out, and later steps of an abandoned run (resumed from
    an older checkpoint) must not be resumed from."""
    import os as _os

    from degas_hf.training import checkpointing as ck

    class FakeAccelerator:
        is_main_process = True

        def wait_for_everyone(self):
            pass

        def save_state(self, folder):
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "model.safetensors").write_bytes(_os.urandom(100))

    accelerator = FakeAccelerator()
    for step in (100, 200):
        ck.save_checkpoint(accelerator, tmp_path, step, {"step": step}, keep_last=2)
    damaged = tmp_path / "checkpoint-00000200" / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:50])
    assert ck.find_latest_checkpoint(tmp_path).name == "checkpoint-00000100"  # where --resume goes on

    ck.save_checkpoint(accelerator, tmp_path, 110, {"step": 110}, keep_last=2)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["checkpoint-00000100", "checkpoint-00000110"]
    assert (tmp_path / "stale-checkpoint-00000200").is_dir()
    ck.save_checkpoint(accelerator, tmp_path, 120, {"step": 120}, keep_last=1)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["checkpoint-00000120"]
    assert ck.find_latest_checkpoint(tmp_path).name == "checkpoint-00000120"


# ---------------------------------------------------------------------------------------------------------------
# Nothing a user owns is lost, nothing in a checkpoint runs, one clear line per mistake (issue 13)


def _run_cli(args, capsys) -> tuple[int, str]:
    """`degas-hf pretrain ARGS` in process; a first argument that is not a config gets a minimal YAML one."""
    from degas_hf.cli import main

    if args and ("=" in args[0] or args[0].startswith("-")) and "--resume" not in args[:1]:
        args = [str(_minimal_config()), *args]
    rc = main(["pretrain", *args])
    return rc, capsys.readouterr().err


def _minimal_config() -> Path:
    import tempfile

    path = Path(tempfile.gettempdir()) / "degas_hf_test_pretrain_tiny.yaml"
    path.write_text("model:\n  preset: degas-tiny\n")
    return path


def test_refuses_to_replace_a_model_or_a_finished_run_and_keeps_logs(tmp_path, synthetic_root, capsys):
    old_umask = os.umask(0o022)
    try:
        short = dict(train__max_steps=2, checkpoint__save_every=0, checkpoint__save_final="false")
        first = tmp_path / "a"
        rc, err = _run_cli(base_overrides(synthetic_root, first, **short), capsys)
        assert rc == 0, err
        assert not ck.list_checkpoints(first) and (first / "final" / "model.safetensors").is_file()
        # exported weights follow the umask like every other file (safetensors alone writes 0600)
        assert (first / "final" / "model.safetensors").stat().st_mode & 0o777 == 0o644
        log = (first / "log.jsonl").read_text()
        weights_before = (first / "final" / "model.safetensors").read_bytes()
        rc, err = _run_cli(base_overrides(synthetic_root, first, **short), capsys)
        assert rc == 2 and "holds an earlier run" in err and "--overwrite" in err and err.count("\n") == 1
        assert (first / "log.jsonl").read_text() == log
        # an existing model folder as export_dir of another run
        rc, err = _run_cli(base_overrides(synthetic_root, tmp_path / "b", export_dir=first / "final", **short), capsys)
        assert rc == 2 and "already holds files" in err
        assert (first / "final" / "model.safetensors").read_bytes() == weights_before
        # --overwrite, anywhere on the command line: the run starts again, the old log is kept beside the new one
        rc, err = _run_cli([*base_overrides(synthetic_root, first, **short)[:3], "--overwrite",
                            *base_overrides(synthetic_root, first, **short)[3:]], capsys)
        assert rc == 0, err
        assert (first / "log.previous-1.jsonl").read_text() == log
        assert [json.loads(line)["step"] for line in (first / "log.jsonl").read_text().splitlines()] == [1, 2]
    finally:
        os.umask(old_umask)
    for extra, message in [("checkpoint.keep_last=-1", "checkpoint.keep_last must be >= 0"),
                           ("data.crop_size=0", "data.crop_size must be a positive"),
                           ("output_dir=/sys/degas-hf-test", "output_dir /sys/degas-hf-test cannot be written")]:
        rc, err = _run_cli([*base_overrides(synthetic_root, tmp_path / "c"), extra], capsys)
        assert rc == 2 and message in err and err.count("\n") == 1, err
    rc, err = _run_cli([*base_overrides(synthetic_root, tmp_path / "c"), "--resume", str(tmp_path / "nowhere")], capsys)
    assert rc == 2 and "no such checkpoint folder" in err and "COMPLETE" not in err


class _Payload:
    """Unpickling this runs a command that creates a file: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _replant(checkpoint: Path) -> None:
    """Rewrite the checkpoint's manifest so the planted files pass the completeness check."""
    manifest = json.loads((checkpoint / ck.COMPLETE_MARKER).read_text())
    manifest["files"] = {p.name: {"size": p.stat().st_size, "sha256": ck._sha256(p)}
                         for p in sorted(checkpoint.iterdir()) if p.name != ck.COMPLETE_MARKER}
    (checkpoint / ck.COMPLETE_MARKER).write_text(json.dumps(manifest))


def test_resume_never_unpickles(tmp_path, synthetic_root):
    import pickle

    run = tmp_path / "run"
    train(load_config(None, base_overrides(synthetic_root, run, train__max_steps=4)))
    marker = tmp_path / "pwned"
    latest = run / "checkpoint-00000004"
    assert not list(latest.glob("*.pkl"))
    # Accelerate's load_state unpickles these two; planted here, they must never run
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl"):
        (latest / name).write_bytes(pickle.dumps(_Payload(marker)))
    _replant(latest)
    summary = train(load_config(None, base_overrides(synthetic_root, run)), resume=True)
    assert summary["step"] == 6 and not marker.exists()
    # a crafted optimizer file is refused by the weights-only loader, with one clear line, and does not run either
    crafted = run / "checkpoint-00000006"
    torch.save({"state": _Payload(marker), "param_groups": []}, crafted / "optimizer.bin")
    _replant(crafted)
    with pytest.raises(ck.CheckpointError, match="optimizer.bin is not a plain tensor file"):
        train(load_config(None, base_overrides(synthetic_root, run, train__max_steps=8)), resume=True)
    assert not marker.exists()


def test_resume_order_other_architecture_and_disk_full(tmp_path, synthetic_root, capsys, monkeypatch):
    run = tmp_path / "run"
    cfg_yaml = tmp_path / "cfg.yaml"
    cfg_yaml.write_text("model:\n  preset: degas-tiny\n")
    overrides = base_overrides(synthetic_root, run, train__max_steps=2)
    assert _run_cli([str(cfg_yaml), *overrides], capsys)[0] == 0
    # --resume followed by overrides, and before the configuration: both continue the run
    more = [o for o in overrides if not o.startswith("train.max_steps")]
    rc, err = _run_cli([str(cfg_yaml), "--resume", "train.max_steps=4", *more], capsys)
    assert rc == 0 and ck.find_latest_checkpoint(run).name == "checkpoint-00000004", err
    rc, err = _run_cli(["--resume", str(cfg_yaml), "train.max_steps=5", *more], capsys)
    assert rc == 0 and ck.find_latest_checkpoint(run).name == "checkpoint-00000005", err
    # resuming with another architecture: one line, before any step
    rc, err = _run_cli([str(cfg_yaml), *more, "train.max_steps=7", "model.config.embed_dim=32", "--resume"], capsys)
    assert rc == 2 and "another architecture" in err and err.count("\n") == 1, err
    # the disk fills up while the next checkpoint is written: one line, the previous checkpoint is kept
    from accelerate import Accelerator

    real = Accelerator.save_state

    def full_disk(self, output_dir=None, **kwargs):
        real(self, output_dir, **kwargs)
        raise OSError(28, "No space left on device", str(Path(output_dir) / "optimizer.bin"))

    monkeypatch.setattr(Accelerator, "save_state", full_disk)
    rc, err = _run_cli([str(cfg_yaml), *more, "train.max_steps=7", "--resume"], capsys)
    assert rc == 2 and "checkpoint-00000005 is kept" in err, err
    last = err.strip().splitlines()[-1]  # after the training log lines, one error line, no traceback
    assert last.startswith("degas-hf pretrain: error: no space left on device") and "Traceback" not in err
    assert ck.find_latest_checkpoint(run).name == "checkpoint-00000005"
    assert not [p for p in run.iterdir() if p.name.startswith(".tmp-")]


def test_train_compile_uses_compile_model(tmp_path, synthetic_root, monkeypatch):
    """`train.compile: true` compiles through degas_hf.training.compile.compile_model (regional, in place)."""
    import degas_hf.training.compile as compile_module

    calls = []
    monkeypatch.setattr(compile_module, "compile_model", lambda model, **kw: calls.append(type(model).__name__) or model)
    train(load_config(None, base_overrides(synthetic_root, tmp_path / "c", train__compile="true", train__max_steps=1,
                                           checkpoint__save_every=0)))
    assert calls == ["STSwinMAEForPreTraining"]


def test_null_counts_are_off_or_one_line_errors(tmp_path):
    """`null` for a count that means "off" when 0 (as the code before the range checks took it) is still accepted;
    for a count that needs a number it is a ConfigError, not a TypeError traceback."""
    base = base_overrides(tmp_path, tmp_path / "run")
    for key in ("checkpoint.keep_last", "checkpoint.save_every", "logging.figure_every", "data.prefetch_factor"):
        load_config(None, base + [f"{key}=null"])
    for key in ("data.samples_per_item", "data.num_workers", "data.shuffle_shards"):
        with pytest.raises(ConfigError, match=rf"{key} must be"):
            load_config(None, base + [f"{key}=null"])


def test_crafted_scaler_state_is_a_checkpoint_error(tmp_path, synthetic_root):
    """fp16 runs restore `scaler.pt` with the weights-only loader too: a crafted file is one CheckpointError line
    (like a crafted optimizer.bin), not an UnpicklingError traceback, and it does not run."""
    from types import SimpleNamespace

    from degas_hf.models.st_swin_mae.modeling_st_swin_mae import STSwinMAEForPreTraining
    from degas_hf.training.pretrain import param_groups

    run = tmp_path / "run"
    train(load_config(None, base_overrides(synthetic_root, run, train__max_steps=2)))
    checkpoint = run / "checkpoint-00000002"
    marker = tmp_path / "pwned"
    torch.save({"scale": _Payload(marker)}, checkpoint / "scaler.pt")
    model = STSwinMAEForPreTraining.from_pretrained(run / "final")
    optimizer = torch.optim.AdamW(param_groups(model, 0.05))
    accelerator = SimpleNamespace(distributed_type="NO", process_index=0, unwrap_model=lambda m: m,
                                  scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(ck.CheckpointError, match="scaler.pt is not a plain tensor file"):
        ck.load_checkpoint(accelerator, model, optimizer, None, checkpoint)
    assert not marker.exists()


@pytest.mark.parametrize("data_format", ["timeseries_folder", "prepared"])
def test_training_forward_skips_the_finite_check_and_the_saved_config_keeps_it(tmp_path, synthetic_root, prepared_root,
                                                                               monkeypatch, data_format):
    """The NaN/Inf check reads the batch (a host sync per step on a GPU); the loaders' batches are finite by
    construction, so the training forward leaves it out, while the exported config keeps the user's setting."""
    from degas_hf.models.st_swin_mae import modeling_st_swin_mae as modeling

    seen = []
    original = modeling.STSwinMAEPreTrainedModel._checks_data
    monkeypatch.setattr(modeling.STSwinMAEPreTrainedModel, "_checks_data", lambda self: seen.append(original(self)) or seen[-1])
    out, export = tmp_path / "run", tmp_path / "export"
    overrides = (prepared_overrides(prepared_root, out, train__max_steps=2, checkpoint__save_every=0)
                 if data_format == "prepared" else
                 base_overrides(synthetic_root, out, train__max_steps=2, checkpoint__save_every=0))
    train(load_config(None, overrides + [f"export_dir={export}"]))
    assert seen and not any(seen), "the training forward must not read the batch on the host"
    assert json.loads((export / "config.json").read_text())["check_finite_inputs"] is True


def test_activation_checkpointing_modes_in_the_config(tmp_path, synthetic_root, monkeypatch):
    """model.activation_checkpointing: none/full/selective, true/false keep their former meaning, anything else is
    one clear error; the chosen mode reaches the model."""
    import degas_hf.training.activation_checkpointing as module

    for value, mode in (("true", "full"), ("false", "none"), ("selective", "selective"), ("full", "full")):
        cfg = load_config(None, base_overrides(synthetic_root, tmp_path / value, model__activation_checkpointing=value))
        assert cfg.model.activation_checkpointing == mode
    with pytest.raises(ConfigError, match="model.activation_checkpointing must be none, full or selective, got 'some'"):
        load_config(None, base_overrides(synthetic_root, tmp_path / "bad", model__activation_checkpointing="some"))
    calls = []
    original = module.enable_activation_checkpointing
    monkeypatch.setattr(module, "enable_activation_checkpointing", lambda model, mode: calls.append(mode) or original(model, mode))
    train(load_config(None, base_overrides(synthetic_root, tmp_path / "run", model__activation_checkpointing="selective",
                                           train__max_steps=1, checkpoint__save_every=0)))
    assert calls == ["selective"]
