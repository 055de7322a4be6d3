"""Discovery of input images and their identities."""

import os

import numpy as np
import pytest
from PIL import Image

from daskavatar.exceptions import InputNotFoundError, JobSpecError
from daskavatar.io.images import discover_images, read_image
from tests.conftest import shared_path


def _write(path, mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, (8, 8)).save(path)


def test_identity_from_folder(tmp_path):
    for name in ("ann/1.jpg", "ann/2.jpg", "bob/1.jpg", "solo.jpg", "_extra/x.jpg"):
        _write(str(tmp_path / name))

    records = discover_images([str(tmp_path / "**" / "*.jpg")])

    identities = {r.image_id: r.identity for r in records}
    assert identities == {"ann/1.jpg": "ann", "ann/2.jpg": "ann", "bob/1.jpg": "bob",
                          "solo.jpg": "solo", "_extra/x.jpg": "_extra__x"}
    assert [r.row for r in records] == list(range(5))


def test_folder_input_finds_images_only(tmp_path):
    _write(str(tmp_path / "ann" / "1.png"))
    (tmp_path / "notes.txt").write_text("not an image")

    records = discover_images([str(tmp_path)])

    assert [r.image_id for r in records] == ["ann/1.png"]


def test_folder_input_finds_every_suffix(tmp_path, monkeypatch):
    for name in ("ann/1.jpg", "ann/2.jpeg", "ann/3.JPG", "bob/1.png", "bob/2.webp"):
        _write(str(tmp_path / "faces" / name))
    monkeypatch.chdir(tmp_path)

    from_folder = discover_images(["faces/"])
    from_glob = discover_images(["faces/**/*.jpg"])

    assert {r.image_id: r.identity for r in from_folder} == {
        "ann/1.jpg": "ann", "ann/2.jpeg": "ann", "ann/3.JPG": "ann", "bob/1.png": "bob",
        "bob/2.webp": "bob"}
    assert [r.image_id for r in from_glob] == ["ann/1.jpg"]


def test_csv_overrides_folders():
    folder = shared_path("faces_deepface")

    records = discover_images([os.path.join(folder, "images", "*.jpg")],
                              identities_csv=os.path.join(folder, "identities.csv"))

    by_id = {r.image_id: r.identity for r in records}
    assert by_id["img2.jpg"] == "person_01"
    labelled = {r.identity for r in records if r.identity.startswith("person_")}
    assert len(labelled) == 13


def test_missing_input_names_path(tmp_path):
    with pytest.raises(InputNotFoundError, match="nothing-here"):
        discover_images([str(tmp_path / "nothing-here" / "*.jpg")])


def test_csv_without_columns(tmp_path):
    _write(str(tmp_path / "a.jpg"))
    (tmp_path / "ids.csv").write_text("name,label\na.jpg,x\n")

    with pytest.raises(JobSpecError, match="file,person_id"):
        discover_images([str(tmp_path / "*.jpg")], identities_csv=str(tmp_path / "ids.csv"))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "I;16", "F", "CMYK"])
def test_modes_decode_to_rgb(tmp_path, mode):
    path = str(tmp_path / f"image.{'tiff' if mode in ('I;16', 'F', 'CMYK') else 'png'}")
    Image.new(mode, (12, 10)).save(path)

    image = read_image(path, max_pixels=10_000)

    assert image.shape == (10, 12, 3)
    assert image.dtype == np.uint8


def test_exif_orientation_applied(tmp_path):
    path = str(tmp_path / "rotated.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    Image.new("RGB", (40, 20), (200, 10, 10)).save(path, exif=exif)

    image = read_image(path, max_pixels=10_000)

    assert image.shape == (40, 20, 3)
