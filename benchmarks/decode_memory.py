"""Peak RSS of decoding one 4000x3000 JPEG with ``daskavatar.io.images.read_image``.

Usage (from the repository root)::

    .venv/bin/python benchmarks/decode_memory.py

Enlarges ``biden/biden.jpg`` of ``../shared/data/faces_face_recognition`` to a height of
3000 pixels on a grey 4000x3000 canvas, saves it as a JPEG in a temporary folder and prints
the process's RSS before decoding and the peak while decoding, sampled every 10 ms by
:class:`daskavatar.jobs.memory.PeakMemory`. The face models are not loaded.
"""

import os
import tempfile

from PIL import Image

from daskavatar.io.images import read_image
from daskavatar.jobs.memory import PeakMemory, release_memory, rss_mib

SOURCE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                      "faces_face_recognition", "biden", "biden.jpg")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "large.jpg")
        with Image.open(SOURCE) as photo:
            photo = photo.convert("RGB")
            scaled = photo.resize((round(photo.width * 3000 / photo.height), 3000),
                                  Image.Resampling.LANCZOS)
            canvas = Image.new("RGB", (4000, 3000), (128, 128, 128))
            canvas.paste(scaled, ((4000 - scaled.width) // 2, 0))
            canvas.save(path, quality=90)
        del photo, scaled, canvas

        release_memory()
        before = rss_mib()
        with PeakMemory() as peak:
            image = read_image(path, max_pixels=40_000_000)
    print(f"decoded {image.shape} uint8 ({image.nbytes / 2 ** 20:.1f} MiB): RSS before "
          f"{before:.1f} MiB, peak {peak.mib:.1f} MiB, {peak.mib - before:.1f} MiB above")


if __name__ == "__main__":
    main()
