"""The fused op against the float64 reference: every option combination, both CPU kernel variants, every
dtype; gradcheck; opcheck; torch.compile; edge cases; bad input."""
import itertools
import math

import pytest
import torch
from _erda_cases import assert_close, cpu_capabilities, make_inputs, reference64, run

import erda_sparse.ops as ops

CAPS = cpu_capabilities()
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(params=CAPS)
def cap(request):
    ops.set_cpu_capability(request.param)
    yield request.param
    ops.set_cpu_capability("")


def check_against_reference(s, z, labels, grad=None, **kw):
    out, gs, gz = run(ops.erda_loss, s, z, labels, grad, **kw)
    rout, rgs, rgz = reference64(s, z, labels, grad, **kw)
    assert out.shape == rout.shape
    assert_close(out, rout, s.dtype, "loss")
    assert_close(gs, rgs, s.dtype, "grad pseudo_logits")
    assert_close(gz, rgz, s.dtype, "grad logits")
    return out, gs, gz


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("distance", ops.DISTANCES)
@pytest.mark.parametrize("reduction", ops.REDUCTIONS)
def test_all_options_match_float64_reference(cap, dtype, distance, reduction):
    # C = 13 and 20 leave a partial vector at the end of every row; C = 40 does not.
    for c, erda_points, detach, with_labels, weights in itertools.product(
        (13, 20, 40), ops.ERDA_POINTS, (False, True), (True, False), ((1.0, 1.0, 1.0), (0.5, 0.1, 2.0))
    ):
        s, z, labels = make_inputs(67, c, dtype, seed=c, with_labels=with_labels)
        ew, erw, cew = weights
        grad = torch.randn(67, dtype=torch.float64) if reduction == "none" else None
        out, gs, _ = check_against_reference(
            s, z, labels, grad, distance=distance, reduction=reduction, erda_points=erda_points,
            detach_pseudo=detach, entropy_weight=ew, erda_weight=erw, ce_weight=cew,
        )
        assert (gs is None) == detach


def test_erda_gradients_are_the_closed_form(cap):
    """dL/dz = q - p and dL/ds_k = p_k (-log q_k - L) for the per-point ERDA loss with lambda = 1 (kl),
    computed here from p and q in float64, independent of the kernels and of autograd."""
    s, z, _ = make_inputs(50, 20, torch.float32, seed=3)
    out, gs, gz = run(ops.erda_loss, s, z, None, torch.ones(50), reduction="none")
    p = torch.softmax(s.double(), -1)
    log_q = torch.log_softmax(z.double(), -1)
    L = -(p * log_q).sum(-1)
    torch.testing.assert_close(out.double(), L, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gz.double(), log_q.exp() - p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gs.double(), p * (-log_q - L[:, None]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("distance", ops.DISTANCES)
@pytest.mark.parametrize("reduction", ops.REDUCTIONS)
@pytest.mark.parametrize("erda_points", ops.ERDA_POINTS)
def test_gradcheck_float64(cap, distance, reduction, erda_points):
    s, z, labels = make_inputs(7, 5, torch.float64, labeled_frac=0.4, seed=1, scale=1.0)
    s.requires_grad_(True)
    z.requires_grad_(True)
    f = lambda a, b: ops.erda_loss(a, b, labels, distance=distance, reduction=reduction,  # noqa: E731
                                   erda_points=erda_points, entropy_weight=0.7, erda_weight=1.3, ce_weight=0.9)
    assert torch.autograd.gradcheck(f, (s, z))
    assert torch.autograd.gradgradcheck is not None  # second order is not supported (analytic first order)


@pytest.mark.parametrize("reduction", ops.REDUCTIONS)
def test_opcheck(cap, reduction):
    s, z, labels = make_inputs(33, 20, torch.float32, seed=5)
    cases = ((labels, "kl", False, (True, True)), (None, "js", True, (False, True)),
             (labels, "mse", True, (True, False)), (labels, "reverse_kl", False, (False, False)))
    for lab, dist, erda_all, need in cases:
        args = (s.clone().requires_grad_(need[0]), z.clone().requires_grad_(need[1]), lab, dist, 1.0, 0.1, 1.0, -1,
                erda_all, reduction, *need)
        torch.library.opcheck(torch.ops.erda_sparse.erda_loss.default, args)


def test_torch_compile_fullgraph_no_graph_break():
    s, z, labels = make_inputs(40, 20, torch.float32, seed=9)

    def step(a, b, lab):
        return ops.erda_loss(a, b, lab, erda_weight=0.1) * 2.0

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    out, gs, gz = run(compiled, s, z, labels)
    rout, rgs, rgz = run(step, s, z, labels)
    torch.testing.assert_close(out, rout)
    torch.testing.assert_close(gs, rgs)
    torch.testing.assert_close(gz, rgz)
    explanation = torch._dynamo.explain(step)(s, z, labels)
    assert explanation.graph_break_count == 0


def test_grad_output_scaling(cap):
    s, z, labels = make_inputs(45, 20, torch.float32, seed=2)
    for reduction, grad in (("mean", torch.tensor(2.5)), ("sum", torch.tensor(-0.3)), ("mean", torch.tensor(1.0))):
        check_against_reference(s, z, labels, grad, reduction=reduction)


def test_loss_inside_a_larger_graph(cap):
    """The op as one term of a training loss: upstream gradient 1 (handed on as computed) and a scaled
    copy of the same graph (scaled), through .backward() into leaves, twice with retain_graph."""
    s, z, labels = make_inputs(30, 20, torch.float32, seed=14)
    w = torch.randn(20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(14))
    grads = []
    for fn in (ops.erda_loss, ops.reference.erda_loss):
        a = s.double().clone().requires_grad_(True)
        b = z.double().clone().requires_grad_(True)
        sa, zb = (a @ w).float(), (b @ w).float()
        loss = fn(sa, zb, labels) + 0.5 * fn(sa, zb, labels, distance="js") * 3.0
        loss.backward(retain_graph=True)
        loss.backward()
        grads.append((a.grad, b.grad))
    # both sides run the loss in float32: differences up to 4e-6 of the largest gradient were seen over
    # 300 random w, so the absolute tolerance follows the gradients' scale
    for fused, ref in zip(*grads):
        torch.testing.assert_close(fused, ref, rtol=1e-4, atol=2e-5 * ref.abs().max().item())


def test_no_gradient_work_without_grad(cap):
    s, z, labels = make_inputs(20, 20, torch.float32, seed=15)
    out = torch.ops.erda_sparse.erda_loss(s, z, labels, "kl", 1.0, 1.0, 1.0, -1, False, "mean", False, False)
    assert out[1].numel() == 0 and out[2].numel() == 0
    with torch.no_grad():
        a = ops.erda_loss(s.requires_grad_(True), z, labels)
    assert not a.requires_grad
    torch.testing.assert_close(a, ops.reference.erda_loss(s, z, labels))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("c", (3, 20))
def test_large_input_streamed_gradients(cap, dtype, c):
    """Gradients of 8 MiB and more are written with streaming stores: same results."""
    n = (8 << 20) // (c * torch.empty((), dtype=dtype).element_size()) + 13
    s, z, labels = make_inputs(n, c, dtype, seed=16)
    check_against_reference(s, z, labels, distance="kl")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_small_class_count(cap, dtype):
    """C = 1 .. 17: whole and partial vectors of classes, whole blocks of 8 rows and a partial one."""
    for c in range(1, 18):
        s, z, labels = make_inputs(29, c, dtype, seed=100 + c)
        check_against_reference(s, z, labels, distance="kl", reduction="none",
                                grad=torch.randn(29, dtype=torch.float64))


def test_one_class(cap):
    s, z, labels = make_inputs(10, 1, torch.float32, seed=4)
    out, gs, gz = check_against_reference(s, z, labels, reduction="none", grad=torch.randn(10, dtype=torch.float64))
    assert torch.all(out == 0)  # p = q = 1: no entropy, no divergence, -log 1 = 0


@pytest.mark.parametrize("reduction", ops.REDUCTIONS)
def test_zero_points(cap, reduction):
    s = torch.empty(0, 20, requires_grad=True)
    z = torch.empty(0, 20, requires_grad=True)
    out = ops.erda_loss(s, z, torch.empty(0, dtype=torch.long), reduction=reduction)
    assert out.shape == ((0,) if reduction == "none" else ())
    if reduction != "none":
        assert out.item() == 0.0
    gs, gz = torch.autograd.grad(out.sum(), (s, z))
    assert gs.shape == (0, 20) and gz.shape == (0, 20)


def test_empty_sets_contribute_zero(cap):
    s, z, _ = make_inputs(12, 6, torch.float32, seed=6)
    all_labeled = torch.arange(12) % 6
    none_labeled = torch.full((12,), -1)
    ce_only = ops.erda_loss(s, z, all_labeled)  # the ERDA set is empty
    torch.testing.assert_close(ce_only, torch.nn.functional.cross_entropy(z, all_labeled))
    erda_only = ops.erda_loss(s, z, none_labeled)  # no labeled point
    assert math.isfinite(erda_only.item())
    check_against_reference(s, z, all_labeled)
    check_against_reference(s, z, none_labeled)


def test_classes_at_minus_infinity(cap):
    s, z, labels = make_inputs(30, 20, torch.float32, seed=7)
    s[:, 3] = -math.inf
    z[:, 3] = -math.inf
    s[5, 10:] = -math.inf
    z[5, 10:] = -math.inf
    labels[labels == 3] = 4
    for distance in ops.DISTANCES:
        out, gs, gz = check_against_reference(s, z, labels, distance=distance, reduction="none",
                                              grad=torch.randn(30, dtype=torch.float64))
        assert torch.isfinite(out).all() and torch.isfinite(gs).all() and torch.isfinite(gz).all()
        assert torch.all(gs[:, 3] == 0) and torch.all(gz[:, 3] == 0)


def test_huge_logits(cap):
    s, z, labels = make_inputs(40, 20, torch.float32, seed=8)
    s = torch.sign(s) * 1e4
    z = z * 3e3
    for distance in ops.DISTANCES:
        out, gs, gz = run(ops.erda_loss, s, z, labels, distance=distance, reduction="sum")
        rout, rgs, rgz = reference64(s, z, labels, distance=distance, reduction="sum")
        for name, a, b in (("loss", out, rout), ("grad pseudo_logits", gs, rgs), ("grad logits", gz, rgz)):
            # float32 maths on terms of size 1e4: errors are relative to the largest term, not to each element
            atol = max(1e-6, 1e-6 * b.abs().max().item())
            torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=atol, msg=lambda m: f"{distance} {name}: {m}")
            assert torch.isfinite(a).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_row_gives_nan(cap, dtype):
    s, z, labels = make_inputs(20, 20, dtype, seed=10)
    s[3, 7] = math.nan
    z[11, 2] = math.nan
    labels[11] = 5  # a labeled row with NaN logits
    for distance in ops.DISTANCES:
        out, gs, gz = run(ops.erda_loss, s, z, labels, torch.ones(20), distance=distance, reduction="none")
        assert torch.isnan(out[3]) and torch.isnan(out[11])
        assert torch.isnan(gs[3]).all() and torch.isnan(gz[3]).all() and torch.isnan(gz[11]).all()
        others = torch.ones(20, dtype=torch.bool)
        others[[3, 11]] = False
        assert torch.isfinite(out[others]).all() and torch.isfinite(gz[others]).all()
        assert torch.isnan(ops.erda_loss(s, z, labels, distance=distance))


def test_non_contiguous_inputs(cap):
    base_s, base_z, _ = make_inputs(80, 50, torch.float32, seed=11)
    labels = torch.randint(-1, 20, (80,))[::2]
    s_strided = base_s[::2, 5:25]  # row stride 100, class stride 1
    z_strided = base_z[::2, 10:30]
    s_t = base_s[:20, :40].t()  # transposed view: class stride != 1
    z_t = base_z[:20, :40].t()
    for s, z, lab in ((s_strided, z_strided, labels), (s_t, z_t, torch.randint(-1, 20, (40,)))):
        assert not s.is_contiguous()
        check_against_reference(s, z, lab, distance="js")
    lab_strided = torch.randint(-1, 20, (80,))[::2]
    check_against_reference(s_strided.contiguous(), z_strided.contiguous(), lab_strided)


def test_rows_that_share_memory(cap):
    """Expanded inputs (row stride 0): every row reads the same C values, and nothing past them."""
    base_s, base_z, labels = make_inputs(1, 13, torch.float32, seed=17)
    s, z = base_s.expand(21, 13), base_z.expand(21, 13)
    labels = torch.randint(-1, 13, (21,), generator=torch.Generator().manual_seed(0))
    check_against_reference(s, z, labels, distance="kl")


def test_detach_pseudo_blocks_only_the_pseudo_gradient():
    s, z, labels = make_inputs(30, 20, torch.float32, seed=12)
    s.requires_grad_(True)
    z.requires_grad_(True)
    a = ops.erda_loss(s, z, labels, detach_pseudo=True)
    b = ops.erda_loss(s, z, labels)
    torch.testing.assert_close(a, b)
    a.backward()
    assert s.grad is None and z.grad is not None


def test_cpu_capability_reported():
    assert ops.cpu_capability() in ("avx2", "generic")


# ----------------------------------------------------------------------------------------------------
# Bad input: a clear error naming the argument.

def _bad(match, *args, **kw):
    with pytest.raises((ValueError, RuntimeError), match=match):
        ops.erda_loss(*args, **kw)
    with pytest.raises((ValueError, RuntimeError), match=match):
        ops.reference.erda_loss(*args, **kw)


def test_bad_input_errors():
    s, z, labels = make_inputs(10, 5, torch.float32)
    _bad("same shape", s, z[:, :4], labels)
    _bad("same shape", s, z[:9], labels)
    _bad("same dtype", s, z.double(), labels)
    _bad("logits must be float32", s, z.long(), labels)
    _bad("pseudo_logits must be float32", s.int(), z, labels)
    _bad("2-D", s[0], z[0], labels)
    _bad(r"labels must have shape \(N,\)", s, z, labels[:9])
    _bad("labels must be int64", s, z, labels.int())
    bad = labels.clone()
    bad[4] = 5
    _bad(r"labels\[4\] = 5", s, z, bad)
    bad[4] = -7
    _bad(r"labels\[4\] = -7", s, z, bad)
    _bad("same device", s, z.to("meta"), labels)
    _bad("labels must be on the same device", s, z, labels.to("meta"))
    _bad("unknown distance 'kld'", s, z, labels, distance="kld")
    _bad("unknown reduction 'avg'", s, z, labels, reduction="avg")
    _bad("unknown erda_points", s, z, labels, erda_points="some")
    _bad("entropy_weight must be a real number", s, z, labels, entropy_weight="1")


def test_bad_input_to_the_raw_op():
    """The registered op checks its arguments itself too (no crash when called directly)."""
    s, z, labels = make_inputs(10, 5, torch.float32)
    op = torch.ops.erda_sparse.erda_loss
    opts = (1.0, 1.0, 1.0, -1, False)
    with pytest.raises(ValueError, match="same shape"):
        op(s, z[:, :3], labels, "kl", *opts, "mean", True, True)
    with pytest.raises(ValueError, match="unknown distance"):
        op(s, z, labels, "l2", *opts, "mean", True, True)
    with pytest.raises(ValueError, match="unknown reduction"):
        op(s, z, labels, "kl", *opts, "max", True, True)
    with pytest.raises(ValueError, match=r"labels\[0\] = 9"):
        op(s, z, torch.full((10,), 9), "kl", *opts, "mean", True, True)
    with pytest.raises(ValueError, match="labels must be int64"):
        op(s, z, labels.float(), "kl", *opts, "mean", True, True)
    with pytest.raises(ValueError, match="logits must be float32"):
        op(s.long(), z.long(), labels, "kl", *opts, "mean", True, True)


def test_ignore_index_other_than_minus_one(cap):
    s, z, labels = make_inputs(25, 8, torch.float32, seed=13)
    labels[labels == -1] = 255
    check_against_reference(s, z, labels, ignore_index=255)


@pytest.mark.parametrize("ignore_index", [2, -100, 2**40 + 3], ids=["a class", "negative", "low bits a class"])
def test_ignore_index_values(cap, ignore_index):
    """Labels equal to ignore_index are unlabeled whatever its value: one of the classes, a negative number, or
    an int64 whose low 32 bits are a class. 67 rows: full blocks of 8 and a partial one."""
    s, z, labels = make_inputs(67, 8, torch.float32, seed=14, labeled_frac=0.5)
    labels[labels == -1] = ignore_index
    assert (labels == ignore_index).any() and (labels != ignore_index).any()
    check_against_reference(s, z, labels, ignore_index=ignore_index)


def test_labels_counted_over_many_chunks(cap):
    """More labels than one thread's share: the counts that scale the mean (checked through the loss and
    its gradients), and the first bad label named even when a later one is bad too."""
    n = 200_003
    s, z, labels = make_inputs(n, 3, torch.float32, seed=15, labeled_frac=0.01)
    check_against_reference(s, z, labels)
    check_against_reference(s, z, labels.flip(0), erda_points="all")
    bad = labels.clone()
    bad[180_001] = 3
    bad[150_000] = -2
    with pytest.raises(ValueError, match=r"labels\[150000\] = -2 "):
        ops.erda_loss(s, z, bad)


# ----------------------------------------------------------------------------------------------------
# kl on float32 rows of C % 4 == 0 classes: whole blocks of 8 rows with no labeled row take the AVX2
# kernel's rows-layout path (runs of up to 4 such blocks at once; 4 blocks of C <= 64 classes by a variant
# compiled for that C, fewer blocks or more classes by one that reads C at run time); the others, the
# transposing one.

# blocks of 8 rows, U: no labeled row, L: one labeled row; runs of 1, 2, 4, 3 and 5 (4 + 1) U blocks
BLOCKS = "ULUULUUUULUUULUUUUUL"


def block_labels(c, tail=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((8 * len(BLOCKS) + tail,), -1)
    for b, kind in enumerate(BLOCKS):
        if kind == "L":
            labels[8 * b + int(torch.randint(0, 8, (1,), generator=g))] = int(torch.randint(0, c, (1,), generator=g))
    return labels


@pytest.mark.parametrize("c", (4, 8, 12, 16, 20, 24, 40, 44, 64, 68, 72))
def test_rows_layout_blocks_match_float64_reference(cap, c):
    """C / 4 odd and even (a vector shared by two rows, or not), every run length of unlabeled blocks,
    labeled blocks between them and a partial block at the end; no labels at all; entropy weights other
    than 1; every point in the ERDA set; the pseudo-label gradient not wanted."""
    labels = block_labels(c, seed=c)
    n = labels.numel()
    s, z, _ = make_inputs(n, c, torch.float32, seed=200 + c)
    grad = torch.randn(n, dtype=torch.float64)
    for lab, kw in ((labels, {}), (None, {}), (labels, dict(entropy_weight=0.3, erda_weight=0.5)),
                    (labels, dict(erda_points="all", entropy_weight=2.0)), (labels, dict(detach_pseudo=True))):
        check_against_reference(s, z, lab, grad, distance="kl", reduction="none", **kw)
    check_against_reference(s, z, labels, distance="kl", reduction="mean")


@pytest.mark.parametrize("c", (20, 68))
def test_rows_layout_edge_values(cap, c):
    """-inf classes, a NaN row and huge logits inside unlabeled blocks."""
    labels = block_labels(c, tail=0, seed=1)
    labels[labels == 3] = 2  # class 3 is at -inf below: no labeled point of it
    n = labels.numel()
    s, z, _ = make_inputs(n, c, torch.float32, seed=21)
    s[:, 3] = -math.inf
    z[:, 3] = -math.inf
    s[9, 10:] = z[9, 10:] = -math.inf  # block 1 (labeled) and block 2 (not)
    s[17, 4:] = z[17, 4:] = -math.inf
    s[40:48] = torch.sign(s[40:48]) * 1e4  # block 5: in a run of four unlabeled blocks
    z[40:48] *= 3e3
    out, gs, gz = run(ops.erda_loss, s, z, labels, torch.ones(n), distance="kl", reduction="none")
    rout, rgs, rgz = reference64(s, z, labels, torch.ones(n), distance="kl", reduction="none")
    assert torch.isfinite(out).all() and torch.isfinite(gs).all() and torch.isfinite(gz).all()
    assert torch.all(gs[:, 3] == 0) and torch.all(gz[:, 3] == 0)
    for name, a, b in (("loss", out, rout), ("grad pseudo_logits", gs, rgs), ("grad logits", gz, rgz)):
        atol = max(1e-6, 1e-6 * b.abs().max().item())  # terms of size 1e4 in block 5
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=atol, msg=lambda m: f"{name}: {m}")
    s[50, 7] = math.nan  # block 6, unlabeled
    out, gs, gz = run(ops.erda_loss, s, z, labels, torch.ones(n), distance="kl", reduction="none")
    assert torch.isnan(out[50]) and torch.isnan(gs[50]).all() and torch.isnan(gz[50]).all()
    others = torch.ones(n, dtype=torch.bool)
    others[50] = False
    assert torch.isfinite(out[others]).all() and torch.isfinite(gs[others]).all()


@pytest.mark.parametrize("with_labels", (False, True), ids=("no labels", "1% labeled"))
def test_rows_layout_streamed_and_loss_only(cap, with_labels):
    """Gradients of 8 MiB and more (streamed), and the loss alone (which takes the lanes layout) on the
    same rows."""
    n = (8 << 20) // (20 * 4) + 13
    s, z, labels = make_inputs(n, 20, torch.float32, seed=22, labeled_frac=0.01, with_labels=with_labels)
    check_against_reference(s, z, labels, distance="kl")
    with torch.no_grad():
        loss = ops.erda_loss(s, z, labels, reduction="none")
    torch.testing.assert_close(loss.double(), reference64(s, z, labels, reduction="none")[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("erda_points", ["unlabeled", "all"])
def test_sum_of_per_point_values_hands_the_forward_gradients_on(erda_points):
    """`erda_loss(..., reduction="none").sum().backward()` (one op call giving the loss and its per-point
    terms) gives exactly the gradients of reduction="sum", with no N x C pass in the backward."""
    g = torch.Generator().manual_seed(3)
    n, c = 300, 20
    s0, z0 = torch.randn(n, c, generator=g), torch.randn(n, c, generator=g)
    labels = torch.full((n,), -1, dtype=torch.long)
    labels[::7] = torch.randint(0, c, (len(labels[::7]),), generator=g)
    grads = {}
    for reduction in ("sum", "none"):
        s, z = s0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
        out = ops.erda_loss(s, z, labels, erda_weight=0.3, ce_weight=2.0, erda_points=erda_points,
                            reduction=reduction)
        total = out.sum() if reduction == "none" else out
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            total.backward()
        if reduction == "none":
            assert not [e.key for e in prof.key_averages() if e.key in ("aten::mul", "aten::mul_")]
        grads[reduction] = (s.grad, z.grad, total.detach())
    assert torch.equal(grads["sum"][0], grads["none"][0]) and torch.equal(grads["sum"][1], grads["none"][1])
    torch.testing.assert_close(grads["none"][2], grads["sum"][2], rtol=1e-6, atol=0)
