"""GeoTIFF I/O of `degas-hf predict`: windows read into a caller's buffer (dates promoted as before), rows written
as whole rows of tiles (each tile compressed once, in any order, nothing left behind on failure)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import rasterio
from _helpers_io import write_series

from degas_hf.io import GeoTiffTimeSeries, GeoTiffWriter, write_geotiff


def test_series_reads_into_a_buffer_and_promotes_mixed_dtypes(tmp_path):
    paths = write_series(tmp_path, num_dates=2, height=40, width=30)
    with GeoTiffTimeSeries(paths) as source:
        expected = source.read(5, 3, 20, 17, bands=[4, 0])
        buffer = np.empty((2, 2, 20, 17), dtype=np.uint16)
        assert source.read(5, 3, 20, 17, bands=[4, 0], out=buffer) is buffer
        np.testing.assert_array_equal(buffer, expected)
        with pytest.raises(ValueError, match=r"`out` must be a C-contiguous uint16 array of shape \(2, 2, 20, 17\)"):
            source.read(5, 3, 20, 17, bands=[4, 0], out=np.empty((2, 2, 20, 18), dtype=np.uint16))
        with pytest.raises(ValueError, match="non-contiguous"):
            source.read(5, 3, 20, 17, bands=[4, 0], out=np.empty((2, 2, 20, 34), dtype=np.uint16)[..., ::2])
        decimated = source.read(out_shape=(10, 6))
        assert decimated.shape == (2, 6, 10, 6) and decimated.dtype == np.uint16
    # a float date beside a uint16 date: promoted as np.stack did, never cast down to the first date's dtype
    with rasterio.open(paths[1]) as src:
        values = src.read().astype(np.float32) + 0.25
        profile = src.profile
    write_geotiff(tmp_path / "float.tif", values, crs=profile["crs"], transform=profile["transform"], nodata=0)
    with GeoTiffTimeSeries([paths[0], tmp_path / "float.tif"]) as source:
        both = source.read()
        assert source.read_dtype == np.float32 and both.dtype == np.float32
        np.testing.assert_array_equal(both[1], values)


def test_sink_compresses_each_tile_once(tmp_path):
    """Regression: strips that end inside a row of tiles (224 of 256 rows in `degas-hf predict`) made GDAL compress
    those tiles twice and keep both copies whenever its block cache needed the room (which the prediction's reads
    fill; a 1 MB cache stands for that here): the class map was up to 3x larger than the same map written at once
    (1.5x in the 4096^2 benchmark)."""
    from degas_hf.inference import GeoTiffSink

    classes = np.random.default_rng(0).integers(0, 3, size=(600, 700), dtype=np.uint8)
    write_geotiff(tmp_path / "once.tif", classes, nodata=255, band_names=["class"])

    class Source:
        crs, transform = None, None

    paths = {"main": tmp_path / "strips.tif"}
    with rasterio.Env(GDAL_CACHEMAX=1), contextlib.ExitStack() as stack:
        sink = GeoTiffSink(paths, Source(), stack)
        sink.allocate({"classes": (1, "uint8", 255)}, 600, 700)
        for top in range(0, 600, 56):
            sink.write("classes", classes[top : top + 56], top)
    with rasterio.open(paths["main"]) as written:
        np.testing.assert_array_equal(written.read(1), classes)
    assert paths["main"].stat().st_size <= (tmp_path / "once.tif").stat().st_size


def test_write_rows_in_any_order_and_rows_never_written(tmp_path):
    rng = np.random.default_rng(1)
    probabilities = rng.random((3, 300, 90)).astype(np.float32)
    with GeoTiffWriter(tmp_path / "shuffled.tif", 300, 90, 3, "float32", nodata=float("nan"), block_size=64) as writer:
        strips = [(top, min(top + 50, 300)) for top in range(0, 300, 50)]
        for top, end in reversed(strips):  # e.g. several devices finishing their rows in any order
            writer.write_rows(probabilities[:, top:end], row_off=top)
        assert not writer._pending_rows  # every row of tiles complete, handed to GDAL
        with pytest.raises(ValueError, match="3 band\\(s\\) x 90 columns"):
            writer.write_rows(probabilities[:, :10, :80], row_off=0)
        with pytest.raises(ValueError, match="outside the raster"):
            writer.write_rows(probabilities[:, :10], row_off=295)
    with rasterio.open(tmp_path / "shuffled.tif") as written:
        np.testing.assert_array_equal(written.read(), probabilities)
    classes = rng.integers(0, 5, size=(100, 40), dtype=np.uint8)
    for name, method in (("partial.tif", "write_rows"), ("direct.tif", "write")):
        with GeoTiffWriter(tmp_path / name, 100, 40, 1, "uint8", nodata=255, block_size=32) as writer:
            getattr(writer, method)(classes[:50], row_off=0)  # rows 50-99 never come: rows 32-49 still reach the file
            getattr(writer, method)(classes[70:75], row_off=70)
    with rasterio.open(tmp_path / "partial.tif") as written, rasterio.open(tmp_path / "direct.tif") as direct:
        got = written.read(1)
        np.testing.assert_array_equal(got, direct.read(1))  # unwritten rows hold GDAL's fill, as before
    np.testing.assert_array_equal(got[:50], classes[:50])
    np.testing.assert_array_equal(got[70:75], classes[70:75])


def test_a_failed_write_leaves_no_file_and_no_pending_rows(tmp_path):
    with pytest.raises(RuntimeError, match="stop"):
        with GeoTiffWriter(tmp_path / "failed.tif", 100, 40, 1, "uint8", block_size=32) as writer:
            writer.write_rows(np.ones((1, 40, 40), dtype=np.uint8), row_off=0)
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
