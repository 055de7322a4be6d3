"""Writing output files so that no reader ever sees a partial file.

Local paths are written to a temporary name in the same folder and renamed over the
target, which is atomic on POSIX filesystems. Object stores (``s3://``) get one whole-object
put, which S3 makes visible atomically. A task that Dask re-runs overwrites its own files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid

import fsspec


def join(base: str, *parts: str) -> str:
    """Join URL or path segments with ``/``."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def safe_name(name: str) -> str:
    """Return ``name`` usable as one path segment on every filesystem and object store."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "unnamed"


def write_bytes(url: str, data: bytes, *, storage_options=None) -> None:
    """Write ``data`` to ``url`` atomically, creating parent folders."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if not _is_local(fs):
        fs.pipe_file(path, data)
        return

    def fill(temporary):
        with open(temporary, "wb") as f:
            f.write(data)

    _replace_locally(path, fill)


def write_file(url: str, local_path: str, *, storage_options=None) -> None:
    """Move the finished local file ``local_path`` to ``url`` atomically.

    Locally the file is moved to a temporary name beside the target and then renamed over
    it. Object stores get one whole-object upload.
    """
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if not _is_local(fs):
        fs.put_file(local_path, path)
        os.remove(local_path)
        return
    _replace_locally(path, lambda temporary: shutil.move(local_path, temporary))


def _is_local(fs) -> bool:
    return fs.protocol in ("file", "local") or "file" in fs.protocol


def _replace_locally(path: str, fill) -> None:
    """Let ``fill(temporary)`` create a file beside ``path``, then rename it over ``path``."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        fill(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def remove_temporary_files(url: str, *, storage_options=None) -> list[str]:
    """Remove what killed writers left in the local folder ``url``; return the removed paths.

    A process killed between writing a temporary file and renaming it leaves the temporary
    file behind: ``.<name>.<hex>.tmp`` from :func:`write_bytes` and ``<name>.<hex>.partial``
    from Zarr's ``LocalStore``. Object stores need nothing, because a put that did not
    finish leaves no object. Call it only where no other task is writing.
    """
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if not _is_local(fs) or not os.path.isdir(path):
        return []
    removed = []
    for folder, _, names in os.walk(path):
        for name in names:
            if _TEMPORARY.fullmatch(name):
                os.remove(os.path.join(folder, name))
                removed.append(os.path.join(folder, name))
    return removed


_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{32}\.tmp|.+\.[0-9a-f]{32}\.partial")


def write_json(url: str, value, *, storage_options=None) -> None:
    """Write ``value`` as indented JSON to ``url`` atomically."""
    write_bytes(url, json.dumps(value, indent=2, default=_to_builtin).encode("utf-8"),
                storage_options=storage_options)


def read_json(url: str, *, storage_options=None):
    """Read a JSON file written by :func:`write_json`."""
    with fsspec.open(url, "r", **(storage_options or {})) as f:
        return json.load(f)


def _to_builtin(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
