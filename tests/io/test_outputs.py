"""Atomic output writes, folder names of keys, and the clean-up of what killed writers leave
behind."""

import uuid

import pytest

from daskavatar.io.outputs import remove_temporary_files, safe_name, write_bytes


def test_write_bytes_leaves_no_temporary(tmp_path):
    write_bytes(str(tmp_path / "a" / "mesh.ply"), b"ply")

    assert [p.name for p in (tmp_path / "a").iterdir()] == ["mesh.ply"]
    assert (tmp_path / "a" / "mesh.ply").read_bytes() == b"ply"


def test_remove_temporary_files_keeps_outputs(tmp_path):
    hex_id = uuid.uuid4().hex
    stray = [tmp_path / f".mesh.ply.{hex_id}.tmp", tmp_path / "c" / f"0.{hex_id}.partial",
             tmp_path / f"zarr.{hex_id}.partial"]
    outputs = [tmp_path / "mesh.ply", tmp_path / "c" / "0", tmp_path / "notes.tmp",
            tmp_path / ".hidden.tmp", tmp_path / "zarr.json"]
    for path in stray + outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")

    removed = remove_temporary_files(str(tmp_path))

    assert sorted(removed) == sorted(str(path) for path in stray)
    assert all(path.exists() for path in outputs)
    assert not any(path.exists() for path in stray)


def test_remove_temporary_files_missing_folder(tmp_path):
    assert remove_temporary_files(str(tmp_path / "none")) == []


@pytest.mark.parametrize("identity, folder", [
    ("obama", "obama"),
    ("Kit Harington", "Kit_Harington"),
    ("a/b\\c", "a_b_c"),
    ("a  &  b", "a_b"),
    ("Zoë", "Zo"),
    ("Zoë Kravitz", "Zo_Kravitz"),
    ("_cluster_000", "cluster_000"),
    (".hidden.", "hidden"),
    ("v1.2-final", "v1.2-final"),
    ("../..", "unnamed"),
])
def test_safe_name_folder_rule(identity, folder):
    assert safe_name(identity) == folder
