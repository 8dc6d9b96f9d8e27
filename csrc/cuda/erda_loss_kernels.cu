// CUDA kernels of the ERDA loss, for small C and huge N.
//
// A block of R threads owns R consecutive rows. It stages the rows of s and z in shared memory with
// coalesced loads (fp16/bf16 widened to fp32 on the way), each thread then runs the shared row maths
// (erda_row.h, one lane) on its own row: the loss, then the gradients in place, which go back out
// through shared memory with coalesced stores. The shared-memory row stride is odd, so the per-thread row walks are free of bank
// conflicts. Rows too wide for the tile (C > 191) use a direct kernel, one thread per row.
//
// No torch types here: the launchers take raw pointers (kernel_api.h), so this file also compiles on
// its own with nvcc (CMake compile check for sm_80 and sm_90).
#define ERDA_ISA cuda
#include <cuda_runtime.h>

#include <type_traits>

#include "../erda_row.h"
#include "../kernel_api.h"

namespace erda {
inline namespace ERDA_ISA {
namespace {

constexpr int kSmemBytes = 48 * 1024;
constexpr int kMaxRowsPerBlock = 128;
constexpr int kMinRowsPerBlock = 32;

struct Tile {
  int rows;  // rows per block (threads per block)
  int ld;    // shared-memory row stride (odd), 0 for the direct kernel
};

inline Tile tile_for(int C) {
  const int ld = C | 1;
  int rows = kSmemBytes / (2 * ld * int(sizeof(float)));
  rows = rows >= kMaxRowsPerBlock ? kMaxRowsPerBlock : rows / 32 * 32;
  if (rows < kMinRowsPerBlock) return Tile{kMaxRowsPerBlock, 0};
  return Tile{rows, ld};
}

__device__ __forceinline__ int64_t row_label(const RowArgs& a, int64_t i) {
  const int64_t lab = a.labels ? a.labels[i * a.label_stride] : a.ignore_index;
  return lab == a.ignore_index ? -1 : lab;
}

template <class T>
__device__ __forceinline__ void load_tile(const T* __restrict__ src, int64_t row_stride, int64_t row0, int rows,
                                          int C, int ld, float* dst) {
  const int n = rows * C;
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    const int r = e / C, c = e - r * C;
    dst[r * ld + c] = widen(src[(row0 + r) * row_stride + c]);
  }
}

template <class T>
__device__ __forceinline__ void store_tile(const float* src, int64_t row0, int rows, int C, int ld, T* __restrict__ dst) {
  const int n = rows * C;
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    const int r = e / C, c = e - r * C;
    dst[(row0 + r) * C + c] = Narrow<T>::from(src[r * ld + c]);
  }
}

template <class T, int DIST>
__global__ void erda_tiled(RowArgs a, int ld) {
  extern __shared__ float smem[];
  const int R = blockDim.x;
  float* ts = smem;
  float* tz = smem + R * ld;
  const int64_t row0 = int64_t(blockIdx.x) * R;
  const int rows = int(a.N - row0 < R ? a.N - row0 : R);
  load_tile(static_cast<const T*>(a.s), a.s_row_stride, row0, rows, a.C, ld, ts);
  load_tile(static_cast<const T*>(a.z), a.z_row_stride, row0, rows, a.C, ld, tz);
  __syncthreads();
  const int r = threadIdx.x;
  if (r < rows) {
    using V = ScalarOps<float>;
    const int64_t i = row0 + r;
    float ca, cb;
    loss_scales(a.cfg, a.counts, ca, cb);
    const int64_t y = row_label(a, i);
    const RowLabels<V> lab{float(y), y >= 0, a.cfg.erda_all || y < 0};
    // the gradients overwrite the staged rows in place (class k is read before it is written)
    RowRef<float, float> x{ts + r * ld, tz + r * ld, ts + r * ld, tz + r * ld};
    RowStats<V> st;
    static_cast<float*>(a.rowloss)[i] = Rows<V, DIST>::forward(x, a.C, lab, ca, cb, a.cfg.entropy_weight, nullptr, st);
    if (a.gs || a.gz)
      Rows<V, DIST>::gradients(x, a.C, lab, ca, cb, a.cfg.entropy_weight, st, nullptr, a.gs != nullptr, a.gz != nullptr);
  }
  __syncthreads();
  if (a.gs) store_tile(ts, row0, rows, a.C, ld, static_cast<T*>(a.gs));
  if (a.gz) store_tile(tz, row0, rows, a.C, ld, static_cast<T*>(a.gz));
}

template <class T, class A, int DIST>
__global__ void erda_direct(RowArgs a) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.N) return;
  using V = ScalarOps<A>;
  A ca, cb;
  loss_scales(a.cfg, a.counts, ca, cb);
  const int64_t y = row_label(a, i);
  const RowLabels<V> lab{A(y), y >= 0, a.cfg.erda_all || y < 0};
  T* GS = static_cast<T*>(a.gs);
  T* GZ = static_cast<T*>(a.gz);
  RowRef<A, T> x{static_cast<const T*>(a.s) + i * a.s_row_stride, static_cast<const T*>(a.z) + i * a.z_row_stride,
                 GS ? GS + i * a.C : nullptr, GZ ? GZ + i * a.C : nullptr};
  RowStats<V> st;
  static_cast<A*>(a.rowloss)[i] = Rows<V, DIST>::forward(x, a.C, lab, ca, cb, A(a.cfg.entropy_weight), nullptr, st);
  if (GS || GZ) Rows<V, DIST>::gradients(x, a.C, lab, ca, cb, A(a.cfg.entropy_weight), st, nullptr, GS != nullptr, GZ != nullptr);
}

template <class T, int DIST>
void launch(const RowArgs& a, cudaStream_t stream) {
  if (a.N == 0) return;
  // float64 always takes the direct kernel (it is there for gradcheck, not for speed)
  const Tile t = sizeof(T) == 8 ? Tile{kMaxRowsPerBlock, 0} : tile_for(a.C);
  const unsigned blocks = unsigned((a.N + t.rows - 1) / t.rows);
  if (t.ld > 0) {
    const size_t smem = size_t(2) * t.rows * t.ld * sizeof(float);
    erda_tiled<T, DIST><<<blocks, t.rows, smem, stream>>>(a, t.ld);
  } else {
    using A = typename std::conditional<sizeof(T) == 8, double, float>::type;
    erda_direct<T, A, DIST><<<blocks, t.rows, 0, stream>>>(a);
  }
}

template <class T>
void launch_distance(const RowArgs& a, cudaStream_t stream) {
  switch (a.cfg.distance) {
    case kKL: launch<T, kKL>(a, stream); break;
    case kReverseKL: launch<T, kReverseKL>(a, stream); break;
    case kJS: launch<T, kJS>(a, stream); break;
    default: launch<T, kMSE>(a, stream); break;
  }
}

void launch_any(const RowArgs& a, cudaStream_t stream) {
  switch (a.dtype) {
    case kFloat32: launch_distance<float>(a, stream); break;
    case kFloat16: launch_distance<half_t>(a, stream); break;
    case kBFloat16: launch_distance<bf16_t>(a, stream); break;
    default: launch_distance<double>(a, stream); break;
  }
}

}  // namespace
}  // namespace ERDA_ISA

void launch_erda_cuda(const RowArgs& a, void* stream) { launch_any(a, static_cast<cudaStream_t>(stream)); }

}  // namespace erda
