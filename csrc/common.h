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

// The row-major view the kernels need (class stride 1); copies only when the class stride is not 1.
at::Tensor unit_class_stride(const at::Tensor& x);

at::ScalarType compute_type(at::ScalarType t);  // float64 for float64, else float32

RowArgs make_args(const at::Tensor& s, const at::Tensor& z, const std::optional<at::Tensor>& labels,
                  int64_t ignore_index, const at::Tensor& counts, const LossConfig& cfg);

// rowloss (N,) in the compute type -> the op's loss in `dtype` for the reduction.
at::Tensor finish_loss(const at::Tensor& rowloss, int reduction, at::ScalarType dtype);

}  // namespace erda
