// CPU implementation of the ops: argument checks, label validation and counting, threads over rows
// (at::parallel_for) and the run-time choice of the instruction-set variant.
#include <ATen/Parallel.h>
#include <torch/library.h>

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

RowsFn forward_fn() {
#ifdef ERDA_HAVE_AVX2_VARIANT
  if (capability() == kAvx2) return &forward_rows_avx2;
#endif
  return &forward_rows_generic;
}
RowsFn backward_fn() {
#ifdef ERDA_HAVE_AVX2_VARIANT
  if (capability() == kAvx2) return &backward_rows_avx2;
#endif
  return &backward_rows_generic;
}

// Validates labels (each in [0, C) or ignore_index) and counts [labeled, in the ERDA set] in one pass.
at::Tensor count_labels(const std::optional<at::Tensor>& labels, int64_t N, int64_t C, int64_t ignore_index,
                        bool erda_all) {
  at::Tensor counts = at::empty({2}, at::TensorOptions().dtype(at::kLong));
  int64_t n_lab = 0;
  if (labels.has_value()) {
    const int64_t* l = labels->data_ptr<int64_t>();
    const int64_t st = labels->stride(0);
    for (int64_t i = 0; i < N; ++i) {
      const int64_t v = l[i * st];
      if (v == ignore_index) continue;
      if (v < 0 || v >= C) {
        TORCH_CHECK_VALUE(false, "erda_loss: labels[", i, "] = ", v, " is neither a class in [0, ", C,
                          ") nor ignore_index (", ignore_index, ")");
      }
      ++n_lab;
    }
  }
  counts[0] = n_lab;
  counts[1] = erda_all ? N : N - n_lab;
  return counts;
}

constexpr int64_t kGrainRows = 1024;

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(const at::Tensor& s, const at::Tensor& z,
                                                           const std::optional<at::Tensor>& labels,
                                                           c10::string_view distance, double entropy_weight,
                                                           double erda_weight, double ce_weight, int64_t ignore_index,
                                                           bool erda_all, c10::string_view reduction) {
  const LossConfig cfg = make_config(std::string_view(distance.data(), distance.size()), entropy_weight, erda_weight,
                                     ce_weight, erda_all, std::string_view(reduction.data(), reduction.size()));
  check_inputs(s, z, labels);
  const at::Tensor S = unit_class_stride(s), Z = unit_class_stride(z);
  const int64_t N = S.size(0);
  at::Tensor counts = count_labels(labels, N, S.size(1), ignore_index, erda_all);
  const auto ct = compute_type(s.scalar_type());
  at::Tensor stats = at::empty({kNumStats, N}, s.options().dtype(ct));
  at::Tensor rowloss = at::empty({N}, s.options().dtype(ct));
  RowArgs a = make_args(S, Z, labels, ignore_index, counts, cfg);
  a.stats = stats.data_ptr();
  a.rowloss = rowloss.data_ptr();
  const RowsFn fn = forward_fn();
  at::parallel_for(0, N, kGrainRows, [&](int64_t b, int64_t e) { fn(a, b, e); });
  return {finish_loss(rowloss, cfg.reduction, s.scalar_type()), stats, counts};
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad, const at::Tensor& s, const at::Tensor& z,
                                                const std::optional<at::Tensor>& labels, const at::Tensor& stats,
                                                const at::Tensor& counts, c10::string_view distance,
                                                double entropy_weight, double erda_weight, double ce_weight,
                                                int64_t ignore_index, bool erda_all, c10::string_view reduction,
                                                bool need_s, bool need_z) {
  const LossConfig cfg = make_config(std::string_view(distance.data(), distance.size()), entropy_weight, erda_weight,
                                     ce_weight, erda_all, std::string_view(reduction.data(), reduction.size()));
  check_inputs(s, z, labels);
  const at::Tensor S = unit_class_stride(s), Z = unit_class_stride(z);
  const int64_t N = S.size(0), C = S.size(1);
  const auto ct = compute_type(s.scalar_type());
  TORCH_CHECK_VALUE(stats.scalar_type() == ct && stats.dim() == 2 && stats.size(0) == kNumStats &&
                        stats.size(1) == N && stats.is_contiguous(),
                    "erda_loss backward: stats must be the forward's (", kNumStats, ", N) output");
  TORCH_CHECK_VALUE(counts.scalar_type() == at::kLong && counts.numel() == 2 && counts.is_contiguous(),
                    "erda_loss backward: counts must be the forward's (2,) int64 output");
  const at::Tensor g = prepare_grad(grad, cfg.reduction, N, ct);
  at::Tensor gs = need_s ? at::empty({N, C}, s.options()) : at::empty({0}, s.options());
  at::Tensor gz = need_z ? at::empty({N, C}, z.options()) : at::empty({0}, z.options());
  RowArgs a = make_args(S, Z, labels, ignore_index, counts, cfg);
  a.stats = const_cast<void*>(stats.data_ptr());
  a.grad = g.data_ptr();
  a.grad_stride = cfg.reduction == kNone ? 1 : 0;
  a.gs = need_s ? gs.data_ptr() : nullptr;
  a.gz = need_z ? gz.data_ptr() : nullptr;
  if (need_s || need_z) {
    const RowsFn fn = backward_fn();
    at::parallel_for(0, N, kGrainRows, [&](int64_t b, int64_t e) { fn(a, b, e); });
  }
  return {gs, gz};
}

}  // namespace

const char* cpu_capability() { return capability() == kAvx2 ? "avx2" : "generic"; }
void set_cpu_capability(const std::string& name) { g_capability.store(parse_capability(name)); }

}  // namespace erda

TORCH_LIBRARY_IMPL(erda_sparse, CPU, m) {
  m.impl("erda_loss_forward", &erda::forward_cpu);
  m.impl("erda_loss_backward", &erda::backward_cpu);
}
