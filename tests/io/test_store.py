"""The Zarr feature store: layout, dtypes and one writer per chunk."""

import numpy as np
import pytest
import zarr

from daskavatar.io.store import create_feature_store, read_rows, write_crop, write_partition


def _meta(count, value):
    return {"landmarks": np.full((count, 68, 2), value, np.float32),
            "c2w": np.full((count, 4, 4), value, np.float32),
            "intrinsics": np.full((count, 3, 3), value, np.float32),
            "reprojection_error": np.full(count, value, np.float32),
            "status": np.zeros(count, np.int8)}


def test_store_layout(tmp_path):
    url = str(tmp_path / "features.zarr")

    create_feature_store(url, num_rows=10, resolution=32, partition_rows=4)

    group = zarr.open_group(url, mode="r")
    assert group["crops"].shape == (10, 32, 32, 3)
    assert group["crops"].dtype == np.uint8
    assert group["crops"].chunks == (1, 32, 32, 3)
    assert group["landmarks"].shape == (10, 68, 2)
    assert group["landmarks"].chunks == (4, 68, 2)
    assert group["c2w"].dtype == np.float32
    assert group["status"].dtype == np.int8
    assert group["status"][:].tolist() == [1] * 10


def test_partitions_fill_their_own_chunks(tmp_path):
    url = str(tmp_path / "features.zarr")
    create_feature_store(url, num_rows=10, resolution=8, partition_rows=4)

    for partition, start in enumerate((0, 4, 8)):
        count = min(4, 10 - start)
        write_partition(url, start, _meta(count, float(partition + 1)))
        for row in range(start, start + count):
            write_crop(url, row, np.full((8, 8, 3), row + 1, np.uint8))

    data = read_rows(url, range(10))
    assert data["reprojection_error"].tolist() == [1.0] * 4 + [2.0] * 4 + [3.0] * 2
    assert data["crops"][:, 0, 0, 0].tolist() == list(range(1, 11))
    assert data["status"].tolist() == [0] * 10
    # Three partitions write three metadata chunks per array, and ten crop chunks.
    chunk_files = sorted(p.name for p in (tmp_path / "features.zarr" / "landmarks" / "c").iterdir())
    assert chunk_files == ["0", "1", "2"]
    assert len(list((tmp_path / "features.zarr" / "crops" / "c").iterdir())) == 10


def test_partition_start_must_align(tmp_path):
    url = str(tmp_path / "features.zarr")
    create_feature_store(url, num_rows=10, resolution=8, partition_rows=4)

    with pytest.raises(ValueError, match="not a multiple of 4"):
        write_partition(url, 2, _meta(2, 1.0))


def test_read_selected_rows(tmp_path):
    url = str(tmp_path / "features.zarr")
    create_feature_store(url, num_rows=6, resolution=8, partition_rows=3)
    write_partition(url, 0, _meta(3, 1.0))
    write_partition(url, 3, _meta(3, 2.0))

    data = read_rows(url, [5, 1])

    assert data["rows"].tolist() == [1, 5]
    assert data["c2w"][:, 0, 0].tolist() == [1.0, 2.0]
    assert data["crops"].shape == (2, 8, 8, 3)
