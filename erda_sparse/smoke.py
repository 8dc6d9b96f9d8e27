"""`python -m erda_sparse.smoke`: checks an installation end to end in a few seconds.

1. the fused ERDA loss against its PyTorch reference (loss and both gradients) on random points;
2. a MinkowskiEngine sparse convolution against a dense torch conv3d on the same voxels.
Exits non-zero on any mismatch.
"""
import argparse
import sys
import time

import torch


def check_loss(device):
    from erda_sparse import ops

    g = torch.Generator().manual_seed(0)
    n, c = 20000, 20
    s = torch.randn(n, c, generator=g).to(device).requires_grad_(True)
    z = torch.randn(n, c, generator=g).to(device).requires_grad_(True)
    labels = torch.full((n,), -1, dtype=torch.long)
    labeled = torch.randperm(n, generator=g)[: n // 100]
    labels[labeled] = torch.randint(0, c, (labeled.numel(),), generator=g)
    labels = labels.to(device)
    t0 = time.perf_counter()
    loss = ops.erda_loss(s, z, labels, erda_weight=0.1)
    gs, gz = torch.autograd.grad(loss, (s, z))
    dt = time.perf_counter() - t0
    s64, z64 = s.detach().double().requires_grad_(True), z.detach().double().requires_grad_(True)
    ref = ops.reference.erda_loss(s64, z64, labels, erda_weight=0.1)
    rgs, rgz = torch.autograd.grad(ref, (s64, z64))
    err = max((loss.double() - ref).abs().item(), (gs.double() - rgs).abs().max().item(),
              (gz.double() - rgz).abs().max().item())
    ok = err < 1e-6
    print(f"fused ERDA loss on {device}: loss {loss.item():.6f} (reference {ref.item():.6f}), "
          f"max abs error {err:.2e}, {n} points x {c} classes forward+backward in {dt * 1e3:.1f} ms "
          f"[cpu kernels: {ops.cpu_capability()}] -> {'ok' if ok else 'MISMATCH'}")
    return ok


def check_minkowski():
    from erda_sparse.minkowski import ME

    g = torch.Generator().manual_seed(0)
    size = 12
    coords = (torch.rand(size, size, size, generator=g) < 0.2).nonzero().int()
    feats = torch.randn(len(coords), 3, generator=g)
    conv = ME.MinkowskiConvolution(3, 5, kernel_size=3, dimension=3, bias=False)
    x = ME.SparseTensor(feats, coordinates=torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords], 1))
    y = conv(x)
    # The same convolution, dense. ME's kernel (27, in, out) enumerates offsets with the first axis fastest.
    dense = torch.zeros(1, 3, size, size, size)
    dense[0, :, coords[:, 0], coords[:, 1], coords[:, 2]] = feats.t()
    w = torch.zeros(5, 3, 3, 3, 3)
    for kidx, k in enumerate(conv.kernel.detach()):
        w[:, :, kidx % 3, kidx // 3 % 3, kidx // 9] = k.t()
    out = y.C[:, 1:].long()
    yd = torch.nn.functional.conv3d(dense, w, padding=1)[0, :, out[:, 0], out[:, 1], out[:, 2]].t()
    err = (yd - y.F).abs().max().item()
    ok = err < 1e-5
    print(f"MinkowskiEngine {ME.__version__}: sparse 3x3x3 convolution on {len(coords)} voxels vs dense conv3d: "
          f"max abs error {err:.2e} -> {'ok' if ok else 'MISMATCH'}")
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    ok = check_loss(args.device) and check_minkowski()
    print("smoke test passed" if ok else "smoke test FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
