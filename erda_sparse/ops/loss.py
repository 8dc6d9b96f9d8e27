"""`erda_loss`: the fused ERDA objective (softmax, entropy, distance and cross-entropy, forward and
backward) on top of the native ops `torch.ops.erda_sparse.erda_loss_forward/backward`.

The forward computes the loss and small per-row statistics (7 numbers a row); the backward recomputes
p and q from them and writes both gradients in one pass, scaled by the incoming gradient. Nothing of
size N x C is allocated besides the two gradients.
"""
import torch

from ._checks import check_erda_args

try:
    from .. import _C  # noqa: F401  (loads the library: registers torch.ops.erda_sparse)
except ImportError as exc:  # pragma: no cover - depends on how the package was installed
    raise ImportError(
        "erda_sparse's native kernels (erda_sparse._C) are not built or not importable: "
        f"{exc}. Build them with `pip install --no-build-isolation .` (or `bash scripts/install.sh`) "
        "and import erda_sparse from the installed package, not from a source checkout without a build "
        "(`pip install --no-build-isolation -e .` builds in place)."
    ) from exc

_forward = torch.ops.erda_sparse.erda_loss_forward
_backward = torch.ops.erda_sparse.erda_loss_backward
NUM_STATS = 7


@torch.library.register_fake("erda_sparse::erda_loss_forward")
def _forward_fake(s, z, labels, distance, entropy_weight, erda_weight, ce_weight, ignore_index, erda_all,
                  reduction):
    n = s.shape[0]
    compute = torch.float64 if s.dtype == torch.float64 else torch.float32
    loss = s.new_empty((n,) if reduction == "none" else ())
    stats = s.new_empty((NUM_STATS, n), dtype=compute)
    counts = s.new_empty((2,), dtype=torch.int64)
    return loss, stats, counts


@torch.library.register_fake("erda_sparse::erda_loss_backward")
def _backward_fake(grad, s, z, labels, stats, counts, distance, entropy_weight, erda_weight, ce_weight,
                   ignore_index, erda_all, reduction, need_grad_pseudo, need_grad_logits):
    gs = torch.empty_like(s, memory_format=torch.contiguous_format) if need_grad_pseudo else s.new_empty((0,))
    gz = torch.empty_like(z, memory_format=torch.contiguous_format) if need_grad_logits else z.new_empty((0,))
    return gs, gz


def _setup_context(ctx, inputs, output):
    s, z, labels, *options = inputs
    _, stats, counts = output
    ctx.save_for_backward(s, z, labels, stats, counts)
    ctx.options = options
    ctx.mark_non_differentiable(stats, counts)


def _backward_formula(ctx, grad_loss, grad_stats, grad_counts):
    s, z, labels, stats, counts = ctx.saved_tensors
    need_s, need_z = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    gs, gz = _backward(grad_loss, s, z, labels, stats, counts, *ctx.options, need_s, need_z)
    return (gs if need_s else None, gz if need_z else None) + (None,) * (2 + len(ctx.options))


torch.library.register_autograd("erda_sparse::erda_loss_forward", _backward_formula, setup_context=_setup_context)


def erda_loss(pseudo_logits, logits, labels=None, *, distance="kl", entropy_weight=1.0, erda_weight=1.0,
              ce_weight=1.0, ignore_index=-1, erda_points="unlabeled", detach_pseudo=False, reduction="mean"):
    """The ERDA objective over N points and C classes, fused.

    pseudo_logits (s) and logits (z): (N, C), float32 / float16 / bfloat16 (float64 too), same dtype, device
    and shape; p = softmax(s), q = softmax(z) in float32 (float64 for float64 inputs).
    labels: (N,) int64 or None; a value in [0, C) marks a labeled point, ignore_index an unlabeled one.

    Per point: the ERDA term e = entropy_weight * H(p) + D(p, q), D = KL(p||q) ("kl"), KL(q||p)
    ("reverse_kl"), Jensen-Shannon ("js") or 1/2 sum (p - q)^2 ("mse"), over the unlabeled points
    (erda_points="unlabeled") or all of them ("all"); the supervised term c = -log q[y] on labeled points.
    reduction="mean": ce_weight * mean(c) + erda_weight * mean(e), an empty mean counting 0; "sum": sums;
    "none": the (N,) values ce_weight * c [labeled] + erda_weight * e [in the ERDA set].

    Gradients flow into logits and into pseudo_logits (not with detach_pseudo=True), in the input dtype.
    """
    check_erda_args(pseudo_logits, logits, labels, distance=distance, entropy_weight=entropy_weight,
                    erda_weight=erda_weight, ce_weight=ce_weight, ignore_index=ignore_index,
                    erda_points=erda_points, reduction=reduction)
    if detach_pseudo:
        pseudo_logits = pseudo_logits.detach()
    loss, _, _ = _forward(pseudo_logits, logits, labels, distance, float(entropy_weight), float(erda_weight),
                          float(ce_weight), int(ignore_index), erda_points == "all", reduction)
    return loss
