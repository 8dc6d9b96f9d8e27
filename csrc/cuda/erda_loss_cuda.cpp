// CUDA implementation of the op: checks, label validation and counting with ATen ops on the device,
// then the kernel of erda_loss_kernels.cu on the current stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common.h"

namespace erda {
namespace {

// [labeled points, points in the ERDA set] on the device. One host sync when labels are given, to
// raise a clear error naming a label that is neither a class nor ignore_index.
at::Tensor count_labels(const std::optional<at::Tensor>& labels, int64_t N, int64_t C, int64_t ignore_index,
                        bool erda_all, const at::TensorOptions& opts) {
  const auto lopts = opts.dtype(at::kLong);
  if (!labels.has_value()) return at::tensor({int64_t(0), N}, lopts.device(at::kCPU)).to(opts.device());
  const at::Tensor& l = *labels;
  const at::Tensor labeled = l.ne(ignore_index);
  const at::Tensor bad = labeled.logical_and(l.lt(0).logical_or(l.ge(C)));
  const at::Tensor bad_idx = bad.nonzero();  // syncs
  if (bad_idx.size(0) > 0) {
    const int64_t i = bad_idx[0][0].item<int64_t>();
    TORCH_CHECK_VALUE(false, "erda_loss: labels[", i, "] = ", l[i].item<int64_t>(), " is neither a class in [0, ", C,
                      ") nor ignore_index (", ignore_index, ")");
  }
  const at::Tensor n_lab = labeled.sum().to(at::kLong).reshape({1});
  const at::Tensor n_set = erda_all ? at::full({1}, N, lopts) : (N - n_lab);
  return at::cat({n_lab, n_set});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> erda_loss_cuda(const at::Tensor& s, const at::Tensor& z,
                                                              const std::optional<at::Tensor>& labels,
                                                              c10::string_view distance, double entropy_weight,
                                                              double erda_weight, double ce_weight,
                                                              int64_t ignore_index, bool erda_all,
                                                              c10::string_view reduction, bool need_s, bool need_z) {
  const c10::cuda::CUDAGuard guard(s.device());
  const Call c = begin_call(s, z, labels, std::string_view(distance.data(), distance.size()), entropy_weight,
                            erda_weight, ce_weight, erda_all, std::string_view(reduction.data(), reduction.size()),
                            need_s, need_z);
  const at::Tensor counts = count_labels(labels, c.N, c.C, ignore_index, erda_all, s.options());
  launch_erda_cuda(make_args(c, labels, ignore_index, counts), c10::cuda::getCurrentCUDAStream().stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {finish_loss(c.rowloss, c.cfg.reduction, s.scalar_type()), c.gs, c.gz};
}

}  // namespace
}  // namespace erda

TORCH_LIBRARY_IMPL(erda_sparse, CUDA, m) { m.impl("erda_loss", &erda::erda_loss_cuda); }
