"""Releasing worker memory: library pages and heap go back, and the code still runs."""

import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import json
    import cv2
    import numpy as np
    from daskavatar.jobs.memory import release_memory, release_library_pages, rss_mib

    image = np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8)
    expected = cv2.GaussianBlur(image, (5, 5), 1.0)
    before = rss_mib()
    released = release_library_pages()
    after = rss_mib()
    release_memory()
    again = cv2.GaussianBlur(image, (5, 5), 1.0)
    print(json.dumps({"before": before, "after": after, "released": released,
                      "same": bool(np.array_equal(expected, again))}))
""")


def test_library_pages_released_code_still_runs():
    output = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                            check=True, timeout=120)
    result = json.loads(output.stdout.strip().splitlines()[-1])

    assert result["released"] > 10 * 2 ** 20
    assert result["after"] < result["before"] - 10
    assert result["same"]
