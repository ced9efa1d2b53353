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
def test_two_cpu_ranks_torchrun(tmp_path, synthetic_root):
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
        summary = train(load_config(None, overrides), return_model=True)
        assert summary["num_processes"] == 2, summary
        state = {{k: v.contiguous() for k, v in summary["model"].state_dict().items()}}
        save_file(state, "{tmp_path}/rank%d.safetensors" % summary["process_index"])
    """))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(script)]
    proc = subprocess.run(cmd, env=_env(ACCELERATE_USE_CPU="1"), capture_output=True, text=True, timeout=280)
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
