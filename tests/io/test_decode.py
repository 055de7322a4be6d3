"""Decoding every generated kind of image file, good and broken, to RGB or a reason code."""

import numpy as np
import pytest

from daskavatar.io.decode import REASON_CODES, ImageRejected, decode_image
from tests.io.corpus import QUADRANT_COLOURS, build_cases, quadrant_means, write_corpus

MAX_PIXELS = 40_000_000
CASES = build_cases()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(str(folder))
    return folder


def test_corpus_has_25_kinds():
    assert len(CASES) >= 25
    assert len({case.filename for case in CASES}) == len(CASES)
    assert {case.reason for case in CASES} >= set(REASON_CODES) - {"not_found"}


@pytest.mark.parametrize("case", [c for c in CASES if c.reason == "ok"], ids=lambda c: c.name)
def test_good_file_decodes(corpus, case):
    decoded = decode_image(str(corpus / case.filename), max_pixels=MAX_PIXELS, max_side=1024)

    width, height = case.size
    assert decoded.pixels.shape == (height, width, 3)
    assert decoded.pixels.dtype == np.uint8
    expected = QUADRANT_COLOURS if case.colours is None else case.colours
    difference = np.abs(quadrant_means(decoded.pixels) - expected).max()
    assert difference <= case.tolerance, f"quadrant colours off by {difference:.1f}"


@pytest.mark.parametrize("case", [c for c in CASES if c.reason != "ok"], ids=lambda c: c.name)
def test_bad_file_rejected_with_reason(corpus, case):
    url = str(corpus / case.filename)

    with pytest.raises(ImageRejected) as raised:
        decode_image(url, max_pixels=MAX_PIXELS, max_side=1024)

    assert raised.value.reason == case.reason
    assert url in raised.value.message


def test_missing_file_not_found(tmp_path):
    with pytest.raises(ImageRejected) as raised:
        decode_image(str(tmp_path / "gone.jpg"), max_pixels=MAX_PIXELS)

    assert raised.value.reason == "not_found"


def test_bomb_message_names_limit(corpus):
    with pytest.raises(ImageRejected) as raised:
        decode_image(str(corpus / "bomb.png"), max_pixels=MAX_PIXELS)

    assert "12000x12000" in raised.value.message
    assert "max_image_pixels" in raised.value.message


def test_pixel_limit_checked_before_decoding(corpus):
    url = str(corpus / "large.jpg")

    with pytest.raises(ImageRejected) as raised:
        decode_image(url, max_pixels=4096 * 3072 - 1)

    assert raised.value.reason == "too_large"
    assert decode_image(url, max_pixels=4096 * 3072).pixels.shape == (3072, 4096, 3)


@pytest.mark.parametrize("max_side, expected_width, expected_scale", [
    (None, 4096, 1.0), (4096, 4096, 1.0), (2048, 2048, 0.5), (1500, 2048, 0.5),
    (1024, 1024, 0.25), (100, 512, 0.125)])
def test_large_jpeg_draft_scale(corpus, max_side, expected_width, expected_scale):
    decoded = decode_image(str(corpus / "large.jpg"), max_pixels=MAX_PIXELS, max_side=max_side)

    assert decoded.pixels.shape[1] == expected_width
    assert decoded.scale == expected_scale


def test_reduced_decode_matches_full(corpus):
    # The reduced decode is a quarter of the full one per side, with the same colours.
    url = str(corpus / "large.jpg")
    full = decode_image(url, max_pixels=MAX_PIXELS).pixels
    reduced = decode_image(url, max_pixels=MAX_PIXELS, max_side=1024).pixels

    assert reduced.nbytes * 16 == full.nbytes
    assert np.abs(quadrant_means(reduced) - quadrant_means(full)).max() < 2.0


def test_formats_and_modes_recorded(corpus):
    cmyk = decode_image(str(corpus / "cmyk.jpg"), max_pixels=MAX_PIXELS)
    grey16 = decode_image(str(corpus / "grey16.png"), max_pixels=MAX_PIXELS)
    misnamed = decode_image(str(corpus / "misnamed.png"), max_pixels=MAX_PIXELS)

    assert (cmyk.format, cmyk.mode) == ("JPEG", "CMYK")
    assert grey16.mode.startswith("I")
    assert misnamed.format == "JPEG"
