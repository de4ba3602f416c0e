"""The wall tracing's ray walk as arrays (issue 18) gives what a per-ray loop gives: the inward samples, the
first long run, the last hit before a limit, the runs with their ends and flags, and np.median per row."""

from __future__ import annotations

import numpy as np

from sarcoscope.segmentation.threshold import _InwardWalk, _row_medians, _runs


def _walk(seed: int) -> tuple[_InwardWalk, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, width = 40, 30
    prof = rng.normal(0, 50, (n, width)).astype(np.float32)
    coarse = rng.normal(0, 50, (n, width)).astype(np.float32)
    start = rng.integers(0, width + 5, n)  # some beyond the row: a slice start is clipped
    stop = np.maximum(start - rng.integers(0, 25, n), 0)
    return _InwardWalk(prof, coarse, start, stop), prof, coarse, start, stop


def test_the_walk_reads_each_ray_inwards_as_a_slice_does() -> None:
    for seed in range(5):
        walk, prof, coarse, start, stop = _walk(seed)
        for j in range(len(prof)):
            v, vc = prof[j, start[j] : stop[j] : -1], coarse[j, start[j] : stop[j] : -1]
            assert walk.length[j] == v.size
            assert np.array_equal(walk.v[j, : v.size], v) and np.array_equal(walk.vc[j, : v.size], vc)


def test_runs_first_long_run_and_last_hit_match_a_loop() -> None:
    rng = np.random.default_rng(3)
    for seed in range(20):
        walk, *_ = _walk(seed)
        mask = (rng.random(walk.v.shape) < rng.random()) & walk.valid
        flag = rng.random(walk.v.shape) < 0.1
        limit = rng.integers(0, walk.width + 1, len(mask))
        starts, run_end, run_flag = walk.runs(mask, flag)
        first = walk.first_run_start(mask, 3, walk.length)
        last = walk.after_last(mask, limit)
        for j in range(len(mask)):
            size = int(walk.length[j])
            s, lengths, values = _runs(mask[j, :size]) if size else (np.zeros(0, int),) * 3
            assert np.array_equal(np.flatnonzero(starts[j]), s)
            assert np.array_equal(run_end[j, s], s + lengths)
            assert [bool(flag[j, a : a + b].any()) for a, b in zip(s, lengths, strict=True)] == list(
                run_flag[j, s]
            )
            long = s[values.astype(bool) & (lengths >= 3)] if size else s
            assert first[j] == (long[0] if long.size else size)
            hits = np.flatnonzero(mask[j, : limit[j]])
            assert last[j] == (hits[-1] + 1 if hits.size else 0)


def test_row_medians_are_numpys_median_of_the_kept_values() -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(0, 40, (200, 7)).astype(np.float32)
    keep = rng.random(values.shape) < 0.6
    got = _row_medians(values, keep)
    for j in range(len(values)):
        kept = values[j][keep[j]]
        assert (np.isnan(got[j]) and kept.size == 0) or got[j] == float(np.median(kept))
