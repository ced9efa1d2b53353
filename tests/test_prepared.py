"""The prepared pretraining format: `degas-hf prepare-ssl4eo` (raw layout in, tar shards + manifest out), its
resumption after a disk-full error, its refusals, the reader (same pixels as the raw reader, damaged shards named),
the shard-local sampler, and pretraining from it (exact resume)."""

from __future__ import annotations

import errno
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")

from test_ssl4eo import MODEL_BANDS, SEASON_IDS, write_ssl4eo  # noqa: E402

from degas_hf.cli import main  # noqa: E402
from degas_hf.data import prepared  # noqa: E402
from degas_hf.data.prepared import PreparedDataset, PrepareError, prepare_ssl4eo, read_manifest  # noqa: E402
from degas_hf.data.ssl4eo import SSL4EOS12Dataset  # noqa: E402
from degas_hf.data.timeseries_folder import DataError, collate_pretraining  # noqa: E402
from degas_hf.models.st_swin_mae.image_processing_st_swin_mae import STSwinMAEImageProcessor  # noqa: E402
from degas_hf.training.pretrain import ShardedBatchSampler, load_config, train  # noqa: E402


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    """5 locations of the raw layout, 32 px at 10 m, random DN."""
    return write_ssl4eo(tmp_path_factory.mktemp("raw") / "ssl4eo", n_locations=5, size10=32, random_values=True)


@pytest.fixture(scope="module")
def prepared_root(raw_root, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("prep") / "prepared"
    prepare_ssl4eo(raw_root, dst, band_names=MODEL_BANDS, samples_per_shard=2, progress=False)
    return dst


def test_prepared_holds_the_raw_readers_pixels(raw_root, prepared_root):
    manifest = read_manifest(prepared_root)
    assert manifest["samples"] == 5 and len(manifest["shards"]) == 3 and manifest["skipped"] == 0
    assert manifest["sample_shape"] == [4, 6, 32, 32] and manifest["dtype"] == "<u2"
    assert manifest["normalization"] == "ssl4eo-s12-l2a" and manifest["nodata"] == 0
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l2a", band_names=MODEL_BANDS)
    ds = PreparedDataset(prepared_root, crop_size=24, processor=processor, seed=4, output="raw")
    raw = SSL4EOS12Dataset(raw_root, crop_size=24, processor=processor, seed=4, output="raw")
    assert len(ds) == len(raw) == 5
    for key in [(0, 0), (0, 4), (3, 2)]:
        a, b = ds[key], raw[key]
        assert a["raw_values"].dtype == torch.uint16 and torch.equal(a["raw_values"], b["raw_values"])
        assert a["mask_seed"] == b["mask_seed"]
    assert ds.sample_meta(0)["location"] == "0000005" and ds.sample_meta(0)["dates"] == sorted(ds.sample_meta(0)["dates"])
    # normalised output, a band subset in another order, and a DataLoader worker give the same values
    norm = PreparedDataset(prepared_root, band_names=MODEL_BANDS[::-1], crop_size=24, processor=processor, seed=4)
    ref = SSL4EOS12Dataset(raw_root, band_names=MODEL_BANDS[::-1], crop_size=24, processor=processor, seed=4)
    assert torch.equal(norm[(1, 3)]["pixel_values"], ref[(1, 3)]["pixel_values"])
    loader = torch.utils.data.DataLoader(ds, batch_sampler=[[(0, 1), (0, 2)]], collate_fn=collate_pretraining,
                                         num_workers=1)
    assert torch.equal(next(iter(loader))["raw_values"], collate_pretraining([ds[(0, 1)], ds[(0, 2)]])["raw_values"])
    # the shards are plain tar files of .npy + .json members (WebDataset layout)
    import tarfile

    with tarfile.open(prepared_root / "shard-000000.tar") as tar:
        assert tar.getnames() == ["0000005.npy", "0000005.json", "0000042.npy", "0000042.json"]
        array = np.load(io.BytesIO(tar.extractfile("0000042.npy").read()))
    assert array.shape == (4, 6, 32, 32) and np.array_equal(array[:, :, :24, :24],
                                                            raw.read_item_raw(1, None, (0, 0, 24, 24)))
    with pytest.raises(DataError, match=r"missing band\(s\) \['B05'\]"):
        PreparedDataset(prepared_root, band_names=["B05"], processor=processor)


def test_damaged_shards_are_named(prepared_root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(prepared_root, copy)
    shard = copy / "shard-000001.tar"
    blob = bytearray(shard.read_bytes())
    offset = read_manifest(copy)["shards"][1]["offsets"][0]
    blob[offset + 100] ^= 0xFF  # one flipped byte in a pixel
    shard.write_bytes(bytes(blob))
    PreparedDataset(copy, crop_size=None)  # default check: sizes only (cheap on terabytes)
    with pytest.raises(DataError, match=r"shard .*shard-000001.tar does not match its SHA-256"):
        PreparedDataset(copy, crop_size=None, validate="full")
    with pytest.raises(DataError, match=r"shard-000001.tar has \d+ bytes, the manifest says \d+ \(truncated"):
        shard.write_bytes(bytes(blob[: len(blob) // 2]))
        PreparedDataset(copy, crop_size=None)
    # damaged after the checks (validate="none"): the read names the shard instead of returning garbage
    ds = PreparedDataset(copy, crop_size=None, validate="none", output="raw")
    with pytest.raises(DataError, match=r"shard .*shard-000001.tar is damaged"):
        ds[(0, 3)]
    assert main(["prepare-ssl4eo", "--verify", str(copy), "--no-progress"]) == 2


def test_prepare_resumes_after_disk_full_and_refuses_other_data(raw_root, tmp_path, monkeypatch, capsys):
    dst = tmp_path / "prepared"
    real_write = prepared._HashingWriter.write
    written = {"bytes": 0}

    def full_disk(self, b):  # the disk fills up half-way through the second shard
        written["bytes"] += len(b)
        if written["bytes"] > 1.5 * 112640:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, b)

    monkeypatch.setattr(prepared._HashingWriter, "write", full_disk)
    assert main(["prepare-ssl4eo", str(raw_root), str(dst), "--samples-per-shard", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no space left on device" in err and "1 complete shard(s) are kept" in err and "\n" == err[-1]
    assert err.count("\n") == 1
    first = dst / "shard-000000.tar"
    assert first.is_file() and not (dst / "manifest.json").exists()
    mtime = first.stat().st_mtime_ns
    assert not list(dst.glob(".*.tmp"))  # the half-written shard was removed
    with pytest.raises(DataError, match="unfinished preparation"):
        PreparedDataset(dst)
    monkeypatch.setattr(prepared._HashingWriter, "write", real_write)
    assert main(["prepare-ssl4eo", str(raw_root), str(dst), "--samples-per-shard", "2", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["samples"] == 5 and summary["shards"] == 3
    assert first.stat().st_mtime_ns == mtime  # the complete shard was kept, not rewritten
    assert not list(dst.glob(".*.tmp"))
    assert main(["prepare-ssl4eo", "--verify", str(dst), "--no-progress"]) == 0
    # the same command again: nothing to do
    assert main(["prepare-ssl4eo", str(raw_root), str(dst), "--samples-per-shard", "2", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["already_complete"] is True
    # another preparation into the same folder, a foreign non-empty folder, a source that is not SSL4EO-S12
    assert main(["prepare-ssl4eo", str(raw_root), str(dst), "--bands", "B02,B03", "--no-progress"]) == 2
    assert "already holds another prepared dataset" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["prepare-ssl4eo", str(raw_root), str(foreign), "--no-progress"]) == 2
    assert "is not empty and holds no prepared dataset" in capsys.readouterr().err
    assert main(["prepare-ssl4eo", str(tmp_path), str(tmp_path / "x"), "--no-progress"]) == 2
    assert "is not SSL4EO-S12" in capsys.readouterr().err


def test_prepare_skips_and_counts_incomplete_locations(tmp_path, capsys):
    src = write_ssl4eo(tmp_path / "ssl4eo", n_locations=3, size10=16)
    locations = sorted((src / "s2a").iterdir())
    (locations[1] / SEASON_IDS[0] / "B11.tif").unlink()  # a missing band
    shutil.rmtree(locations[2] / SEASON_IDS[3])  # a missing season
    assert main(["prepare-ssl4eo", str(src), str(tmp_path / "out"), "--workers", "2", "--samples-per-shard", "1",
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["samples"] == 1 and summary["skipped"] == 2
    assert "skipped 2 sample(s)" in captured.err
    reasons = [s["reason"] for s in read_manifest(tmp_path / "out")["skipped_items"]]
    assert any("B11" in r for r in reasons) and any("season folder" in r for r in reasons)
    assert main(["prepare-ssl4eo", str(src), str(tmp_path / "strict"), "--on-bad-sample", "error",
                 "--no-progress"]) == 2
    assert "missing band file(s) ['B11']" in capsys.readouterr().err


def test_shard_local_permutation_is_a_seeded_split_without_overlap():
    groups = [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20)]
    one = ShardedBatchSampler(20, 4, seed=3, groups=groups, shuffle_groups=2)
    perm = one.permutation(0)
    assert sorted(perm.tolist()) == list(range(20)) and not np.array_equal(perm, one.permutation(1))
    assert np.array_equal(perm, ShardedBatchSampler(20, 4, seed=3, groups=groups, shuffle_groups=2).permutation(0))
    # every run of 2 shuffled shards stays together: the first 8 samples come from 2 shards
    assert len({i // 4 for i in perm[:8].tolist()}) == 2
    r0 = iter(ShardedBatchSampler(20, 2, num_replicas=2, rank=0, seed=3, groups=groups, shuffle_groups=2))
    r1 = iter(ShardedBatchSampler(20, 2, num_replicas=2, rank=1, seed=3, groups=groups, shuffle_groups=2))
    it = iter(one)
    for _ in range(7):
        a, b = next(r0), next(r1)
        assert not set(a) & set(b) and a + b == next(it)


def _overrides(root, out, **kw):
    values = {"model.preset": "degas-tiny", "data.format": "prepared", "data.root": str(root), "data.crop_size": 32,
              "data.samples_per_item": 4, "data.num_workers": 0, "optim.lr": 2e-3, "optim.warmup_steps": 2,
              "train.max_steps": 6, "train.per_device_batch_size": 2, "train.threads": 1,
              "logging.tensorboard": "false", "logging.progress_bar": "false", "logging.figure_every": 0,
              "logging.log_every": 1, "checkpoint.save_every": 2, "checkpoint.keep_last": 0, "output_dir": str(out)}
    values.update({k.replace("__", "."): v for k, v in kw.items()})
    return [f"{k}={v}" for k, v in values.items()]


def test_pretrain_from_prepared_resumes_bit_exactly(prepared_root, tmp_path):
    from safetensors.torch import load_file

    ref = train(load_config(None, _overrides(prepared_root, tmp_path / "ref")))
    assert ref["step"] == 6 and np.isfinite(ref["loss"])
    # the state at step 2 of the same run, with everything after it gone (a crash after checkpoint 2)
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "ref", run)
    for later in ("checkpoint-00000004", "checkpoint-00000006", "final"):
        shutil.rmtree(run / later)
    res = train(load_config(None, _overrides(prepared_root, run)), resume=True)
    assert res["step"] == 6
    a, b = load_file(str(tmp_path / "ref" / "final" / "model.safetensors")), load_file(str(run / "final" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))
    assert [json.loads(line)["step"] for line in (run / "log.abandoned.jsonl").read_text().splitlines()] == [3, 4, 5, 6]


def test_batches_are_read_in_place(prepared_root, raw_root):
    """DataLoader fetches a batch at once: each crop is copied straight into its slot of one batch tensor (shared
    memory in a worker), which collate hands on without another copy; the values equal sample-by-sample reads."""
    for ds in (PreparedDataset(prepared_root, crop_size=24, seed=2, output="raw"),
               PreparedDataset(prepared_root, crop_size=40, seed=2, output="raw"),  # padded with nodata
               SSL4EOS12Dataset(raw_root, crop_size=24, seed=2, output="raw")):
        keys = [(0, 1), (0, 3), (2, 0)]
        items = ds.__getitems__(keys)
        batch = collate_pretraining(items)
        assert batch["raw_values"].data_ptr() == items[0]["raw_values"].data_ptr()  # no stacking copy
        one_by_one = collate_pretraining([ds[k] for k in keys])
        for name in ("raw_values", "mask_seed", "index"):
            assert torch.equal(batch[name], one_by_one[name]), name
        loader = torch.utils.data.DataLoader(ds, batch_sampler=[keys], collate_fn=collate_pretraining, num_workers=1)
        assert torch.equal(next(iter(loader))["raw_values"], one_by_one["raw_values"])
    padded = PreparedDataset(prepared_root, crop_size=40, seed=2, output="raw")[(0, 0)]["raw_values"]
    assert padded.shape == (4, 6, 40, 40) and (padded[..., 32:, :] == 0).all()


def test_prepare_from_v11_zarr_keeps_values_and_offset(tmp_path):
    """v1.1 zarr chunks are stored as they are (int16 with the +1000 offset, recorded in the manifest) and read back
    exactly like the zarr reader reads them; the v1.1 statistics are the default normalisation."""
    pytest.importorskip("zarr")
    from test_ssl4eo import _write_zarr

    from degas_hf.data.ssl4eo import SSL4EO_BANDS, SSL4EOS12ZarrDataset

    path = _write_zarr(tmp_path / "v11" / "train" / "S2L2A" / "ssl4eos12_train_seasonal_data_000001.zarr.zip",
                       list(SSL4EO_BANDS["s2a"]), n=3, size=20, value=1800)
    manifest = prepare_ssl4eo(tmp_path / "v11", tmp_path / "prepared", samples_per_shard=2, progress=False)
    assert manifest["samples"] == 3 and manifest["dtype"] == "<i2" and manifest["dn_offset"] == 1000
    assert manifest["normalization"] == "ssl4eo-s12-v1.1-l2a"
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-v1.1-l2a", band_names=MODEL_BANDS)
    prep = PreparedDataset(tmp_path / "prepared", crop_size=16, processor=processor, seed=1)
    direct = SSL4EOS12ZarrDataset(path, band_names=MODEL_BANDS, crop_size=16, processor=processor, seed=1)
    for key in [(0, 0), (0, 2)]:
        assert torch.equal(prep[key]["pixel_values"], direct[key]["pixel_values"])
