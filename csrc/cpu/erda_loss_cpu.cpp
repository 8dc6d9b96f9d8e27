// CPU implementation of the op: argument checks, label validation and counting, threads over rows
// (at::parallel_for, chunks handed out dynamically) and the run-time choice of the instruction-set variant.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include "../common.h"

namespace erda {
namespace {

enum Capability : int { kUnset = -1, kGeneric = 0, kAvx2 = 1 };
std::atomic<int> g_capability{kUnset};

bool cpu_has_avx2() {
#if defined(ERDA_HAVE_AVX2_VARIANT) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

int parse_capability(const std::string& name) {
  if (name.empty()) return cpu_has_avx2() ? kAvx2 : kGeneric;
  if (name == "generic") return kGeneric;
  if (name == "avx2") {
    TORCH_CHECK_VALUE(cpu_has_avx2(), "erda_sparse: CPU capability 'avx2' requested but this CPU (or build) lacks "
                      "AVX2/FMA/F16C");
    return kAvx2;
  }
  TORCH_CHECK_VALUE(false, "erda_sparse: unknown CPU capability '", name, "' (expected 'avx2' or 'generic')");
}

int capability() {
  int c = g_capability.load(std::memory_order_relaxed);
  if (c == kUnset) {
    const char* env = std::getenv("ERDA_CPU_CAPABILITY");
    c = parse_capability(env ? std::string(env) : std::string());
    g_capability.store(c, std::memory_order_relaxed);
  }
  return c;
}

RowsFn rows_fn() {
#ifdef ERDA_HAVE_AVX2_VARIANT
  if (capability() == kAvx2) return &erda_rows_avx2;
#endif
  return &erda_rows_generic;
}

// A label that is neither ignore_index nor a class in [0, C) (no branch: & rather than &&).
inline bool bad_label(int64_t v, int64_t C, int64_t ignore_index) {
  return (v != ignore_index) & (uint64_t(v) >= uint64_t(C));
}

// Labels in [b, e) that are not ignore_index, and whether one of them is bad: no branch per label and no
// early exit, the common case being all good (inlined with stride 1 for contiguous labels).
inline int64_t count_range(const int64_t* l, int64_t st, int64_t b, int64_t e, int64_t C, int64_t ignore_index,
                           bool& any_bad) {
  int64_t n = 0;
  bool bad = false;
  for (int64_t i = b; i < e; ++i) {
    const int64_t v = l[i * st];
    n += int64_t(v != ignore_index);
    bad |= bad_label(v, C, ignore_index);
  }
  any_bad = bad;
  return n;
}

// Validates labels (each in [0, C) or ignore_index) and counts [labeled, in the ERDA set]: one pass on
// all threads, and a second, serial one only to name the first bad label.
at::Tensor count_labels(const std::optional<at::Tensor>& labels, int64_t N, int64_t C, int64_t ignore_index,
                        bool erda_all) {
  at::Tensor counts = at::empty({2}, at::TensorOptions().dtype(at::kLong));
  int64_t n_lab = 0;
  if (labels.has_value()) {
    const int64_t* l = labels->data_ptr<int64_t>();
    const int64_t st = labels->stride(0);
    std::atomic<int64_t> total{0};
    std::atomic<bool> bad{false};
    at::parallel_for(0, N, int64_t(1) << 16, [&](int64_t b, int64_t e) {
      bool any_bad;
      total += st == 1 ? count_range(l, 1, b, e, C, ignore_index, any_bad)
                       : count_range(l, st, b, e, C, ignore_index, any_bad);
      if (any_bad) bad = true;
    });
    if (bad) {
      for (int64_t i = 0; i < N; ++i) {
        const int64_t v = l[i * st];
        if (bad_label(v, C, ignore_index)) {
          TORCH_CHECK_VALUE(false, "erda_loss: labels[", i, "] = ", v, " is neither a class in [0, ", C,
                            ") nor ignore_index (", ignore_index, ")");
        }
      }
    }
    n_lab = total.load();
  }
  counts[0] = n_lab;
  counts[1] = erda_all ? N : N - n_lab;
  return counts;
}

// Rows go to threads in chunks of kChunkBlocks blocks of 8 rows, taken from a shared counter: a thread
// that is slowed down (a busy core, a stolen vCPU) takes fewer chunks instead of holding the others up,
// as a static split would. Ranges start on a block boundary (aligned streaming stores).
constexpr int64_t kChunkBlocks = 64;
constexpr int64_t kStreamBytes = int64_t(8) << 20;  // gradients this large are written past the caches

void run_rows_dynamic(RowsFn fn, const RowArgs& a) {
  const int64_t nblocks = (a.N + 7) / 8;
  const int64_t nchunks = (nblocks + kChunkBlocks - 1) / kChunkBlocks;
  const int64_t nthreads = std::min<int64_t>(at::get_num_threads(), nchunks);
  auto rows_of_chunk = [&](int64_t c, int64_t& b, int64_t& e) {
    b = c * kChunkBlocks * 8;
    e = std::min(a.N, b + kChunkBlocks * 8);
  };
  if (nthreads <= 1 || at::in_parallel_region()) {
    if (a.N > 0) fn(a, 0, a.N);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, nthreads, 1, [&](int64_t, int64_t) {
    for (int64_t c = next.fetch_add(1); c < nchunks; c = next.fetch_add(1)) {
      int64_t b, e;
      rows_of_chunk(c, b, e);
      fn(a, b, e);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> erda_loss_cpu(const at::Tensor& s, const at::Tensor& z,
                                                             const std::optional<at::Tensor>& labels,
                                                             c10::string_view distance, double entropy_weight,
                                                             double erda_weight, double ce_weight,
                                                             int64_t ignore_index, bool erda_all,
                                                             c10::string_view reduction, bool need_s, bool need_z) {
  const Call c = begin_call(s, z, labels, std::string_view(distance.data(), distance.size()), entropy_weight,
                            erda_weight, ce_weight, erda_all, std::string_view(reduction.data(), reduction.size()),
                            need_s, need_z);
  const at::Tensor counts = count_labels(labels, c.N, c.C, ignore_index, erda_all);
  RowArgs a = make_args(c, labels, ignore_index, counts);
  a.stream_grads = c.N * c.C * int64_t(s.element_size()) >= kStreamBytes;
  run_rows_dynamic(rows_fn(), a);
  return {finish_loss(c.rowloss, c.cfg.reduction, s.scalar_type()), c.gs, c.gz};
}

}  // namespace

const char* cpu_capability() { return capability() == kAvx2 ? "avx2" : "generic"; }
void set_cpu_capability(const std::string& name) { g_capability.store(parse_capability(name)); }

}  // namespace erda

TORCH_LIBRARY_IMPL(erda_sparse, CPU, m) { m.impl("erda_loss", &erda::erda_loss_cpu); }
