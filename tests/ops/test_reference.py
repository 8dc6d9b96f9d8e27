"""The reference composition against the definitions, written out row by row in numpy float64."""
import numpy as np
import pytest
import torch

import erda_sparse.ops as ops


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def definition(s, z, labels, distance, ew, erw, cew, erda_points, ignore_index=-1):
    """Per-point values ce_weight*c*[labeled] + erda_weight*e*[in set], plus the two sets."""
    out, lab_mask, set_mask = [], [], []
    for si, zi, yi in zip(s, z, labels):
        p, q = softmax(si), softmax(zi)
        H = -sum(pk * np.log(pk) for pk in p if pk > 0)
        if distance == "kl":
            D = sum(pk * np.log(pk / qk) for pk, qk in zip(p, q) if pk > 0)
        elif distance == "reverse_kl":
            D = sum(qk * np.log(qk / pk) for pk, qk in zip(p, q) if qk > 0)
        elif distance == "js":
            m = (p + q) / 2
            D = 0.5 * sum(pk * np.log(pk / mk) for pk, mk in zip(p, m) if pk > 0) + 0.5 * sum(
                qk * np.log(qk / mk) for qk, mk in zip(q, m) if qk > 0)
        else:
            D = 0.5 * np.sum((p - q) ** 2)
        labeled = yi != ignore_index
        in_set = erda_points == "all" or not labeled
        v = 0.0
        if labeled:
            v += cew * -np.log(q[yi])
        if in_set:
            v += erw * (ew * H + D)
        out.append(v)
        lab_mask.append(labeled)
        set_mask.append(in_set)
    return np.array(out), np.array(lab_mask), np.array(set_mask)


@pytest.mark.parametrize("distance", ops.DISTANCES)
@pytest.mark.parametrize("erda_points", ops.ERDA_POINTS)
def test_reference_matches_definition(distance, erda_points):
    rng = np.random.default_rng(0)
    n, c = 30, 7
    s, z = rng.normal(size=(n, c)) * 2, rng.normal(size=(n, c)) * 2
    labels = np.where(rng.random(n) < 0.4, rng.integers(0, c, n), -1)
    ew, erw, cew = 0.6, 0.2, 1.7
    per_point, lab, in_set = definition(s, z, labels, distance, ew, erw, cew, erda_points)
    args = (torch.tensor(s), torch.tensor(z), torch.tensor(labels))
    kw = dict(distance=distance, entropy_weight=ew, erda_weight=erw, ce_weight=cew, erda_points=erda_points)
    none = ops.reference.erda_loss(*args, reduction="none", **kw).numpy()
    np.testing.assert_allclose(none, per_point, rtol=1e-12, atol=1e-12)
    # mean: each term averaged over its own set
    c_part, e_part = definition(s, z, labels, distance, ew, 0.0, cew, erda_points)[0], definition(
        s, z, labels, distance, ew, erw, 0.0, erda_points)[0]
    expected_mean = c_part[lab].sum() / lab.sum() + e_part[in_set].sum() / in_set.sum()
    np.testing.assert_allclose(ops.reference.erda_loss(*args, reduction="mean", **kw).item(), expected_mean, rtol=1e-12)
    total = ops.reference.erda_loss(*args, reduction="sum", **kw).item()
    np.testing.assert_allclose(total, per_point.sum(), rtol=1e-12)
    # with lambda = 1 and kl the ERDA term is the cross-entropy -sum p log q
    if distance == "kl":
        p = np.apply_along_axis(softmax, 1, s)
        logq = np.log(np.apply_along_axis(softmax, 1, z))
        ce = -(p * logq).sum(1)
        got = ops.reference.erda_loss(*args[:2], None, reduction="none").numpy()
        np.testing.assert_allclose(got, ce, rtol=1e-12)
