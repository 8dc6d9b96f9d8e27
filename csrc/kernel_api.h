// The raw-pointer interface between the torch-facing code and the kernels (CPU instruction-set variants
// and CUDA). Plain data only.
#pragma once
#include <stdint.h>

#include "erda_config.h"

namespace erda {

struct RowArgs {
  // inputs: (N, C) rows with unit class stride
  const void* s = nullptr;
  const void* z = nullptr;
  int64_t s_row_stride = 0, z_row_stride = 0;
  const int64_t* labels = nullptr;  // (N,) or null: every point unlabeled
  int64_t label_stride = 1;
  int64_t ignore_index = -1;
  const int64_t* counts = nullptr;  // [labeled points, points in the ERDA set]
  int64_t N = 0;
  int C = 0;
  int dtype = kFloat32;  // storage type of s, z and the gradients
  LossConfig cfg;
  // outputs: the per-row loss in the compute type (float64 for float64 inputs, else float32), and the
  // gradients of the reduced loss (of sum(loss) for reduction "none") in the storage type, (N, C)
  // contiguous, each null when not wanted
  void* rowloss = nullptr;
  void* gs = nullptr;
  void* gz = nullptr;
  // CPU: write the gradients with streaming (non-temporal) stores; worth it only for outputs larger than
  // the caches, which nothing reads back soon enough to find them there
  bool stream_grads = false;
};

using RowsFn = void (*)(const RowArgs&, int64_t begin, int64_t end);

// CPU variants, one per instruction set (csrc/cpu/rows_<isa>.cpp): loss and gradients of rows [begin, end).
void erda_rows_generic(const RowArgs&, int64_t begin, int64_t end);
#if defined(__x86_64__) || defined(_M_X64)
#define ERDA_HAVE_AVX2_VARIANT 1
void erda_rows_avx2(const RowArgs&, int64_t begin, int64_t end);
// The AVX2 variant's exp, y[i] = exp(x[i]) for x[i] <= 0, exposed for its accuracy test.
void erda_exp_avx2(const float* x, float* y, int64_t n);
#endif

// CUDA launcher (csrc/cuda/erda_loss_kernels.cu); `stream` is a cudaStream_t.
void launch_erda_cuda(const RowArgs&, void* stream);

}  // namespace erda
