"""The body mask on real CT (../shared/data): arms resting against the trunk are not body."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sarcoscope.imaging import read_ct
from sarcoscope.segmentation.body import body_mask, limbs
from sarcoscope.training.data import find_pairs, read_image


def test_the_arm_against_the_trunk_of_the_jpeg2000_series_is_not_body(shared_data: Path):
    volume = read_ct(shared_data / "real" / "dicom_series" / "ts_thoracoabdominal_j2k")
    # the patient's right arm lies in image columns 0..75 and touches the trunk's side from slice 1 on; in
    # slice 4 it presses on it over 60 mm, too wide a contact for a neck: it is cut off between the notches
    arm_columns = slice(0, 65)
    for z in (1, 4, 10, 19):
        hu = volume.hu[z]
        assert (hu[:, arm_columns] > 300).sum() > 100, "the arm with its bone is in the image"
        body = body_mask(hu, volume.pixel_spacing)
        # (a little skin and fat where the arm presses on the trunk may stay: under 2 % of the arm's 4,400
        # pixels in slice 4)
        assert body[:, arm_columns].sum() <= (80 if z == 4 else 10), f"slice {z}: the arm is counted as body"
        assert body.sum() * np.prod(volume.pixel_spacing) / 100 > 700  # the trunk (about 730 cm²) is kept


@pytest.mark.parametrize("case", ["EMC040", "EMC041", "EMC051", "EMC101"])
def test_no_limb_is_found_in_real_l3_slices_without_arms(shared_data: Path, case: str):
    ((_, image, _),) = [p for p in find_pairs(shared_data / "real" / "l3_slices") if p[0] == case]
    hu, spacing, _ = read_image(image)
    body = body_mask(hu[0], spacing)
    assert not limbs(body, hu[0], spacing).any()
