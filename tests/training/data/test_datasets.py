import torch
import torch.nn.functional as F

from training.data.datasets import augment


def test_augmentation_keeps_the_occupancy_target_aligned_with_the_image():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(16, 1, 32, 32, 32, generator=g)
    occupancy = F.avg_pool3d(image, 2).repeat(1, 2, 1, 1, 1)  # the target is a function of the image
    new_image, new_occ = augment(image, occupancy, g, max_shift=2)
    assert not torch.equal(new_image, image)
    torch.testing.assert_close(new_occ, F.avg_pool3d(new_image, 2).repeat(1, 2, 1, 1, 1))
    torch.testing.assert_close(new_image.sum(dim=(1, 2, 3, 4)), image.sum(dim=(1, 2, 3, 4)))
