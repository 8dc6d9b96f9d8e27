"""The CUDA kernel against the float64 reference (skipped without a CUDA device and a CUDA build)."""
import itertools

import pytest
import torch
from _erda_cases import assert_close, make_inputs, reference64, run

import erda_sparse.ops as ops

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not (torch.cuda.is_available() and ops.cuda_built()),
                                 reason="needs a CUDA device and erda_sparse built with its CUDA kernels")]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def on_cuda(s, z, labels):
    return s.cuda(), z.cuda(), None if labels is None else labels.cuda()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("distance", ops.DISTANCES)
def test_cuda_matches_float64_reference(dtype, distance):
    # C = 300 exceeds the shared-memory tile and takes the direct kernel
    for c, reduction, erda_points, with_labels in itertools.product(
            (1, 13, 20, 40, 300), ops.REDUCTIONS, ops.ERDA_POINTS, (True, False)):
        s, z, labels = on_cuda(*make_inputs(301, c, dtype, seed=c, with_labels=with_labels))
        grad = torch.randn(301, dtype=torch.float64, device="cuda") if reduction == "none" else None
        kw = dict(distance=distance, reduction=reduction, erda_points=erda_points, entropy_weight=0.7,
                  erda_weight=0.3, ce_weight=1.2)
        out, gs, gz = run(ops.erda_loss, s, z, labels, grad, **kw)
        rout, rgs, rgz = reference64(s, z, labels, grad, **kw)
        assert_close(out, rout, dtype, "loss")
        assert_close(gs, rgs, dtype, "grad pseudo_logits")
        assert_close(gz, rgz, dtype, "grad logits")


def test_cuda_edge_cases_and_errors():
    s, z, labels = on_cuda(*make_inputs(64, 20, torch.float32, seed=3))
    s[:, 3] = -float("inf")
    z[:, 3] = -float("inf")
    labels[labels == 3] = 4
    s[5, 0] = float("nan")
    out, gs, gz = run(ops.erda_loss, s, z, labels, torch.ones(64, device="cuda"), reduction="none")
    assert torch.isnan(out[5]) and torch.isfinite(out[torch.arange(64, device="cuda") != 5]).all()
    assert torch.all(gs[torch.arange(64, device="cuda") != 5][:, 3] == 0)
    e = torch.empty(0, 20, device="cuda", requires_grad=True)
    assert ops.erda_loss(e, e).item() == 0.0
    bad = labels.clone()
    bad[7] = 20
    with pytest.raises(ValueError, match=r"labels\[7\] = 20"):
        ops.erda_loss(s, z, bad)
    torch.library.opcheck(torch.ops.erda_sparse.erda_loss.default,
                          (s.detach().requires_grad_(True), z.detach().requires_grad_(True), labels, "kl", 1.0, 0.1,
                           1.0, -1, False, "mean", True, True))
