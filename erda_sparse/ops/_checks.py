"""Argument checks shared by the fused op and its reference, so both reject the same inputs the same way."""
import numbers

import torch

DISTANCES = ("kl", "reverse_kl", "js", "mse")
REDUCTIONS = ("mean", "sum", "none")
ERDA_POINTS = ("unlabeled", "all")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"erda_loss: unknown {name} {value!r} (expected one of {', '.join(map(repr, choices))})")


def _real(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"erda_loss: {name} must be a real number, got {value!r}")


def check_erda_args(pseudo_logits, logits, labels, *, distance, entropy_weight, erda_weight, ce_weight,
                    ignore_index, erda_points, reduction):
    """Raises ValueError naming the offending argument. Shapes, dtypes and devices only (works on fake
    tensors); label values are checked where the data is read."""
    for name, t in (("pseudo_logits", pseudo_logits), ("logits", logits)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"erda_loss: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in FLOAT_DTYPES:
            raise ValueError(f"erda_loss: {name} must be float32, float16, bfloat16 or float64, got {t.dtype}")
        if t.dim() != 2:
            raise ValueError(f"erda_loss: {name} must be 2-D (N, C), got shape {tuple(t.shape)}")
    if pseudo_logits.shape != logits.shape:
        raise ValueError(
            "erda_loss: pseudo_logits and logits must have the same shape, got "
            f"{tuple(pseudo_logits.shape)} and {tuple(logits.shape)}"
        )
    if pseudo_logits.shape[1] < 1:
        raise ValueError(f"erda_loss: logits must have at least one class, got shape {tuple(logits.shape)}")
    if pseudo_logits.dtype != logits.dtype:
        raise ValueError(
            "erda_loss: pseudo_logits and logits must have the same dtype, "
            f"got {pseudo_logits.dtype} and {logits.dtype}"
        )
    if pseudo_logits.device != logits.device:
        raise ValueError(
            "erda_loss: pseudo_logits and logits must be on the same device, got "
            f"{pseudo_logits.device} and {logits.device}"
        )
    if labels is not None:
        if not isinstance(labels, torch.Tensor):
            raise ValueError(f"erda_loss: labels must be a torch.Tensor or None, got {type(labels).__name__}")
        if labels.dtype != torch.int64:
            raise ValueError(f"erda_loss: labels must be int64, got {labels.dtype}")
        if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
            raise ValueError(
                f"erda_loss: labels must have shape (N,) = ({logits.shape[0]},), got {tuple(labels.shape)}"
            )
        if labels.device != logits.device:
            raise ValueError(
                f"erda_loss: labels must be on the same device as logits, got {labels.device} and {logits.device}"
            )
    _choice("distance", distance, DISTANCES)
    _choice("reduction", reduction, REDUCTIONS)
    _choice("erda_points", erda_points, ERDA_POINTS)
    _real("entropy_weight", entropy_weight)
    _real("erda_weight", erda_weight)
    _real("ce_weight", ce_weight)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise ValueError(f"erda_loss: ignore_index must be an int, got {ignore_index!r}")
