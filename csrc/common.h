// Torch-facing helpers shared by the CPU and CUDA implementations of the ops (defined in ops.cpp).
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string_view>
#include <tuple>

#include "erda_config.h"
#include "kernel_api.h"

namespace erda {

LossConfig make_config(std::string_view distance, double entropy_weight, double erda_weight, double ce_weight,
                       bool erda_all, std::string_view reduction);

// Checks shapes, dtypes and devices; names the offending argument in the error.
void check_inputs(const at::Tensor& s, const at::Tensor& z, const std::optional<at::Tensor>& labels);


// What every device implementation does first: options parsed, inputs checked and viewed with class
// stride 1, outputs allocated (the per-row loss in the compute type; each gradient (N, C), or empty when
// not asked for).
struct Call {
  LossConfig cfg;
  at::Tensor S, Z;
  int64_t N = 0, C = 0;
  at::Tensor rowloss, gs, gz;
};
Call begin_call(const at::Tensor& s, const at::Tensor& z, const std::optional<at::Tensor>& labels,
                std::string_view distance, double entropy_weight, double erda_weight, double ce_weight, bool erda_all,
                std::string_view reduction, bool need_s, bool need_z);

// The kernels' arguments for a call, given the label counts [labeled, in the ERDA set].
RowArgs make_args(const Call& c, const std::optional<at::Tensor>& labels, int64_t ignore_index,
                  const at::Tensor& counts);

// rowloss (N,) in the compute type -> the op's loss in `dtype` for the reduction.
at::Tensor finish_loss(const at::Tensor& rowloss, int reduction, at::ScalarType dtype);

}  // namespace erda
