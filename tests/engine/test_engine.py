"""The engine's pieces against independent references: the criterion's loss and terms against the
float64 PyTorch composition of the ERDA objective, the diagnostics against hand computation, the pseudo
head's prototype options."""
import math

import pytest
import torch
import torch.nn.functional as F

from erda_sparse.engine.criterion import ErdaCriterion
from erda_sparse.engine.diagnostics import EpochDiagnostics
from erda_sparse.models.pseudo_head import PseudoLabelHead
from erda_sparse.ops import reference


def batch(n=400, c=20, every=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, z = torch.randn(n, c, generator=g), torch.randn(n, c, generator=g) * 2
    labels = torch.full((n,), -1, dtype=torch.long)
    labels[::every] = torch.randint(0, c, (len(labels[::every]),), generator=g)
    return s, z, labels


def ref_terms(s, z, labels, entropy_weight=1.0, distance="kl", erda_points="unlabeled"):
    """(mean CE over labeled, mean ERDA term over the ERDA set) in float64, from the reference."""
    s64, z64 = s.double(), z.double()
    ce = reference.erda_loss(s64, z64, labels, erda_weight=0.0, reduction="mean")
    er = reference.erda_loss(s64, z64, labels, ce_weight=0.0, entropy_weight=entropy_weight, distance=distance,
                             erda_points=erda_points, reduction="mean")
    return ce.item(), er.item()


@pytest.mark.parametrize("erda_points", ["unlabeled", "all"])
@pytest.mark.parametrize("distance", ["kl", "js"])
def test_criterion_total_terms_and_gradients_match_the_reference(erda_points, distance):
    s, z, labels = batch()
    w = 0.3
    crit = ErdaCriterion("erda", distance, 0.5, w, erda_points)
    s1, z1 = s.clone().requires_grad_(True), z.clone().requires_grad_(True)
    terms = crit(s1, z1, labels)
    terms.total.backward()
    ce, er = ref_terms(s, z, labels, 0.5, distance, erda_points)
    assert terms.ce == pytest.approx(ce, rel=1e-5) and terms.erda == pytest.approx(er, rel=1e-5)
    s64, z64 = s.double().requires_grad_(True), z.double().requires_grad_(True)
    want = reference.erda_loss(s64, z64, labels, erda_weight=w, entropy_weight=0.5, distance=distance,
                               erda_points=erda_points, reduction="mean")
    want.backward()
    assert terms.total.item() == pytest.approx(want.item(), rel=1e-5)
    assert terms.total.item() == pytest.approx(ce + w * er, rel=1e-5)
    torch.testing.assert_close(s1.grad.double(), s64.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(z1.grad.double(), z64.grad, rtol=1e-4, atol=1e-7)
    assert int(terms.labeled.sum()) == int((labels >= 0).sum())
    assert int(terms.erda_set.sum()) == (len(labels) if erda_points == "all" else int((labels < 0).sum()))


def test_ce_criterion_is_the_labeled_cross_entropy_only():
    s, z, labels = batch()
    z1 = z.clone().requires_grad_(True)
    terms = ErdaCriterion("ce")(None, z1, labels)
    terms.total.backward()
    lab = labels >= 0
    want = F.cross_entropy(z.double()[lab], labels[lab])
    assert terms.total.item() == pytest.approx(want.item(), rel=1e-6) and terms.ce == pytest.approx(want.item())
    assert math.isnan(terms.erda) and not terms.erda_set.any()
    assert (z1.grad[~lab] == 0).all()  # no ERDA pass: unlabeled rows get nothing


def test_criterion_normalises_over_the_global_batch():
    """Two processes, each with half the points: each returns its share times the world size; their mean is
    the loss of the whole batch (what DDP's gradient averaging differentiates)."""
    s, z, labels = batch(n=600)
    whole = ErdaCriterion("erda", erda_weight=0.2)(s, z, labels).total.item()
    halves = [slice(0, 300), slice(300, 600)]
    counts = sum(torch.stack([(labels[h] >= 0).sum(), (labels[h] < 0).sum()]).double() for h in halves)
    shares = [ErdaCriterion("erda", erda_weight=0.2, all_reduce=lambda t: counts.clone(), world=2)(
        s[h], z[h], labels[h]).total.item() for h in halves]
    assert sum(shares) / 2 == pytest.approx(whole, rel=1e-5)


def test_diagnostics_against_hand_computation():
    s, z, labels = batch(n=50, c=4, every=5)
    full = torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(1))
    full[3] = -1  # a voxel without ground truth
    s1, z1 = s.clone().requires_grad_(True), z.clone().requires_grad_(True)
    crit = ErdaCriterion("erda", erda_weight=0.5)
    terms = crit(s1, z1, labels)
    d = EpochDiagnostics()
    d.watch(s1, z1, terms)
    terms.total.backward()
    d.step(s1.detach(), z1.detach(), terms, full)
    out = d.summary()
    unl = labels < 0
    known = unl & (full >= 0)
    p = torch.softmax(s.double(), 1)
    assert out["pseudo_acc"] == pytest.approx((s[known].argmax(1) == full[known]).double().mean().item())
    assert out["seg_acc"] == pytest.approx((z[known].argmax(1) == full[known]).double().mean().item())
    assert out["max_p"] == pytest.approx(p[unl].max(1).values.mean().item(), rel=1e-5)
    assert out["entropy_p"] == pytest.approx(-(p[unl] * p[unl].log()).sum(1).mean().item(), rel=1e-5)
    assert out["grad_ce"] == pytest.approx(z1.grad[~unl].norm().item(), rel=1e-5)
    assert out["grad_erda"] == pytest.approx(z1.grad[unl].norm().item(), rel=1e-5)
    assert out["grad_pseudo"] == pytest.approx(s1.grad[unl].norm().item(), rel=1e-5)
    assert out["ce"] == pytest.approx(terms.ce) and out["erda"] == pytest.approx(terms.erda)


def test_prototype_spread_and_head_options():
    head = PseudoLabelHead(4, 3, momentum=0.5)
    head.prototypes.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 1.0, 0, 0]]))
    head.seen.fill_(True)
    out = EpochDiagnostics().summary(head)
    c = 1 / math.sqrt(2)
    assert out["proto_cos_mean"] == pytest.approx((0 + c + c) / 3) and out["proto_cos_max"] == pytest.approx(c)
    torch.manual_seed(0)
    rand = PseudoLabelHead(4, 3, proto_init="random")
    assert rand.seen.all() and rand.prototypes.abs().sum() > 0
    g = torch.tensor([[2.0, 0, 0, 0], [4.0, 0, 0, 0]])
    lab = torch.tensor([0, 0])
    before = rand.prototypes[0].clone()
    rand.update_prototypes(g, lab)  # raw=False: unit-length features; random init: EMA from the first batch
    torch.testing.assert_close(rand.prototypes[0], 0.999 * before + 0.001 * torch.tensor([1.0, 0, 0, 0]))
    raw = PseudoLabelHead(4, 3, proto_features="raw")
    raw.update_prototypes(g, lab)
    torch.testing.assert_close(raw.prototypes[0], torch.tensor([3.0, 0, 0, 0]))  # first batch: its raw mean
    assert raw.seen.tolist() == [True, False, False]
