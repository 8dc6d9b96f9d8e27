// Plain data shared by every part of the native code: the loss options and the storage types.
// No functions live here, so this header is safe to include from translation units that are
// compiled for different instruction sets.
#pragma once
#include <cstdint>

namespace erda {

enum Distance : int { kKL = 0, kReverseKL = 1, kJS = 2, kMSE = 3 };
enum Reduction : int { kNone = 0, kMean = 1, kSum = 2 };
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

// Per-row statistics the forward saves for the backward, stored structure-of-arrays: stats[k * N + i].
//   0: max of s   1: log sum exp(s - max s)   2: max of z   3: log sum exp(z - max z)
//   4: H(p)       5, 6: distance terms (kl / reverse_kl: D, 0; js: KL(p||m), KL(q||m); mse: sum p(p-q), sum q(p-q))
constexpr int kNumStats = 7;

struct LossConfig {
  int distance = kKL;
  int reduction = kMean;
  float entropy_weight = 1.f;
  float erda_weight = 1.f;
  float ce_weight = 1.f;
  bool erda_all = false;  // the ERDA set: every point (true) or the unlabeled points (false)
};

// Bit-compatible with c10::Half / c10::BFloat16 and CUDA's __half / __nv_bfloat16.
struct half_t { uint16_t x; };
struct bf16_t { uint16_t x; };

}  // namespace erda
