"""Preview images: turntable renders of an avatar tiled into one PNG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def tile_views(views: list[np.ndarray], *, columns: int | None = None) -> np.ndarray:
    """Tile equally sized RGB views ``(H, W, 3)`` in [0, 1] into one uint8 image, row-major."""
    columns = columns or len(views)
    rows = -(-len(views) // columns)
    height, width, _ = views[0].shape
    sheet = np.ones((rows * height, columns * width, 3), dtype=np.float32)
    for index, view in enumerate(views):
        row, col = divmod(index, columns)
        sheet[row * height:(row + 1) * height, col * width:(col + 1) * width] = view
    return (np.clip(sheet, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an RGB uint8 image ``(H, W, 3)`` as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
