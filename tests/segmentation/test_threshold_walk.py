"""The wall tracing's ray walks as arrays (issue 18) give what a per-ray loop gives: the inward samples, the
first long run, the last hit before a limit, the runs with their ends and flags, np.median per row and the
depth of the subcutaneous fat; the ray geometry reads the image and draws star-shaped masks as the plain
formulas do (the whole rays through map_coordinates, every pixel's angle through arctan2)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.segmentation.threshold import (
    _GEOMETRY,
    _InwardWalk,
    _RayGeometry,
    _row_medians,
    _wall_depth,
)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encoding of a 1-D boolean array: (starts, lengths, values)."""
    change = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.concatenate((starts, [mask.size])))
    return starts, lengths, mask[starts]


def _walk(seed: int) -> tuple[_InwardWalk, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, width = 40, 30
    prof = rng.normal(0, 50, (n, width)).astype(np.float32)
    start = rng.integers(0, width + 5, n)  # some beyond the row: a slice start is clipped
    stop = np.maximum(start - rng.integers(0, 25, n), 0)
    return _InwardWalk(start, stop, width), prof, start, stop


def test_the_walk_reads_each_ray_inwards_as_a_slice_does() -> None:
    for seed in range(5):
        walk, prof, start, stop = _walk(seed)
        for j in range(len(prof)):
            v = prof[j, start[j] : stop[j] : -1]
            assert walk.length[j] == v.size
            assert np.array_equal(prof[j, walk.at[j, : v.size]], v)


def test_runs_first_long_run_and_last_hit_match_a_loop() -> None:
    rng = np.random.default_rng(3)
    for seed in range(20):
        walk, *_ = _walk(seed)
        mask = (rng.random(walk.valid.shape) < rng.random()) & walk.valid
        flag = rng.random(walk.valid.shape) < 0.1
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


def _wall_depth_loop(
    prof: np.ndarray, k_skin: np.ndarray, septum: int, skin: int, skin_px: int
) -> np.ndarray:
    """The per-ray loop that _wall_depth replaces."""
    lo, hi = _GEOMETRY.sat
    depth = np.full(len(prof), np.nan)
    for j in range(len(prof)):
        v = prof[j, k_skin[j] :: -1]  # from the skin inwards
        solid = np.flatnonzero(v[:skin] > hi)
        offset = int(solid[0]) if solid.size else 0
        fat = (v[offset:] >= lo) & (v[offset:] <= hi)
        starts, lengths, values = _runs(fat)
        if not values[0] and lengths[0] > skin:
            depth[j] = offset + skin_px
            continue
        for s, n_run, is_fat in zip(starts, lengths, values, strict=True):
            if s > 0 and not is_fat and n_run > septum:
                depth[j] = offset + s
                break
    return depth


def _read(walk: _InwardWalk, prof: np.ndarray) -> np.ndarray:
    """The walk's samples of whole profiles (NaN on the padding), as _InwardWalk.sample reads an image."""
    return np.where(walk.valid, prof[np.arange(len(prof))[:, None], walk.at], np.nan).astype(np.float32)


def test_the_fat_depth_is_the_loops_and_a_window_from_the_skin_finds_the_same_walls() -> None:
    rng = np.random.default_rng(11)
    runs = {"septum": 3, "skin": 12, "skin_px": 4}
    for _ in range(10):
        n, width = 300, 200
        # fat (-100 HU) with non-fat stretches (40 HU) of random lengths, and air/skin at the outer end
        prof = np.where(rng.random((n, width)) < 0.5, -100.0, 40.0).astype(np.float32)
        prof = ndi.minimum_filter1d(prof, int(rng.integers(1, 6)), axis=1)
        prof[rng.random(n) < 0.3, :] = -100.0  # some rays without any wall
        k_skin = rng.integers(0, width, n)
        prof[np.arange(n), k_skin] = rng.choice([-800.0, -300.0, 40.0], n)
        whole = _InwardWalk(k_skin, np.full(n, -1), width)
        depth = _wall_depth(whole, _read(whole, prof), **runs)
        np.testing.assert_array_equal(depth, _wall_depth_loop(prof, k_skin, **runs))
        window = _InwardWalk(k_skin, np.maximum(k_skin - 40, -1), width)
        found = _wall_depth(window, _read(window, prof), **runs)
        assert np.isfinite(found).any() and np.isnan(found).any()
        np.testing.assert_array_equal(found[np.isfinite(found)], depth[np.isfinite(found)])


def _geometry(seed: int) -> tuple[_RayGeometry, np.ndarray, tuple[float, float], tuple[float, float]]:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(80, 200)), int(rng.integers(80, 200)))
    yy, xx = np.indices(shape)
    cy, cx = shape[0] / 2 + rng.uniform(-5, 5), shape[1] / 2 + rng.uniform(-5, 5)
    body = ((yy - cy) / (0.4 * shape[0])) ** 2 + ((xx - cx) / (0.45 * shape[1])) ** 2 <= 1
    body &= ndi.gaussian_filter(rng.random(shape), 2) < 0.56  # a ragged outline, holes
    if seed % 2:
        body[:, :3] = True  # against the image's edge
    body[round(cy), round(cx)] = True
    spacing = (float(rng.uniform(0.5, 1.5)), float(rng.uniform(0.5, 1.5)))
    return _RayGeometry((cy, cx), body, spacing, int(rng.choice([360, 720]))), body, (cy, cx), spacing


def test_the_skin_is_the_first_exit_of_the_whole_ray_from_the_body() -> None:
    for seed in range(8):
        geo, body, *_ = _geometry(seed)
        inside = ndi.map_coordinates(body.astype(np.float32), geo.coords, order=0, mode="constant") > 0.5
        first_out = np.argmin(inside, axis=1)
        first_out[inside.all(axis=1)] = inside.shape[1]
        np.testing.assert_array_equal(geo.skin_mm, np.maximum(first_out - 1, 0) * geo.step_mm)


def test_samples_are_read_as_map_coordinates_reads_them_once_each() -> None:
    for seed in range(4):
        geo, body, *_ = _geometry(seed)
        image = np.random.default_rng(seed).normal(0, 100, body.shape).astype(np.float32)
        want = ndi.map_coordinates(image, geo.coords, order=1, mode="constant", cval=-1024.0).ravel()
        rng = np.random.default_rng(seed)
        for _ in range(3):  # overlapping reads: some samples known, some new
            number = rng.integers(0, want.size, (50, 7))
            np.testing.assert_array_equal(geo.read(image, number), want[number])


def test_star_masks_are_the_outline_interpolated_at_every_pixels_angle() -> None:
    for seed in range(8):
        geo, body, centre, spacing = _geometry(seed)
        rng = np.random.default_rng(seed)
        yy, xx = np.indices(body.shape, dtype=np.float32)
        py, px = (yy - centre[0]) * spacing[0], (xx - centre[1]) * spacing[1]
        pixel_radius, theta = np.hypot(py, px), np.mod(np.arctan2(py, px), 2 * np.pi)
        radii = [
            geo.skin_mm - 5.0,
            rng.uniform(-10, 100, geo.n),  # spiky, partly below 0
            np.zeros(geo.n),
            np.full(geo.n, 30.0),
        ]
        for radius in radii:
            want = pixel_radius <= np.interp(theta, geo.theta, np.maximum(radius, 0.0), period=2 * np.pi)
            np.testing.assert_array_equal(geo.star_mask(radius), want)
