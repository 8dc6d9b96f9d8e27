// The portable CPU row loop (one row at a time through the scalar policy: loss, then gradients), instantiated by every
// instruction-set translation unit, which defines ERDA_ISA before including this file. Only C headers
// and our own are used here, so no inline function of the standard library is compiled with a wider
// instruction set.
#pragma once
#include <stdlib.h>

#include "../erda_row.h"
#include "../kernel_api.h"

namespace erda {
inline namespace ERDA_ISA {

template <class T> struct Compute { using type = float; };
template <> struct Compute<double> { using type = double; };

inline int64_t row_label(const RowArgs& a, int64_t i) {
  const int64_t lab = a.labels ? a.labels[i * a.label_stride] : a.ignore_index;
  return lab == a.ignore_index ? -1 : lab;
}

template <class A>
struct Scratch {  // 64-byte aligned, freed on scope exit
  A* p = nullptr;
  explicit Scratch(size_t n) {
    if (posix_memalign(reinterpret_cast<void**>(&p), 64, n * sizeof(A) + 64) != 0) p = nullptr;
  }
  ~Scratch() { free(p); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

template <class T, int DIST>
void erda_range_scalar(const RowArgs& a, int64_t begin, int64_t end) {
  using A = typename Compute<T>::type;
  using V = ScalarOps<A>;
  A ca, cb;
  loss_scales(a.cfg, a.counts, ca, cb);
  Scratch<A> scratch(size_t(kScratchPerClass) * a.C);  // null on failure: the maths then recomputes exp
  const T* S = static_cast<const T*>(a.s);
  const T* Z = static_cast<const T*>(a.z);
  A* rowloss = static_cast<A*>(a.rowloss);
  T* GS = static_cast<T*>(a.gs);
  T* GZ = static_cast<T*>(a.gz);
  const A ew = A(a.cfg.entropy_weight);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t y = row_label(a, i);
    const RowLabels<V> lab{A(y), y >= 0, a.cfg.erda_all || y < 0};
    RowRef<A, T> x{S + i * a.s_row_stride, Z + i * a.z_row_stride, GS ? GS + i * a.C : nullptr,
                   GZ ? GZ + i * a.C : nullptr};
    RowStats<V> st;
    rowloss[i] = Rows<V, DIST>::forward(x, a.C, lab, ca, cb, ew, scratch.p, st);
    if (GS || GZ) Rows<V, DIST>::gradients(x, a.C, lab, ca, cb, ew, st, scratch.p, GS != nullptr, GZ != nullptr);
  }
}

template <class T, int D> struct ErdaScalar { static void run(const RowArgs& a, int64_t b, int64_t e) { erda_range_scalar<T, D>(a, b, e); } };

template <template <class, int> class F, class T>
RowsFn pick_distance(int distance) {
  switch (distance) {
    case kKL: return &F<T, kKL>::run;
    case kReverseKL: return &F<T, kReverseKL>::run;
    case kJS: return &F<T, kJS>::run;
    default: return &F<T, kMSE>::run;
  }
}

// F: the row loop for float32 / float16 / bfloat16 storage, F64 for float64 (class templates F<T, DIST>::run).
template <template <class, int> class F, template <class, int> class F64>
void run_rows(const RowArgs& a, int64_t begin, int64_t end) {
  RowsFn fn;
  switch (a.dtype) {
    case kFloat32: fn = pick_distance<F, float>(a.cfg.distance); break;
    case kFloat16: fn = pick_distance<F, half_t>(a.cfg.distance); break;
    case kBFloat16: fn = pick_distance<F, bf16_t>(a.cfg.distance); break;
    default: fn = pick_distance<F64, double>(a.cfg.distance); break;
  }
  fn(a, begin, end);
}

}  // namespace ERDA_ISA
}  // namespace erda
