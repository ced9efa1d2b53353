"""The prediction pipeline's fast paths give exactly what the plain paths give: the window normaliser (the
processor's values and mask, bit for bit), reads into reused buffers, recycled batch arrays, the softmax on one
thread. (GeoTIFF reading into buffers and row writing: test_predict_writing.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _helpers_io import BANDS6, write_series

from degas_hf.inference import SlidingWindowPredictor
from degas_hf.inference.sliding_window import _argmax_first_axis, _one_intraop_thread, _WindowNormalizer
from degas_hf.io import GeoTiffTimeSeries
from degas_hf.models.st_swin_mae.image_processing_st_swin_mae import STSwinMAEImageProcessor


def _bits(array: np.ndarray) -> np.ndarray:
    return array.view(np.uint32) if array.dtype == np.float32 else array


@pytest.mark.parametrize("dtype", ["uint16", "int16", "uint8", "float32"])
@pytest.mark.parametrize("processor_nodata", [None, 7.0])
def test_window_normaliser_equals_the_processor_bit_for_bit(dtype, processor_nodata):
    """Per-date nodata of every kind: held by the dtype, out of its range, not an integer, NaN, None."""
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=BANDS6)
    processor.nodata_value = processor_nodata
    info = np.iinfo(dtype) if dtype != "float32" else None
    high = 250 if dtype in ("uint8",) else 3000
    rng = np.random.default_rng(0)
    raw = (rng.random((5, 6, 40, 52)) * high).astype(dtype)
    raw[0, 2, 3:9, 4:20] = 0
    raw[1, :, 10:12] = 7
    if info is not None and info.min < 0:
        raw[2, 5, 30:35, :8] = -3
    nodata = [0.0, 7.0, -3.0 if info is None or info.min < 0 else -9999.0, 0.5, None]
    nodata[3] = float("nan") if dtype == "float32" else 0.5
    normalise = _WindowNormalizer(processor, nodata, recycle=2)
    if dtype != "float32":
        assert normalise._plan(np.dtype(dtype), 5, 6) is not None  # the fast path runs, not the fallback
    expected_values, expected_valid = processor.normalize_array(raw, nodata)
    for _ in range(2):  # the second time into a recycled buffer full of the first batch's values
        values, valid = normalise(raw)
        np.testing.assert_array_equal(_bits(values), _bits(expected_values))
        np.testing.assert_array_equal(valid, expected_valid)
        normalise.release(torch.from_numpy(values))
        raw = raw.copy()
    if dtype != "float32":  # a recycled array's old contents never show through
        garbage = np.full_like(values, np.nan)
        normalise._free = [garbage]
        values, _ = normalise(raw)
        assert values is garbage and not np.isnan(values).any()
        np.testing.assert_array_equal(_bits(values), _bits(expected_values))


def test_window_normaliser_falls_back_where_it_cannot_be_exact():
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=BANDS6)
    normalise = _WindowNormalizer(processor, [0, 0])
    assert normalise._plan(np.dtype("float32"), 2, 6) is None
    assert normalise._plan(np.dtype("int32"), 2, 6) is None  # the processor checks the +-2**24 range
    assert normalise._plan(np.dtype("uint16"), 3, 6) is None  # nodata for 2 dates, 3 dates read
    assert normalise._plan(np.dtype("uint16"), 2, 6) is not None
    raw = np.arange(2 * 6 * 4 * 5, dtype=np.int32).reshape(2, 6, 4, 5)
    values, valid = normalise(raw)
    expected_values, expected_valid = processor.normalize_array(raw, [0, 0])
    np.testing.assert_array_equal(values, expected_values)
    np.testing.assert_array_equal(valid, expected_valid)
    with pytest.raises(ValueError, match="Expected"):  # the processor's own error for a wrong band count
        normalise(raw[:, :5])


def test_prediction_with_the_fast_paths_equals_the_processor_path(tmp_path, monkeypatch):
    """GeoTIFF source read into reused buffers, the window normaliser, recycled batch arrays and the quicklook's extra
    band: the same bits as normalising each batch with the processor."""
    from degas_hf.inference import QuicklookSampler

    paths = write_series(tmp_path, height=120, width=150, stripe=(30, 41))
    processor = STSwinMAEImageProcessor.from_preset("ssl4eo-s12-l1c", band_names=BANDS6[:5])  # B12 read for RGB
    model = _FiveBandModel()
    kwargs = dict(window_size=48, overlap=12, batch_size=2, probabilities=True, progress=False)

    def run(num_workers):
        with GeoTiffTimeSeries(paths) as source:
            sampler = QuicklookSampler(source.height, source.width, source.num_frames, 1, max_size=40)
            result = SlidingWindowPredictor(model, processor, num_workers=num_workers, **kwargs).predict(
                source, quicklook=sampler, rgb_bands=[5])
        return result, sampler.rgb

    fast = [run(workers) for workers in (0, 1, 2)]
    monkeypatch.setattr(_WindowNormalizer, "_plan", lambda self, *key: None)  # the processor for every batch
    plain, plain_rgb = run(1)
    for result, rgb in fast:
        for name in plain:
            np.testing.assert_array_equal(_bits(result[name]), _bits(plain[name]))
        np.testing.assert_array_equal(rgb, plain_rgb)
    assert (plain["classes"][30:41] == 255).all() and (plain["classes"][:30] != 255).all()


class _FiveBandModel(torch.nn.Module):
    """Pixelwise, with some spatial mixing so that windows and blending matter: (B, 5, T, h, w) -> (B, 3, h, w)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(5 * 4, 3, 3, padding=1)

    def forward(self, pixel_values, valid_mask=None):
        batch, channels, frames, height, width = pixel_values.shape
        return {"logits": self.conv(pixel_values.reshape(batch, channels * frames, height, width))}


def test_softmax_on_one_thread_gives_the_same_bits_and_restores_the_thread_count():
    logits = torch.randn(4, 5, 3, 70, 90)[:, :, 1]  # a strided view, as the pipeline's windows are
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        on_two = logits.softmax(dim=1)
        with _one_intraop_thread():
            assert torch.get_num_threads() == 1
            on_one = logits.softmax(dim=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert torch.equal(on_one.view(torch.int32), on_two.view(torch.int32))
    assert math.isclose(on_one.sum().item(), 4 * 70 * 90, rel_tol=1e-5)


@pytest.mark.parametrize("num_classes,dtype", [(1, "uint8"), (2, "uint8"), (3, "uint8"), (7, "int16"), (40, "int16")])
def test_class_argmax_equals_numpy_with_ties_and_nan(num_classes, dtype):
    rng = np.random.default_rng(num_classes)
    values = rng.integers(0, 4, size=(num_classes, 30, 50)).astype(np.float32) / 4  # many ties
    values[:, 0, 0] = np.nan  # every class NaN
    values[-1, 1, :5] = np.nan  # the last class NaN
    values[num_classes // 2, 2, 3:9] = np.nan
    values[0, 3, 1] = -0.0
    values[:, 4, :] = 0.0  # -0.0 and 0.0 tie
    values[1 % num_classes, 4, ::2] = -0.0
    classes = _argmax_first_axis(values, dtype)
    assert classes.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(classes, values.argmax(axis=0).astype(dtype))
