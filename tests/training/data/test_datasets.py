import pytest
import torch
import torch.nn.functional as F

from training.data.datasets import augment, phantom_set
from training.data.phantoms import render_patch
from training.defaults import PREPROCESSING, TRAIN_ELONGATION


def test_augmentation_keeps_the_occupancy_target_aligned_with_the_image():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(16, 1, 32, 32, 32, generator=g)
    occupancy = F.avg_pool3d(image, 2).repeat(1, 2, 1, 1, 1)  # the target is a function of the image
    new_image, new_occ = augment(image, occupancy, g, max_shift=2)
    assert not torch.equal(new_image, image)
    torch.testing.assert_close(new_occ, F.avg_pool3d(new_image, 2).repeat(1, 2, 1, 1, 1))
    torch.testing.assert_close(new_image.sum(dim=(1, 2, 3, 4)), image.sum(dim=(1, 2, 3, 4)))


def test_every_nth_training_phantom_is_elongated_and_cached_apart(tmp_path):
    seeds = [10, 11]
    mixed = phantom_set(seeds, PREPROCESSING, tmp_path, workers=1, elongated_every=2)
    plain = phantom_set(seeds, PREPROCESSING, tmp_path, workers=1)
    assert len(list(tmp_path.glob("phantoms-*.npz"))) == 2  # one cache per mix, never one for the other
    elongated = render_patch(10, PREPROCESSING, elongation=TRAIN_ELONGATION).nodule
    axes = sorted(elongated.semi_axes_mm)
    assert axes[2] / axes[1] >= TRAIN_ELONGATION[0]
    assert mixed.measurements[0, 0].item() == pytest.approx(elongated.diameter_mm, rel=1e-3)
    assert plain.measurements[0, 0].item() == pytest.approx(
        render_patch(10, PREPROCESSING).nodule.diameter_mm, rel=1e-3
    )
    assert mixed.measurements[0, 0].item() != pytest.approx(plain.measurements[0, 0].item(), rel=1e-3)
    assert torch.equal(mixed.image[1], plain.image[1])  # seed 11: not a multiple of 2, the same phantom
