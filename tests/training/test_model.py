import torch

from training.model import ATTRIBUTE_LABELS, OUTPUT_NAMES, ResMTNet, ResMTNetConfig


def test_forward_shapes_and_ranges():
    model = ResMTNet(ResMTNetConfig(widths=[4, 8, 16], blocks=[1, 2, 1], head_hidden=8)).eval()
    x = torch.rand(3, 1, 32, 32, 32)
    with torch.no_grad():
        mal, kind, meas, attrs, occupancy = model(x)
        train = model.forward_train(x)
    assert mal.shape == (3, 2) and kind.shape == (3, 3) and meas.shape == (3, 3)
    assert attrs.shape == (3, len(ATTRIBUTE_LABELS))
    torch.testing.assert_close(mal.sum(1), torch.ones(3))
    torch.testing.assert_close(kind.sum(1), torch.ones(3))
    assert (meas >= 0).all() and ((attrs >= 1) & (attrs <= 5)).all()
    assert train["occupancy_logits"].shape == occupancy.shape == (3, 2, 16, 16, 16)
    torch.testing.assert_close(occupancy, torch.sigmoid(train["occupancy_logits"]))
    assert OUTPUT_NAMES == ["malignancy", "nodule_type", "measurements", "attributes", "occupancy"]


def test_width_and_depth_are_configurable():
    small = ResMTNet(ResMTNetConfig(widths=[4, 8], blocks=[1, 1]))
    large = ResMTNet(ResMTNetConfig(widths=[8, 16, 32, 64], blocks=[2, 2, 2, 2]))
    assert sum(p.numel() for p in large.parameters()) > 10 * sum(p.numel() for p in small.parameters())
    with torch.no_grad():
        assert large.eval()(torch.rand(1, 1, 32, 32, 32))[0].shape == (1, 2)


def test_volume_is_the_sum_of_the_occupancy_map():
    model = ResMTNet(ResMTNetConfig(widths=[4, 8], blocks=[1, 1])).eval()
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        out = model.forward_train(x)
        occupied = torch.sigmoid(out["occupancy_logits"][:, 0]).sum(dim=(1, 2, 3)) * 2.5**3
    ratio = out["measurements"][:, 1] / occupied
    assert ((ratio > 0.6) & (ratio < 1.65)).all()  # the learnt correction is bounded to exp(+-0.5)
