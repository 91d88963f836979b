import torch

from training.data.datasets import Batch
from training.losses import task_losses, total_loss
from training.model import ResMTNet, ResMTNetConfig


def batch(n: int = 4) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(
        image=torch.rand(n, 1, 32, 32, 32, generator=g),
        occupancy=torch.rand(n, 2, 16, 16, 16, generator=g),
        occupancy_mask=torch.ones(n, 2),
        malignant=torch.randint(0, 2, (n,), generator=g),
        malignant_mask=torch.ones(n),
        nodule_type=torch.randint(0, 3, (n,), generator=g),
        type_mask=torch.ones(n),
        measurements=torch.rand(n, 3, generator=g) * 20 + 3,
        measurements_mask=torch.ones(n, 3),
        attributes=torch.rand(n, 6, generator=g) * 4 + 1,
        attributes_mask=torch.ones(n, 6),
    )


def test_a_missing_label_contributes_nothing():
    model = ResMTNet(ResMTNetConfig(widths=[4, 8], blocks=[1, 1])).eval()
    b = batch()
    out = model.forward_train(b.image)
    b.malignant_mask[1] = 0.0
    b.attributes_mask[2] = 0.0
    b.measurements_mask[:, 2] = 0.0
    before = task_losses(out, b)
    b.malignant[1] = 1 - b.malignant[1]  # change only what is masked
    b.attributes[2] = 5.0 - b.attributes[2] + 1.0
    b.measurements[:, 2] = 1000.0
    after = task_losses(out, b)
    for name in before:
        torch.testing.assert_close(before[name], after[name])


def test_a_task_with_no_labels_gives_zero_loss_and_no_gradient():
    model = ResMTNet(ResMTNetConfig(widths=[4, 8], blocks=[1, 1])).eval()
    b = batch()
    b.attributes_mask.zero_()
    losses = task_losses(model.forward_train(b.image), b)
    assert float(losses["attributes"]) == 0.0
    losses["attributes"].backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in model.attributes.parameters())
    assert torch.isfinite(total_loss(task_losses(model.forward_train(b.image), b)))
