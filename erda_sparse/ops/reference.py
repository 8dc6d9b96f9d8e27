"""The ERDA loss as a plain PyTorch composition (autograd): the tests' reference and the eager baseline
of the benchmark. Same signature and semantics as `erda_sparse.ops.erda_loss`.

Every x·log(y) term is taken as 0 where x == 0 (also in the gradient), so classes at -inf behave; a NaN
anywhere in a row still gives NaN.
"""
import torch

from ._checks import check_erda_args

LN2 = 0.6931471805599453


def _xlog(x, log_y):
    """x * log_y, with 0 where x == 0 — in value and in gradient (no 0 * inf)."""
    zero = x == 0
    return torch.where(zero, torch.zeros_like(x), x * torch.where(zero, torch.zeros_like(log_y), log_y))


def _distance(kind, p, q, lp, lq):
    if kind == "kl":
        return _xlog(p, lp - lq).sum(-1)
    if kind == "reverse_kl":
        return _xlog(q, lq - lp).sum(-1)
    if kind == "js":
        m = p + q
        lm = torch.log(torch.where(m == 0, torch.ones_like(m), m)) - LN2
        return 0.5 * (_xlog(p, lp - lm).sum(-1) + _xlog(q, lq - lm).sum(-1))
    if kind == "mse":
        return 0.5 * ((p - q) ** 2).sum(-1)
    raise AssertionError(kind)


def erda_loss(pseudo_logits, logits, labels=None, *, distance="kl", entropy_weight=1.0, erda_weight=1.0,
              ce_weight=1.0, ignore_index=-1, erda_points="unlabeled", detach_pseudo=False, reduction="mean"):
    check_erda_args(pseudo_logits, logits, labels, distance=distance, entropy_weight=entropy_weight,
                    erda_weight=erda_weight, ce_weight=ce_weight, ignore_index=ignore_index,
                    erda_points=erda_points, reduction=reduction)
    out_dtype = logits.dtype
    compute = torch.float64 if out_dtype == torch.float64 else torch.float32
    s = pseudo_logits.to(compute)
    z = logits.to(compute)
    if detach_pseudo:
        s = s.detach()
    N, C = z.shape
    if labels is None:
        labeled = torch.zeros(N, dtype=torch.bool, device=z.device)
        y = torch.zeros(N, dtype=torch.int64, device=z.device)
    else:
        labeled = labels != ignore_index
        bad = labeled & ((labels < 0) | (labels >= C))
        if not torch.compiler.is_compiling() and bool(bad.any()):  # a data-dependent check: eager only
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"erda_loss: labels[{i}] = {int(labels[i])} is neither a class in [0, {C}) "
                f"nor ignore_index ({ignore_index})"
            )
        y = torch.where(labeled, labels, torch.zeros_like(labels))
    in_set = torch.ones_like(labeled) if erda_points == "all" else ~labeled

    lp = torch.log_softmax(s, dim=-1)
    lq = torch.log_softmax(z, dim=-1)
    p, q = lp.exp(), lq.exp()
    entropy = -_xlog(p, lp).sum(-1)
    e = entropy_weight * entropy + _distance(distance, p, q, lp, lq)
    c = -lq.gather(1, y[:, None])[:, 0]

    zero = torch.zeros((), dtype=compute, device=z.device)
    c_part = torch.where(labeled, c, zero)
    e_part = torch.where(in_set, e, zero)
    if reduction == "none":
        out = ce_weight * c_part + erda_weight * e_part
    else:
        c_sum, e_sum = c_part.sum(), e_part.sum()
        if reduction == "mean":
            c_sum = c_sum / labeled.sum().clamp(min=1)
            e_sum = e_sum / in_set.sum().clamp(min=1)
        out = ce_weight * c_sum + erda_weight * e_sum
    return out.to(out_dtype)
