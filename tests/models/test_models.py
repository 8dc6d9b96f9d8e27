"""The MinkUNet family: parameter counts per table from the architecture written out here; a forward
pass; the pseudo-label head's EMA prototypes and gradients."""
import pytest
import torch
import torch.nn.functional as F

from erda_sparse import ops
from erda_sparse.models import minkunet
from erda_sparse.models.pseudo_head import PseudoLabelHead


def expected_params(in_ch, n_cls, layers, planes, init=32):
    conv = lambda k, i, o: k ** 3 * i * o  # noqa: E731  (MinkowskiConvolution: no bias by default)
    bn = lambda c: 2 * c  # noqa: E731

    def block(i, p):
        return conv(3, i, p) + bn(p) + conv(3, p, p) + bn(p) + (conv(1, i, p) + bn(p) if i != p else 0)

    def stage(i, p, n):
        return block(i, p) + sum(block(p, p) for _ in range(n - 1))

    total = conv(5, in_ch, init) + bn(init)
    enc_in = [init, planes[0], planes[1], planes[2]]
    for s in range(4):
        total += conv(2, enc_in[s], enc_in[s]) + bn(enc_in[s]) + stage(enc_in[s], planes[s], layers[s])
    skips = [planes[2], planes[1], planes[0], init]
    dec_in = [planes[3], planes[4], planes[5], planes[6]]
    for s in range(4):
        p = planes[4 + s]
        total += conv(2, dec_in[s], p) + bn(p) + stage(p + skips[s], p, layers[4 + s])
    return total + planes[7] * n_cls + n_cls


@pytest.mark.parametrize("name", sorted(minkunet.FAMILY))
def test_parameter_counts(name):
    model = minkunet.build(name, 3, 20)
    layers, planes = minkunet.FAMILY[name]
    assert sum(p.numel() for p in model.parameters()) == expected_params(3, 20, layers, planes)
    assert model.feature_dim == planes[7]


def test_default_model_size_matches_the_published_one():
    # MinkUNet34C for ScanNet (3 colour channels in, 20 classes out) is published at about 37.9M parameters
    n = sum(p.numel() for p in minkunet.build(minkunet.DEFAULT, 3, 20).parameters())
    assert minkunet.DEFAULT == "MinkUNet34C" and abs(n - 37.9e6) < 0.1e6


def test_forward_shapes_and_unknown_name():
    from erda_sparse.minkowski import ME

    torch.manual_seed(0)
    coords = torch.unique(torch.randint(0, 24, (600, 3)), dim=0).int()
    batch_coords = torch.cat([torch.zeros(len(coords), 1).int(), coords], 1)
    x = ME.SparseTensor(torch.randn(len(coords), 3), coordinates=batch_coords)
    model = minkunet.build("MinkUNet14A", 3, 20).eval()
    feats, logits = model(x)
    assert logits.F.shape == (len(coords), 20) and feats.F.shape == (len(coords), 96)
    assert torch.equal(logits.C, x.C)  # the decoder returns to the input voxels
    with pytest.raises(ValueError, match="unknown model 'MinkUNet99'"):
        minkunet.build("MinkUNet99", 3, 20)


def test_prototypes_follow_the_ema_rule():
    torch.manual_seed(0)
    head = PseudoLabelHead(8, 4, momentum=0.9)
    g1 = torch.randn(30, 8)
    y1 = torch.tensor([0] * 10 + [1] * 10 + [-1] * 10)
    head.update_prototypes(g1, y1)
    m0 = F.normalize(g1[:10], dim=1).mean(0)
    torch.testing.assert_close(head.prototypes[0], m0)  # first sight: the mean
    assert torch.all(head.prototypes[2:] == 0) and head.seen.tolist() == [True, True, False, False]
    g2 = torch.randn(6, 8)
    y2 = torch.tensor([0, 0, 0, 2, 2, -1])
    before1 = head.prototypes[1].clone()
    head.update_prototypes(g2, y2)
    torch.testing.assert_close(head.prototypes[0], 0.9 * m0 + 0.1 * F.normalize(g2[:3], dim=1).mean(0))
    torch.testing.assert_close(head.prototypes[1], before1)  # absent from the batch: unchanged
    torch.testing.assert_close(head.prototypes[2], F.normalize(g2[3:5], dim=1).mean(0))


@pytest.mark.parametrize("detach", [False, True])
def test_pseudo_head_gets_gradient_through_p_unless_detached(detach):
    torch.manual_seed(1)
    head = PseudoLabelHead(8, 5)
    head.update_prototypes(torch.randn(50, 8), torch.arange(50) % 5)
    feats = torch.randn(40, 8)
    z = torch.randn(40, 5, requires_grad=True)
    _, s = head(feats)
    loss = ops.erda_loss(s, z, None, detach_pseudo=detach)
    loss.backward()
    grads = [p.grad for p in head.proj.parameters()]
    if detach:
        assert all(g is None for g in grads)
    else:
        assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert z.grad is not None
