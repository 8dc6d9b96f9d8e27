"""`erda_loss`: the fused ERDA objective (softmax, entropy, distance and cross-entropy, loss and
gradients) on top of the native op `torch.ops.erda_sparse.erda_loss`.

When an input needs a gradient, the op computes it in the same pass as the loss, from the same
exponentials, for an upstream gradient of 1 (Liger-Kernel's habit); the backward hands those gradients on
as they are when the upstream gradient is exactly 1 (`loss.backward()`, a sum of losses) and otherwise
scales them. Nothing of size N x C is allocated besides the two gradients (and, for an upstream
gradient other than 1, their scaled copies).
"""
import torch

from ._checks import check_erda_args

try:
    from .. import _C  # noqa: F401  (loads the library: registers torch.ops.erda_sparse)
except ImportError as exc:  # pragma: no cover - depends on how the package was installed
    from ._install import import_error_advice

    raise ImportError(import_error_advice(exc)) from exc

_op = torch.ops.erda_sparse.erda_loss


@torch.library.register_fake("erda_sparse::erda_loss")
def _erda_loss_fake(s, z, labels, distance, entropy_weight, erda_weight, ce_weight, ignore_index, erda_all,
                    reduction, need_grad_pseudo, need_grad_logits):
    loss = s.new_empty((s.shape[0],) if reduction == "none" else ())
    gs = torch.empty_like(s, memory_format=torch.contiguous_format) if need_grad_pseudo else s.new_empty((0,))
    gz = torch.empty_like(z, memory_format=torch.contiguous_format) if need_grad_logits else z.new_empty((0,))
    return loss, gs, gz


def _setup_context(ctx, inputs, output):
    _, gs, gz = output
    ctx.reduction = inputs[9]
    ctx.mark_non_differentiable(gs, gz)
    ctx.set_materialize_grads(False)  # no N x C zeros for the gradient outputs, which take no gradient
    ctx.save_for_backward(gs, gz)


def _exactly_one(grad):
    """True when grad is a real (not traced) 1: a single value, or, for reduction="none", one value expanded
    over the rows (what `values.sum().backward()` hands back). The gradients computed in the forward are then
    the answer as they are, so summing the per-point values costs no N x C pass."""
    if type(grad) is not torch.Tensor or torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack():
        return False
    if grad.is_cuda and torch.cuda.is_current_stream_capturing():
        return False
    if grad.numel() == 1:
        return bool(grad.reshape(()) == 1)
    return grad.dim() == 1 and grad.numel() > 1 and grad.stride(0) == 0 and bool(grad[0] == 1)


def _backward(ctx, grad_loss, _grad_gs, _grad_gz):
    gs, gz = ctx.saved_tensors
    if grad_loss is None:  # the loss itself took no part in what was differentiated
        return (None,) * 12
    need_s, need_z = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    for name, need, g in (("pseudo_logits", need_s, gs), ("logits", need_z, gz)):
        if need and g.dim() != 2:
            raise RuntimeError(f"erda_sparse::erda_loss computed no gradient for {name}, which requires one: call "
                               f"it with need_grad_{'pseudo' if name == 'pseudo_logits' else 'logits'}=True "
                               "(erda_sparse.ops.erda_loss does)")
    if not _exactly_one(grad_loss):
        scale = grad_loss[:, None] if ctx.reduction == "none" else grad_loss
        gs = gs * scale if need_s else gs
        gz = gz * scale if need_z else gz
    return (gs if need_s else None, gz if need_z else None) + (None,) * 10


torch.library.register_autograd("erda_sparse::erda_loss", _backward, setup_context=_setup_context)


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
    grad_mode = torch.is_grad_enabled()
    loss, _, _ = _op(pseudo_logits, logits, labels, distance, float(entropy_weight), float(erda_weight),
                     float(ce_weight), int(ignore_index), erda_points == "all", reduction,
                     grad_mode and pseudo_logits.requires_grad, grad_mode and logits.requires_grad)
    return loss
