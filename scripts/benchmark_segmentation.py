"""Benchmark the segmentation engines per 512×512 slice: U-Net network, its HU refinement, threshold engine.

Segments a batch of phantom L3 slices (512×512, ≈0.7 mm pixels, as scanners write them) and reports the
median time per slice over several repeats: the "unet" engine on the whole range (one batch, refinement in
parallel threads) and on one slice at a time (both with mirror averaging, the default: two network passes,
which the quality score needs anyway), the U-Net with one pass (`mirror=False`), and the "threshold" engine
on the same slices.
Run it on an idle machine to compare with the goal of ≤ 100 ms per slice on 2 cores; on a shared machine
compare the ratios, which noise affects less than the seconds.

    python scripts/benchmark_segmentation.py [--slices 8] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from sarcoscope.phantom import make_slice
from sarcoscope.segmentation import get_engine
from sarcoscope.segmentation.unet import UNetEngine


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    phantoms = [make_slice(100 + i, size=512, pixel_spacing=0.7) for i in range(args.slices)]
    hu = np.stack([np.asarray(p.hu, np.float32) for p in phantoms])
    spacing = phantoms[0].pixel_spacing
    unet = UNetEngine(threads=args.threads, batch_size=args.slices)
    one_pass = UNetEngine(threads=args.threads, batch_size=args.slices, mirror=False)
    threshold = get_engine("threshold")
    n = len(hu)

    unet.segment(hu, spacing)  # warm-up: ONNX Runtime plans its kernels on the first call
    whole = _median_seconds(lambda: unet.segment(hu, spacing), args.repeats) / n
    single = _median_seconds(lambda: [unet.segment(h, spacing) for h in hu], args.repeats) / n
    one_pass.segment(hu, spacing)
    whole_one_pass = _median_seconds(lambda: one_pass.segment(hu, spacing), args.repeats) / n
    thresh = _median_seconds(lambda: threshold.segment(hu, spacing), max(1, args.repeats // 2)) / n

    print(f"model {unet.model_id}; {n} slices of 512×512, {spacing[0]:.2f} mm; {args.threads} threads")
    print("| engine | ms per slice |")
    print("|---|---|")
    print(f"| **unet**, a range of {n} slices | **{1000 * whole:.0f}** |")
    print(f"| **unet**, one slice at a time | **{1000 * single:.0f}** |")
    print(f"| unet, mirror=False (one network pass), a range of {n} slices | {1000 * whole_one_pass:.0f} |")
    print(f"| threshold | {1000 * thresh:.0f} |")
    print(f"ratio threshold / unet (range): {thresh / whole:.2f}")


if __name__ == "__main__":
    main()
