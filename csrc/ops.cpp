// Operator schemas (TORCH_LIBRARY), argument checks shared by the device implementations, and the small
// Python module that carries the library (`erda_sparse._C`).
#include <torch/extension.h>

#include <cstdlib>
#include <string>

#include "common.h"

namespace erda {

LossConfig make_config(std::string_view distance, double entropy_weight, double erda_weight, double ce_weight,
                       bool erda_all, std::string_view reduction) {
  LossConfig c;
  if (distance == "kl") c.distance = kKL;
  else if (distance == "reverse_kl") c.distance = kReverseKL;
  else if (distance == "js") c.distance = kJS;
  else if (distance == "mse") c.distance = kMSE;
  else TORCH_CHECK_VALUE(false, "erda_loss: unknown distance '", std::string(distance),
                         "' (expected 'kl', 'reverse_kl', 'js' or 'mse')");
  if (reduction == "mean") c.reduction = kMean;
  else if (reduction == "sum") c.reduction = kSum;
  else if (reduction == "none") c.reduction = kNone;
  else TORCH_CHECK_VALUE(false, "erda_loss: unknown reduction '", std::string(reduction),
                         "' (expected 'mean', 'sum' or 'none')");
  c.entropy_weight = float(entropy_weight);
  c.erda_weight = float(erda_weight);
  c.ce_weight = float(ce_weight);
  c.erda_all = erda_all;
  return c;
}

void check_inputs(const at::Tensor& s, const at::Tensor& z, const std::optional<at::Tensor>& labels) {
  auto floating = [](const at::Tensor& t) {
    const auto d = t.scalar_type();
    return d == at::kFloat || d == at::kHalf || d == at::kBFloat16 || d == at::kDouble;
  };
  TORCH_CHECK_VALUE(floating(s), "erda_loss: pseudo_logits must be float32, float16, bfloat16 or float64, got ",
                    s.scalar_type());
  TORCH_CHECK_VALUE(floating(z), "erda_loss: logits must be float32, float16, bfloat16 or float64, got ",
                    z.scalar_type());
  TORCH_CHECK_VALUE(s.dim() == 2, "erda_loss: pseudo_logits must be 2-D (N, C), got shape ", s.sizes());
  TORCH_CHECK_VALUE(z.dim() == 2, "erda_loss: logits must be 2-D (N, C), got shape ", z.sizes());
  TORCH_CHECK_VALUE(s.sizes() == z.sizes(), "erda_loss: pseudo_logits and logits must have the same shape, got ",
                    s.sizes(), " and ", z.sizes());
  TORCH_CHECK_VALUE(s.scalar_type() == z.scalar_type(), "erda_loss: pseudo_logits and logits must have the same dtype, got ",
                    s.scalar_type(), " and ", z.scalar_type());
  TORCH_CHECK_VALUE(s.device() == z.device(), "erda_loss: pseudo_logits and logits must be on the same device, got ",
                    s.device(), " and ", z.device());
  TORCH_CHECK_VALUE(s.size(1) >= 1 && s.size(1) <= (int64_t(1) << 30),
                    "erda_loss: the number of classes (logits.shape[1]) must be in [1, 2^30], got ", s.size(1));
  if (labels.has_value()) {
    const auto& l = *labels;
    TORCH_CHECK_VALUE(l.scalar_type() == at::kLong, "erda_loss: labels must be int64, got ", l.scalar_type());
    TORCH_CHECK_VALUE(l.dim() == 1 && l.size(0) == s.size(0), "erda_loss: labels must have shape (N,) = (",
                      s.size(0), ",), got ", l.sizes());
    TORCH_CHECK_VALUE(l.device() == s.device(), "erda_loss: labels must be on the same device as logits, got ",
                      l.device(), " and ", s.device());
  }
}

// The row-major view the kernels need (class stride 1); copies only when the class stride is not 1.
static at::Tensor unit_class_stride(const at::Tensor& x) {
  return (x.size(1) == 1 || x.stride(1) == 1) ? x : x.contiguous();
}

// float64 for float64, else float32
static at::ScalarType compute_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

static int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return kFloat32;
    case at::kHalf: return kFloat16;
    case at::kBFloat16: return kBFloat16;
    default: return kFloat64;
  }
}

Call begin_call(const at::Tensor& s, const at::Tensor& z, const std::optional<at::Tensor>& labels,
                std::string_view distance, double entropy_weight, double erda_weight, double ce_weight, bool erda_all,
                std::string_view reduction, bool need_s, bool need_z) {
  Call c;
  c.cfg = make_config(distance, entropy_weight, erda_weight, ce_weight, erda_all, reduction);
  check_inputs(s, z, labels);
  c.S = unit_class_stride(s);
  c.Z = unit_class_stride(z);
  c.N = s.size(0);
  c.C = s.size(1);
  c.rowloss = at::empty({c.N}, s.options().dtype(compute_type(s.scalar_type())));
  c.gs = need_s ? at::empty({c.N, c.C}, s.options()) : at::empty({0}, s.options());
  c.gz = need_z ? at::empty({c.N, c.C}, z.options()) : at::empty({0}, z.options());
  return c;
}

RowArgs make_args(const Call& c, const std::optional<at::Tensor>& labels, int64_t ignore_index,
                  const at::Tensor& counts) {
  RowArgs a;
  a.s = c.S.data_ptr();
  a.z = c.Z.data_ptr();
  a.s_row_stride = c.S.stride(0);
  a.z_row_stride = c.Z.stride(0);
  if (labels.has_value()) {
    a.labels = labels->data_ptr<int64_t>();
    a.label_stride = labels->stride(0);
  }
  a.ignore_index = ignore_index;
  a.counts = counts.data_ptr<int64_t>();
  a.N = c.N;
  a.C = int(c.C);
  a.dtype = dtype_code(c.S.scalar_type());
  a.cfg = c.cfg;
  a.rowloss = c.rowloss.data_ptr();
  a.gs = c.gs.numel() ? c.gs.data_ptr() : nullptr;
  a.gz = c.gz.numel() ? c.gz.data_ptr() : nullptr;
  return a;
}

at::Tensor finish_loss(const at::Tensor& rowloss, int reduction, at::ScalarType dtype) {
  if (reduction == kNone) return rowloss.to(dtype);
  // summed in float64; converting first is about 3x faster on the CPU than sum(kDouble), whose
  // mixed-type loop is not vectorised (0.19 against 0.54 ms for N = 10^6 on the development machine)
  return rowloss.to(at::kDouble).sum().to(dtype);
}

}  // namespace erda

TORCH_LIBRARY(erda_sparse, m) {
  // The loss (reduced, or per point for reduction "none") and, when asked for, its gradients with respect
  // to pseudo_logits and logits for an upstream gradient of 1 (of sum(loss) for "none"), computed in the
  // same pass; a gradient not asked for comes back as an empty tensor.
  m.def(
      "erda_loss(Tensor pseudo_logits, Tensor logits, Tensor? labels, str distance, float entropy_weight, "
      "float erda_weight, float ce_weight, int ignore_index, bool erda_all, str reduction, bool need_grad_pseudo, "
      "bool need_grad_logits) -> (Tensor loss, Tensor grad_pseudo, Tensor grad_logits)");
}

namespace erda {
const char* cpu_capability();
void set_cpu_capability(const std::string& name);
}  // namespace erda

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "erda_sparse native kernels (the ops live in torch.ops.erda_sparse)";
  m.def("cpu_capability", &erda::cpu_capability, "the CPU kernel variant in use: 'avx2' or 'generic'");
  m.def("set_cpu_capability", &erda::set_cpu_capability,
        "force a CPU kernel variant ('avx2', 'generic'), or '' for the best this CPU supports");
#ifdef ERDA_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
