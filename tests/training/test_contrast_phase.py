"""The unenhanced-CT augmentation against the phantoms' own unenhanced scans of the same patient."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from sarcoscope.phantom.slice import make_slice  # noqa: E402
from sarcoscope.training.contrast_phase import RandUnenhancedd, unenhanced  # noqa: E402

WINDOW = (-250.0, 350.0)


def _bone(hu: np.ndarray) -> np.ndarray:
    return ndi.binary_dilation(
        ndi.binary_fill_holes(ndi.binary_closing(hu > 250, iterations=3)), iterations=2
    )


@pytest.mark.parametrize("seed", [2, 4, 5])
def test_enhanced_organs_come_down_towards_the_same_patient_scanned_without_contrast(seed: int) -> None:
    """A portal-phase phantom made unenhanced: its solid organs (muscle-like HU without contrast, over 30 HU
    brighter with it) lose most of the difference to the same phantom rendered without contrast; muscle,
    fat, bone and unenhanced tissue keep their HU exactly or nearly."""
    portal, plain = make_slice(seed, size=256, contrast="portal"), make_slice(seed, size=256, contrast="none")
    out = unenhanced(portal.hu, portal.labels, organ_hu=50.0, kept=0.0)

    other = (portal.labels == 0) & (plain.labels == 0) & ~_bone(portal.hu)
    organ = other & (plain.hu > 30) & (plain.hu < 70) & (portal.hu - plain.hu > 30)
    assert organ.sum() > 300
    before = np.abs(portal.hu - plain.hu)[organ].mean()
    after = np.abs(out - plain.hu)[organ].mean()
    assert after < 0.5 * before, (before, after)
    labelled = portal.labels > 0
    assert np.array_equal(out[labelled], portal.hu[labelled].astype(np.float32))
    not_enhanced = other & (np.abs(portal.hu - plain.hu) < 3)
    assert (np.abs(out - portal.hu)[not_enhanced] > 10).mean() < 0.03


def test_the_transform_changes_only_unlabelled_tissue_and_only_when_drawn() -> None:
    """On the model's [0, 1] input: with probability 1 the enhanced organs darken and every labelled pixel
    and the labels stay; with probability 0 nothing changes."""
    sl = make_slice(2, size=256, contrast="portal")
    image = torch.from_numpy(
        ((np.clip(sl.hu, *WINDOW) - WINDOW[0]) / (WINDOW[1] - WINDOW[0]))[None].astype(np.float32)
    )
    label = torch.from_numpy(sl.labels[None].astype(np.float32))
    for prob, changes in ((1.0, True), (0.0, False)):
        transform = RandUnenhancedd(("image", "label"), prob, WINDOW)
        transform.set_random_state(seed=0)
        item = transform({"image": image, "label": label})
        assert torch.equal(item["label"], label)
        labelled = label[0] > 0
        assert torch.allclose(item["image"][0][labelled], image[0][labelled], atol=1e-6)
        darker = (image - item["image"])[0] * (WINDOW[1] - WINDOW[0]) > 10
        assert bool(darker.any()) is changes
        assert not (darker & labelled).any()
