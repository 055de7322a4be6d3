"""The Zarr feature store ``features.zarr`` written by the map stage.

Layout (``n`` images, crop side ``r``, partitions of ``p`` rows):

============================  =====================  ==========  ================
array                         shape                  dtype       chunks
============================  =====================  ==========  ================
``crops``                     (n, r, r, 3)           uint8       (1, r, r, 3)
``landmarks``                 (n, 68, 2)             float32     (p, 68, 2)
``c2w``                       (n, 4, 4)              float32     (p, 4, 4)
``intrinsics``                (n, 3, 3)              float32     (p, 3, 3)
``reprojection_error``        (n,)                   float32     (p,)
``status``                    (n,)                   int8        (p,)
============================  =====================  ==========  ================

Row ``i`` belongs to the image with ``ImageRecord.row == i``. Landmarks and intrinsics are in
crop pixels; ``c2w`` maps OpenCV camera coordinates to the head frame of
:mod:`daskavatar.faces.pose`. ``status`` is 0 for a usable face and 1 otherwise (the reason
is in the job report). Every chunk has exactly one writer: a crop chunk is one image, and a
metadata chunk is one map partition, because parallel partial writes into one chunk lose
data. Local paths go to Zarr's ``LocalStore``, which writes each chunk to a temporary file
and renames it; ``s3://`` and other fsspec URLs go to ``FsspecStore``, one whole-object put
per chunk. Either way a reader never sees a partial chunk.
"""

from __future__ import annotations

import numpy as np
import zarr

STATUS_OK = 0
STATUS_REJECTED = 1

_META_ARRAYS = {
    "landmarks": ((68, 2), "float32"),
    "c2w": ((4, 4), "float32"),
    "intrinsics": ((3, 3), "float32"),
    "reprojection_error": ((), "float32"),
    "status": ((), "int8"),
}


def create_feature_store(url: str, *, num_rows: int, resolution: int, partition_rows: int,
                         storage_options=None) -> None:
    """Create (or replace) the empty arrays of ``features.zarr`` at ``url``."""
    group = _open_group(url, mode="w", storage_options=storage_options)
    group.attrs.update({"resolution": resolution, "partition_rows": partition_rows,
                        "camera_convention": "opencv", "status_codes": {"ok": STATUS_OK,
                                                                        "rejected": STATUS_REJECTED}})
    group.create_array("crops", shape=(num_rows, resolution, resolution, 3),
                       chunks=(1, resolution, resolution, 3), dtype="uint8", fill_value=0)
    for name, (shape, dtype) in _META_ARRAYS.items():
        fill = STATUS_REJECTED if name == "status" else 0
        group.create_array(name, shape=(num_rows, *shape), chunks=(partition_rows, *shape),
                           dtype=dtype, fill_value=fill)


def feature_store_matches(url: str, *, num_rows: int, resolution: int, partition_rows: int,
                          storage_options=None) -> bool:
    """Return whether ``url`` contains a feature store of this layout, so a resumed job keeps it."""
    try:
        group = _open_group(url, mode="r", storage_options=storage_options)
        crops = group["crops"]
    except (FileNotFoundError, KeyError, zarr.errors.NodeTypeValidationError,
            zarr.errors.GroupNotFoundError):
        return False
    return (crops.shape == (num_rows, resolution, resolution, 3)
            and group.attrs.get("partition_rows") == partition_rows
            and all(name in group for name in _META_ARRAYS))


def write_crop(url: str, row: int, crop: np.ndarray, *, storage_options=None) -> None:
    """Write one crop ``(r, r, 3)`` uint8 into its own chunk."""
    group = _open_group(url, mode="r+", storage_options=storage_options)
    group["crops"][row] = crop


def write_partition(url: str, start: int, values: dict[str, np.ndarray], *,
                    storage_options=None) -> None:
    """Write a partition's metadata rows ``[start, start + len)`` of every metadata array.

    ``start`` must be a multiple of the partition size so the rows fill whole chunks that no
    other partition touches.
    """
    group = _open_group(url, mode="r+", storage_options=storage_options)
    partition_rows = group.attrs["partition_rows"]
    if start % partition_rows:
        raise ValueError(f"partition start {start} is not a multiple of {partition_rows}")
    for name in _META_ARRAYS:
        array = values[name]
        group[name][start:start + len(array)] = array


def read_rows(url: str, rows, *, names=None, storage_options=None) -> dict[str, np.ndarray]:
    """Read the given rows of the arrays in ``names`` (default: all), plus ``rows`` itself.

    Every array comes back with ``len(rows)`` leading rows, in ascending row order.
    """
    group = _open_group(url, mode="r", storage_options=storage_options)
    rows = np.asarray(sorted(rows), dtype=np.int64)
    names = ("crops", *_META_ARRAYS) if names is None else tuple(names)
    result = {name: group[name].get_orthogonal_selection((rows,)) for name in names
              if name in _META_ARRAYS}
    if "crops" in names:
        result["crops"] = np.stack([group["crops"][int(row)] for row in rows]) if len(rows) \
            else np.zeros((0,) + group["crops"].shape[1:], dtype=np.uint8)
    result["rows"] = rows
    return result


def _open_group(url: str, *, mode: str, storage_options=None) -> zarr.Group:
    """Open the group at ``url``; ``storage_options`` only reach fsspec URLs.

    Zarr raises ``TypeError`` for ``storage_options`` with a local path, even an empty dict,
    and a ``file://`` URL would bypass ``LocalStore``'s write-then-rename, so local paths
    and ``file://`` URLs are opened as plain paths.
    """
    if url.startswith("file://"):
        url = url[len("file://"):]
    if "://" not in url:
        return zarr.open_group(url, mode=mode)
    return zarr.open_group(url, mode=mode, storage_options=storage_options or {})
