// Plain data shared by every part of the native code: the loss options and the storage types.
// No functions live here, so this header is safe to include from translation units that are
// compiled for different instruction sets.
#pragma once
#include <cstdint>

namespace erda {

enum Distance : int { kKL = 0, kReverseKL = 1, kJS = 2, kMSE = 3 };
enum Reduction : int { kNone = 0, kMean = 1, kSum = 2 };
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

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
