"""Peak memory of compiling the NeRF programs in a process against loading them compiled.

Usage (from the repository root)::

    .venv/bin/python benchmarks/compile_memory.py [--preset paper]

Each case runs in a fresh Python process with ``MALLOC_ARENA_MAX=1``, as on the workers.
The baseline compiles the preset's three programs with XLA in the process. The other case
loads the same programs serialised by the client. Both then run 20 training steps. The script
prints the peak RSS of both as Markdown, with their ratio.
"""

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile

CHILD = r"""
import json, pickle, sys
from daskavatar.jobs.memory import PeakMemory, rss_mib
import distributed, jax, optax
from daskavatar.nerf.presets import PRESETS
from daskavatar.nerf.programs import load_programs
from daskavatar.nerf.field import init_params
import numpy as np

mode, preset_name, path = sys.argv[1:4]
preset = PRESETS[preset_name]
start = rss_mib()
with PeakMemory() as peak:
    compiled = pickle.load(open(path, "rb")) if mode == "load" else None
    programs = load_programs(compiled, preset)
    params, state = init_params(preset, 0), programs.initial_opt_state
    rays = preset.batch_rays
    args = [np.zeros((rays, 3), np.float32), np.tile(np.float32([0, 0, 1]), (rays, 1)),
            np.full(rays, 2, np.float32), np.full(rays, 6, np.float32),
            np.zeros((rays, 3), np.float32),
            np.random.default_rng(0).random((rays, preset.num_samples), np.float32),
            np.float32(1e-4)]
    for _ in range(20):
        params, state, loss = programs.train_step(params, state, *args)
        float(loss)
print(json.dumps({"start_mib": start, "peak_mib": peak.mib, "end_mib": rss_mib()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    args = parser.parse_args()

    from daskavatar.nerf.presets import PRESETS
    from daskavatar.nerf.programs import compile_programs

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "programs.pkl")
        with open(path, "wb") as f:
            pickle.dump(compile_programs(PRESETS[args.preset]), f)
        environment = dict(os.environ, MALLOC_ARENA_MAX="1", TF_CPP_MIN_LOG_LEVEL="1")
        results = {}
        for mode in ("compile", "load"):
            output = subprocess.run([sys.executable, "-c", CHILD, mode, args.preset, path],
                                    env=environment, capture_output=True, text=True, check=True)
            results[mode] = json.loads(output.stdout.strip().splitlines()[-1])

    print(f"preset {args.preset}: RSS in MiB of a fresh process, 20 training steps")
    print()
    print("| programs | RSS before | peak | after |")
    print("|---|---:|---:|---:|")
    for mode, label in (("compile", "compiled in the process (baseline)"),
                        ("load", "loaded from the client's serialised executables")):
        r = results[mode]
        print(f"| {label} | {r['start_mib']:.1f} | {r['peak_mib']:.1f} | {r['end_mib']:.1f} |")
    print()
    ratio = results["load"]["peak_mib"] / results["compile"]["peak_mib"]
    print(f"peak ratio load / compile: {ratio:.2f}")


if __name__ == "__main__":
    main()
