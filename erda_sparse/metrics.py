"""Segmentation metrics from a confusion matrix: per-class IoU, mIoU, mAcc, overall accuracy."""
import numpy as np


def confusion(pred, target, num_classes, ignore_index=-1):
    """(num_classes, num_classes) int64 counts, rows = ground truth, columns = prediction; ignored targets
    are left out."""
    pred = np.asarray(pred).reshape(-1)
    target = np.asarray(target).reshape(-1)
    keep = target != ignore_index
    t, p = target[keep].astype(np.int64), pred[keep].astype(np.int64)
    if len(t) and (t.min() < 0 or t.max() >= num_classes or p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"labels outside [0, {num_classes}) in the confusion matrix input")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def scores(cm):
    """IoU_k = TP / (TP + FP + FN) and Acc_k = TP / (TP + FN) per class (NaN for a class neither present
    nor predicted / not present); mIoU and mAcc average the defined ones; OA = trace / total."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    gt = cm.sum(1)
    pred = cm.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(gt + pred - tp > 0, tp / (gt + pred - tp), np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    total = cm.sum()
    return {
        "iou": iou.tolist(),
        "acc": acc.tolist(),
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "macc": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
        "oa": float(tp.sum() / total) if total else float("nan"),
    }


def table(s, class_names):
    """A readable per-class table with the summary line."""
    lines = [f"{'class':<16} {'IoU':>7} {'Acc':>7}"]
    for name, iou, acc in zip(class_names, s["iou"], s["acc"]):
        f = lambda v: "    -  " if v != v else f"{100 * v:6.1f}%"  # noqa: E731
        lines.append(f"{name:<16} {f(iou):>7} {f(acc):>7}")
    lines.append(f"{'mIoU':<16} {100 * s['miou']:6.2f}%   mAcc {100 * s['macc']:6.2f}%   OA {100 * s['oa']:6.2f}%")
    return "\n".join(lines)
