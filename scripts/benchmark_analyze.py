"""Benchmark `sarcoscope analyze` on a synthetic 512×512×300 DICOM series against plain pydicom decoding.

Prints, per run, the stage split (read, localize, segment, measure, write), the end-to-end time, the time to
just read and decode the same files with pydicom, their ratio, and the peak memory (RSS) of each. Each
measurement runs in a fresh Python process; runs alternate so that machine noise hits both alike.

    python scripts/benchmark_analyze.py [--slices 300] [--size 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

# Peak memory is the process's VmHWM (high-water mark of its own address space; unlike ru_maxrss it does
# not inherit the parent's peak across fork+exec).
PEAK = "int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) / 1024"

BASELINE = textwrap.dedent(
    f"""
    import json, sys, time
    from pathlib import Path
    import pydicom
    t = time.perf_counter()
    for f in sorted(Path(sys.argv[1]).iterdir()):
        pydicom.dcmread(f).pixel_array
    print(json.dumps({{"total": time.perf_counter() - t, "peak_rss_mb": {PEAK}}}))
    """
)

ANALYZE = textwrap.dedent(
    f"""
    import json, sys, time
    t = time.perf_counter()
    import sarcoscope.pipeline, sarcoscope.composition, sarcoscope.imaging, sarcoscope.level
    import sarcoscope.segmentation, sarcoscope.export
    imports = time.perf_counter() - t
    t = time.perf_counter()
    r = sarcoscope.pipeline.analyze(sys.argv[1], out_dir=sys.argv[2])
    out = {{"total": time.perf_counter() - t, "imports": imports, **r.timings, "peak_rss_mb": {PEAK},
           "slices": r.selection.indices}}
    print(json.dumps(out))
    """
)


def _run(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    from sarcoscope.imaging import write_dicom_series
    from sarcoscope.phantom import make_volume

    with tempfile.TemporaryDirectory() as tmp:
        series = Path(tmp) / "ct"
        vol = make_volume(args.seed, shape_xy=args.size, n_slices=args.slices, slice_thickness_mm=1.0)
        write_dicom_series(vol.hu, vol.spacing, series, origin=vol.origin, metadata=vol.metadata())
        print(f"series: {args.slices} slices of {args.size}×{args.size}, spacing {vol.spacing} mm")
        base_runs, runs = [], []
        for i in range(args.repeats):
            base_runs.append(_run(BASELINE, str(series)))
            runs.append(_run(ANALYZE, str(series), str(Path(tmp) / f"out{i}")))
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "slices"}
        base = statistics.median(r["total"] for r in base_runs)
        base_rss = statistics.median(r["peak_rss_mb"] for r in base_runs)
        print(f"analysed slice(s): {runs[0]['slices']} (truth mid-L3 {vol.truth['l3_mid_index']})")
        print(f"{'stage':<28}{'seconds (median of ' + str(args.repeats) + ')':>26}")
        for stage in ("read", "localize", "segment", "measure", "write"):
            print(f"  {stage:<26}{med.get(stage, float('nan')):>26.3f}")
        print(f"  {'analyze end-to-end':<26}{med['total']:>26.3f}")
        print(f"  {'(module imports, once)':<26}{med['imports']:>26.3f}")
        print(f"  {'pydicom read+decode only':<26}{base:>26.3f}")
        print(f"ratio analyze / pydicom decode: {med['total'] / base:.2f}  (goal <= 1.5; imports excluded)")
        print(f"peak RSS: analyze {med['peak_rss_mb']:.0f} MB, pydicom decode {base_rss:.0f} MB")


if __name__ == "__main__":
    main()
