"""Loss throughput: the fused ERDA op against what a user would write themselves.

For each N (points), C (classes), dtype and labels / no labels, times forward + backward of
  fused     erda_sparse.ops.erda_loss
  eager     erda_sparse.ops.reference.erda_loss (plain PyTorch, autograd)
  compile   torch.compile of that reference
on the same inputs (warm-up, then the median of repeated runs; the spread is the interquartile range).
In the same run it measures the device's copy bandwidth on buffers of the same size, and reports for the
fused op the achieved bandwidth and its time over the bandwidth floor: the time to move the bytes that
must move (read both logit tensors and the labels, write both gradients) at that copy bandwidth.
The variants and the copy are timed in interleaved rounds (one call of each per round, the order
rotating), so that on a machine whose speed drifts they all see the same conditions.
Peak extra memory of each variant beyond its inputs: CUDA from torch.cuda.max_memory_allocated, CPU
from PyTorch's allocation records (torch.profiler, profile_memory=True).

    python benchmarks/loss_throughput.py                  # CPU sweep, table on stdout
    python benchmarks/loss_throughput.py --quick          # a few seconds (fused and eager; --compile adds compile)
    python benchmarks/loss_throughput.py --device cuda --large --json cuda.json
"""
import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time
import warnings

import torch

from erda_sparse import ops

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ----------------------------------------------------------------------------------------------------
# machine facts

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device):
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------------
# memory

class QuietStderr:
    """Sends file descriptor 2 to /dev/null inside the block: the profiler's native library prints a
    "profiler_start" / "profiler_stop" line there each time, which would break up the table. Python
    exceptions still show: they are printed after the block."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        return self

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)
        return False


class PeakMemory:
    """Peak bytes allocated inside the block beyond what was live when it started. CUDA: the caching
    allocator's statistics. CPU: PyTorch's allocation records (torch.profiler with profile_memory), each
    op's allocations less its frees, accumulated in time order."""

    def __init__(self, device):
        self.device = device
        self.extra = None

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
            with QuietStderr():
                self.prof.__enter__()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.extra = torch.cuda.max_memory_allocated() - self.base
            return False
        with QuietStderr():
            self.prof.__exit__(*exc)
        events = sorted((e for e in self.prof.events() if e.self_cpu_memory_usage),
                        key=lambda e: e.time_range.start)
        cur = peak = 0
        for e in events:
            cur += e.self_cpu_memory_usage
            peak = max(peak, cur)
        self.extra = peak
        return False


def reuse_freed_memory():
    """Keep large freed blocks in glibc's heap instead of returning them to the OS (the effect of the
    jemalloc / tcmalloc advice in PyTorch's CPU performance guide): without it every large tensor of every
    variant is fresh memory, and first-touch page faults, not the kernels, set the times."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))


# ----------------------------------------------------------------------------------------------------
# timing

def _stats(times):
    times = sorted(times)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_ms": statistics.median(times) * 1e3, "q1_ms": q[0] * 1e3, "q3_ms": q[2] * 1e3,
            "runs": len(times)}


def time_interleaved(fns, device, warmup, repeats, budget_s):
    """Times the functions of `fns` (name -> callable) in rounds of one call each, in an order that
    rotates from round to round. On a machine whose speed drifts (a shared VM), every variant then sees
    the same mix of fast and slow moments, so the ratios of their medians compare like with like. At
    least `repeats` rounds; more, up to 5x, while the rounds take less than budget_s per function."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    sync(device)
    times = {name: [] for name in names}
    start = time.perf_counter()
    r = 0
    while r < repeats or (time.perf_counter() - start < budget_s * len(names) and r < 5 * repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
        r += 1
    return {name: _stats(t) for name, t in times.items()}


def copy_step(numel, dtype, device):
    """A copy of one buffer of `numel` values into another, and the bytes it moves (read + write)."""
    src = torch.randn(numel, device=device).to(dtype)
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), 2 * src.numel() * src.element_size()


def make_inputs(n, c, dtype, device, with_labels, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, generator=g).to(device=device, dtype=dtype).requires_grad_(True)
    z = torch.randn(n, c, generator=g).to(device=device, dtype=dtype).requires_grad_(True)
    labels = None
    if with_labels:  # 1% of the points labeled
        labels = torch.full((n,), -1, dtype=torch.long)
        idx = torch.randperm(n, generator=g)[: max(1, n // 100)]
        labels[idx] = torch.randint(0, c, (idx.numel(),), generator=g)
        labels = labels.to(device)
    return s, z, labels


def step_fn(loss_fn, s, z, labels, distance):
    def step():
        loss = loss_fn(s, z, labels, distance=distance, erda_weight=0.1)
        torch.autograd.grad(loss, (s, z))
    return step


# ----------------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sweep of the fused op and eager, a few seconds (smoke test; torch.compile is left out "
                   "unless --compile: compiling the reference takes 10-40 s the first time)")
    p.add_argument("--compile", action="store_true", help="with --quick: time torch.compile too")
    p.add_argument("--large", action="store_true", help="add N = 4e6 to the sweep")
    p.add_argument("--sizes", type=str, default=None, help="comma-separated N values (default 1e4,1e5,1e6)")
    p.add_argument("--classes", type=str, default="13,20,40")
    p.add_argument("--dtypes", type=str, default=None,
                   help="comma-separated among fp32,fp16,bf16 (default: fp32 on CPU, all three on CUDA)")
    p.add_argument("--all-distances", action="store_true", help="kl, reverse_kl, js and mse (default: kl)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    p.add_argument("--no-eager", action="store_true", help="skip the eager variant")
    p.add_argument("--labels", choices=("both", "with", "without"), default="both")
    p.add_argument("--repeats", type=int, default=7,
                   help="timed rounds at least (one call of each variant and of the copy per round); more, up "
                        "to 5x, while the rounds so far took under 1 s per function timed")
    p.add_argument("--malloc", choices=("reuse", "default"), default="reuse",
                   help="CPU: keep freed large blocks for reuse (default, see reuse_freed_memory) or glibc's default")
    p.add_argument("--json", type=str, default=None, help="write the results to this JSON file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*allocated before the profiling started.*")
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available to torch")
    if device == "cuda" and not ops.cuda_built():
        sys.exit("--device cuda: this build of erda_sparse has no CUDA kernels (rebuild with ERDA_CUDA=1)")
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc_reuse = device == "cpu" and args.malloc == "reuse" and reuse_freed_memory()

    if args.quick:
        sizes, classes, repeats, warmup, budget = [2000, 20000], [20], 3, 1, 0.05
        args.no_compile = args.no_compile or not args.compile
    else:
        sizes = [int(float(x)) for x in args.sizes.split(",")] if args.sizes else [10_000, 100_000, 1_000_000]
        if args.large:
            sizes.append(4_000_000)
        classes, repeats, warmup, budget = [int(c) for c in args.classes.split(",")], args.repeats, 2, 1.0
    dtype_names = args.dtypes.split(",") if args.dtypes else (["fp32"] if device == "cpu" else ["fp32", "fp16", "bf16"])
    for d in dtype_names:
        if d not in DTYPES:
            sys.exit(f"--dtypes: unknown dtype {d!r} (expected fp32, fp16, bf16)")
    distances = list(ops.DISTANCES) if args.all_distances else ["kl"]
    label_modes = {"both": [True, False], "with": [True], "without": [False]}[args.labels]

    header = {
        "device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
        "cpu_vector_path": ops.cpu_capability(), "threads": torch.get_num_threads(),
        "malloc_reuse": malloc_reuse, "command": " ".join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:])),
    }
    print(f"device: {header['device']}  |  torch {header['torch']}  |  CPU vector path of the fused op: "
          f"{header['cpu_vector_path']}" + ("  |  freed memory reused (mallopt)" if malloc_reuse else ""))

    compiled = {}
    rows = []
    cols = f"{'dtype':>5} {'dist':>10} {'lab':>3} {'N':>9} {'C':>3} | {'fused ms':>14} {'eager ms':>14} " \
           f"{'compile ms':>14} | {'x eager':>7} {'x comp':>7} | {'GB/s':>6} {'x floor':>7} | " \
           f"{'mem MB fused/eager/comp':>24}"
    print(cols)
    print("-" * len(cols))
    for dname in dtype_names:
        dtype = DTYPES[dname]
        for c in classes:
            for n in sizes:
                esize = torch.empty((), dtype=dtype).element_size()
                copy, copy_bytes = copy_step(n * c, dtype, device)
                for with_labels in label_modes:
                    for distance in distances:
                        s, z, labels = make_inputs(n, c, dtype, device, with_labels)
                        res = {"dtype": dname, "distance": distance, "labels": with_labels, "N": n, "C": c}
                        variants = [("fused", ops.erda_loss)]
                        if not args.no_eager:
                            variants.append(("eager", ops.reference.erda_loss))
                        if not args.no_compile:
                            key = (dname, distance, with_labels)
                            if key not in compiled:
                                compiled[key] = torch.compile(ops.reference.erda_loss, dynamic=True)
                            variants.append(("compile", compiled[key]))
                        steps = {name: step_fn(fn, s, z, labels, distance) for name, fn in variants}
                        for step in steps.values():
                            step()  # compile / first-touch outside the timed region
                        timed = time_interleaved({**steps, "copy": copy}, device, warmup, repeats, budget)
                        bw = copy_bytes / (timed["copy"]["median_ms"] * 1e-3) / 1e9
                        res["copy_GBps"] = bw
                        for name, step in steps.items():
                            res[name] = timed[name]
                            with PeakMemory(device) as mem:
                                step()
                            res[name]["peak_extra_MB"] = None if mem.extra is None else mem.extra / 2**20
                        floor_bytes = 4 * n * c * esize + (8 * n if with_labels else 0)
                        floor_ms = floor_bytes / (bw * 1e9) * 1e3
                        fused_ms = res["fused"]["median_ms"]
                        res.update(floor_bytes=floor_bytes, floor_ms=floor_ms, fused_GBps=floor_bytes / fused_ms / 1e6,
                                   fused_over_floor=fused_ms / floor_ms)
                        for name in ("eager", "compile"):
                            if name in res:
                                res[f"speedup_vs_{name}"] = res[name]["median_ms"] / fused_ms
                        rows.append(res)
                        print(format_row(res), flush=True)
                        del s, z, labels, steps
                del copy
    print("\nms: median of the runs [interquartile range];  x eager / x comp: speed-up of the fused op;  "
          "GB/s: bytes that must move / fused time;  x floor: fused time / (those bytes at the measured copy "
          "bandwidth);  mem: peak extra memory beyond the inputs.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "results": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return rows


def format_row(r):
    def t(name):
        if name not in r:
            return f"{'-':>14}"
        v = r[name]
        return f"{v['median_ms']:7.2f} [{v['q3_ms'] - v['q1_ms']:4.1f}]".rjust(14)

    def m(name):
        v = r.get(name, {}).get("peak_extra_MB")
        return "-" if v is None else f"{v:.0f}"

    sx = lambda k: f"{r[k]:7.1f}" if k in r else f"{'-':>7}"  # noqa: E731
    return (f"{r['dtype']:>5} {r['distance']:>10} {'yes' if r['labels'] else 'no':>3} {r['N']:>9} {r['C']:>3} | "
            f"{t('fused')} {t('eager')} {t('compile')} | {sx('speedup_vs_eager')} {sx('speedup_vs_compile')} | "
            f"{r['fused_GBps']:6.1f} {r['fused_over_floor']:7.2f} | "
            f"{m('fused') + '/' + m('eager') + '/' + m('compile'):>24}")


if __name__ == "__main__":
    main()
