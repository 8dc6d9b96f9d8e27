"""Helpers shared by the loss tests: inputs, the float64 reference run, the CPU kernel variants."""
import torch

import erda_sparse.ops as ops

HALF_DTYPES = (torch.float16, torch.bfloat16)


def cpu_capabilities():
    caps = ["generic"]
    try:
        ops.set_cpu_capability("avx2")
        caps.append("avx2")
    except ValueError:
        pass
    finally:
        ops.set_cpu_capability("")
    return caps


def make_inputs(n, c, dtype=torch.float32, labeled_frac=0.3, seed=0, scale=1.0, with_labels=True):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype)
    z = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype)
    labels = None
    if with_labels:
        labels = torch.randint(0, c, (n,), generator=g)
        unl = torch.rand(n, generator=g) >= labeled_frac
        labels[unl] = -1
    return s, z, labels


def run(fn, s, z, labels, grad=None, **kw):
    """Loss and gradients of fn on leaf copies of s and z (grad: the upstream gradient, default 1)."""
    s = s.detach().clone().requires_grad_(True)
    z = z.detach().clone().requires_grad_(True)
    out = fn(s, z, labels, **kw)
    if grad is None:
        grad = torch.ones_like(out)
    gs, gz = torch.autograd.grad(out, (s, z), grad.to(out.dtype), allow_unused=True)
    return out.detach(), gs, gz


def reference64(s, z, labels, grad=None, **kw):
    """The reference composition evaluated in float64 on the same (already rounded) inputs."""
    return run(ops.reference.erda_loss, s.double(), z.double(), labels,
               None if grad is None else grad.double(), **kw)


def tolerances(dtype):
    if dtype in HALF_DTYPES:
        return dict(rtol=2e-2, atol=1e-5)
    return dict(rtol=1e-5, atol=1e-6)


def assert_close(actual, expected, dtype, what):
    if expected is None:
        assert actual is None, f"{what}: expected no gradient"
        return
    assert actual is not None, f"{what}: expected a gradient"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    torch.testing.assert_close(actual.double(), expected.double(), **tolerances(dtype), equal_nan=True,
                               msg=lambda m: f"{what}: {m}")
