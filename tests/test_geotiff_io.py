"""GeoTIFF I/O: time series on one grid, windowed reads, band files at several resolutions, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from _helpers_io import BANDS6, LSTS, S1_CHIP, S2_CHIP, S2_JP2, write_series
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from degas_hf.io import (
    GeoTiffTimeSeries,
    GeoTiffWriter,
    atomic_output,
    band_name_from_path,
    inspect_raster,
    read_band_files,
    read_time_series,
    write_geotiff,
)


def test_inspect_real_chips():
    s2 = inspect_raster(S2_CHIP)
    assert (s2.count, s2.dtype, s2.nodata, s2.shape) == (13, "int16", 0.0, (512, 512))
    assert s2.descriptions[8] == "B8A"
    s1 = inspect_raster(S1_CHIP)
    assert s1.count == 2 and np.isnan(s1.nodata) and s1.descriptions == ("VV", "VH")


def test_time_series_reads_windows_of_every_date():
    with GeoTiffTimeSeries([str(p) for p in LSTS], band_names=["RED"]) as series:
        assert (series.num_frames, series.num_bands, series.height, series.width) == (4, 1, 61, 61)
        assert series.nodata == [-9999.0] * 4 and series.band_names == ["RED"]
        full = series.read_all()
        window = series.read(10, 20, 16, 8)
        assert full.shape == (4, 1, 61, 61) and window.shape == (4, 1, 16, 8)
        np.testing.assert_array_equal(window, full[:, :, 10:26, 20:28])
        with pytest.raises(ValueError, match="outside the raster"):
            series.read(50, 50, 20, 20)
    assert (full == -9999).mean() > 0.1  # SLC-off stripes


def test_band_selection_and_descriptions(tmp_path):
    paths = write_series(tmp_path, num_dates=2, height=12, width=10)
    array, series = read_time_series(paths)
    assert series.band_names == BANDS6 and array.shape == (2, 6, 12, 10)
    with series:
        picked = series.read(bands=[5, 0])
    np.testing.assert_array_equal(picked, array[:, [5, 0]])


def test_grid_checks_across_dates(tmp_path):
    for name, kwargs, message in [
        ("crs", {"crs": "EPSG:4326"}, "CRS"),
        ("size", {"width": 11}, "size"),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        other = write_series(folder, num_dates=1, height=12, **{"width": 10, **kwargs})
        reference = write_series(tmp_path, num_dates=1, height=12, width=10)
        with pytest.raises(ValueError, match=message):
            GeoTiffTimeSeries([reference[0], other[0]])
    shifted = tmp_path / "shifted.tif"
    write_geotiff(shifted, np.ones((6, 12, 10), np.uint16), crs="EPSG:32633",
                  transform=from_origin(300010, 5800000, 10, 10))
    with pytest.raises(ValueError, match="transform"):
        GeoTiffTimeSeries([reference[0], shifted])
    three = tmp_path / "three.tif"
    write_geotiff(three, np.ones((3, 12, 10), np.uint16), crs="EPSG:32633",
                  transform=from_origin(300000, 5800000, 10, 10))
    with pytest.raises(ValueError, match="band count"):
        GeoTiffTimeSeries([reference[0], three])
    with pytest.raises(ValueError, match="names 2 bands"):
        GeoTiffTimeSeries([reference[0]], band_names=["a", "b"])
    with pytest.raises(ValueError, match="empty list"):
        GeoTiffTimeSeries([])


def test_missing_not_raster_and_corrupt(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        GeoTiffTimeSeries([tmp_path / "nope.tif"])
    with pytest.raises(ValueError, match="is a folder"):
        GeoTiffTimeSeries([tmp_path])
    (tmp_path / "text.tif").write_text("hello")
    with pytest.raises(ValueError, match="not a readable raster"):
        GeoTiffTimeSeries([tmp_path / "text.tif"])
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(S2_CHIP.read_bytes()[:20000])  # header intact, tiles truncated
    with pytest.raises(ValueError):
        with GeoTiffTimeSeries([corrupt]) as series:
            series.read_all()


def test_band_files_at_10_20_60_m_on_one_grid():
    assert band_name_from_path("T33UUU_20170216T102101_B8A.jp2") == "B8A"
    assert len(S2_JP2) == 13
    array, profile, names = read_band_files(S2_JP2, resampling=Resampling.nearest)
    assert array.shape == (13, 96, 96) and array.dtype == np.uint16
    assert profile["transform"].a == 10.0 and names[0] == "B01" and names[-1] == "B8A"
    with rasterio.open(S2_JP2[0]) as src:  # B01 at 60 m: each pixel becomes 6 x 6
        b01 = src.read(1)
    np.testing.assert_array_equal(array[0, ::6, ::6], b01)
    with rasterio.open(S2_JP2[1]) as src:  # B02 at 10 m: unchanged
        np.testing.assert_array_equal(array[1], src.read(1))


def test_write_keeps_georeference_nodata_and_is_tiled(tmp_path):
    with rasterio.open(S1_CHIP) as src:
        data, crs, transform = src.read(), src.crs, src.transform
    out = write_geotiff(tmp_path / "out.tif", data, crs=crs, transform=transform, nodata=float("nan"),
                        band_names=["VV", "VH"])
    with rasterio.open(out) as dst:
        assert dst.crs == crs and dst.transform.almost_equals(transform)
        assert np.isnan(dst.nodata) and dst.descriptions == ("VV", "VH")
        assert dst.profile["compress"] == "deflate" and dst.block_shapes[0] == (128, 128)
        np.testing.assert_array_equal(dst.read(), data)
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]
    big = write_geotiff(tmp_path / "big.tif", np.zeros((600, 520), np.uint8), crs=crs, transform=transform)
    with rasterio.open(big) as dst:
        assert dst.profile["tiled"] and dst.block_shapes[0] == (256, 256)


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError):
        with GeoTiffWriter(target, 32, 32, 1, "uint8", crs="EPSG:32633",
                           transform=from_origin(0, 0, 10, 10), nodata=255) as writer:
            writer.write(np.zeros((1, 16, 32), np.uint8))
            raise RuntimeError("model crashed half way")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="Expected 1 bands"):
        with GeoTiffWriter(target, 8, 8, 1, "uint8") as writer:
            writer.write(np.zeros((2, 8, 8), np.uint8))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="does not exist"):
        write_geotiff(tmp_path / "missing" / "out.tif", np.zeros((4, 4), np.uint8))
    with atomic_output(tmp_path / "x.png") as tmp:
        tmp.write_bytes(b"png")
    assert (tmp_path / "x.png").read_bytes() == b"png" and len(list(tmp_path.iterdir())) == 1


def test_cloud_optimized_output_with_overviews_and_colour_table(tmp_path):
    classes = (np.arange(700 * 600) % 3).reshape(700, 600).astype(np.uint8)
    out = write_geotiff(tmp_path / "classes.tif", classes, crs="EPSG:32633", transform=from_origin(0, 0, 10, 10),
                        nodata=255, cog=True, colormap={0: (31, 119, 180), 1: (255, 127, 14), 2: (44, 160, 44)},
                        class_names={0: "land", 1: "water", 2: "cloud"})
    with rasterio.open(out) as dst:
        assert dst.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and dst.overviews(1)
        assert dst.colormap(1)[2] == (44, 160, 44, 255)
        assert dst.tags()["CLASS_NAMES"] == '{"0": "land", "1": "water", "2": "cloud"}'
        np.testing.assert_array_equal(dst.read(1), classes)
    assert [p.name for p in tmp_path.iterdir()] == ["classes.tif"]  # the working copy is gone
    with pytest.raises(ValueError, match="colour table needs uint8 or uint16"):
        write_geotiff(tmp_path / "f.tif", np.zeros((4, 4), np.float32), colormap={0: (0, 0, 0)})


def test_cloud_optimized_writer_failing_to_open_leaves_no_temporary(tmp_path):
    """A COG writer keeps a working copy beside the temporary output; a failure while setting it up (here band tags
    for a band that does not exist) must remove both, not only the output's temporary."""
    with pytest.raises(IndexError):
        with GeoTiffWriter(tmp_path / "out.tif", 8, 8, 1, "uint8", cog=True, band_tags=[{}, {"a": "b"}]):
            pass
    assert list(tmp_path.iterdir()) == []


def test_reads_from_short_lived_threads_do_not_accumulate_open_files():
    """Each predict call reads through new reader threads; the handles of threads that have ended are closed when
    another thread opens its own, so predicting many times over one open series does not run out of files."""
    import os
    import threading

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("counts open files through /proc/self/fd")

    def read_in_a_thread(series):
        thread = threading.Thread(target=series.read, kwargs=dict(height=8, width=8))
        thread.start()
        thread.join()

    with GeoTiffTimeSeries([str(p) for p in LSTS], band_names=["RED"]) as series:
        read_in_a_thread(series)
        opened = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            read_in_a_thread(series)
        assert len(os.listdir("/proc/self/fd")) <= opened


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    import os

    from degas_hf.io.geotiff import remove_stale_temporaries

    target = tmp_path / "out.tif"
    dead = tmp_path / ".out.tif.4194303.k2j_9xab.tmp.tif"  # above Linux's pid_max: no such process
    older_naming = tmp_path / ".out.tif.k2j_9xab.tmp.tif"
    aux = tmp_path / ".out.tif.4194303.k2j_9xab.tmp.tif.aux.xml"
    mine = tmp_path / f".out.tif.{os.getpid()}.abcdefgh.tmp.tif"
    other_output = tmp_path / ".other.tif.4194303.abcdefgh.tmp.tif"
    longer_name = tmp_path / ".out.tif.x.tif.4194303.abcdefgh.tmp.tif"  # a temporary of "out.tif.x.tif"
    for path in (dead, older_naming, aux, mine, other_output, longer_name):
        path.write_bytes(b"x")
    removed = remove_stale_temporaries(target)
    assert sorted(p.name for p in removed) == sorted([dead.name, older_naming.name, aux.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other_output.name, longer_name.name])
    with atomic_output(target) as tmp:
        assert tmp.name.startswith(f".out.tif.{os.getpid()}.") and tmp.name.endswith(".tmp.tif")
        tmp.write_bytes(b"done")


def test_time_series_reads_from_several_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    paths = write_series(tmp_path, num_dates=2, height=64, width=48, stripe=None)
    with GeoTiffTimeSeries(paths) as series:
        full = series.read_all()
        with ThreadPoolExecutor(4) as pool:
            windows = list(pool.map(lambda r: series.read(r, 0, 8, 48), list(range(0, 64, 8)) * 4))
    for index, window in enumerate(windows):
        row = (index % 8) * 8
        np.testing.assert_array_equal(window, full[:, :, row : row + 8])
