// The CPU row loops, instantiated once per instruction set by rows_<isa>.cpp, which defines ERDA_ISA and
// the vector policy `Vec` before including this file. Only C headers and our own are used here, so no
// inline function of the standard library is compiled with the wider instruction set.
#pragma once
#include <stdlib.h>

#include "../erda_row.h"
#include "../kernel_api.h"

namespace erda {
inline namespace ERDA_ISA {

template <class T>
using VecFor = typename VecPolicy<T>::type;

inline void row_label(const RowArgs& a, int64_t i, int& y, bool& in_set) {
  const int64_t lab = a.labels ? a.labels[i * a.label_stride] : a.ignore_index;
  y = lab == a.ignore_index ? -1 : int(lab);
  in_set = a.cfg.erda_all || y < 0;
}

template <class T, int DIST>
void forward_range(const RowArgs& a, int64_t begin, int64_t end) {
  using V = VecFor<T>;
  using A = typename V::acc;
  using R = Row<V, T, DIST>;
  A ca, cb;
  loss_scales(a.cfg, a.counts, ca, cb);
  const int cpad = (a.C + V::W - 1) / V::W * V::W;
  // exp(x - max) kept between passes for rows of up to 512 classes; wider rows recompute it.
  alignas(64) A buf[2 * 512];
  A* scratch = cpad <= 512 ? buf : nullptr;
  const T* S = static_cast<const T*>(a.s);
  const T* Z = static_cast<const T*>(a.z);
  A* stats = static_cast<A*>(a.stats);
  A* rowloss = static_cast<A*>(a.rowloss);
  const A ew = A(a.cfg.entropy_weight);
  for (int64_t i = begin; i < end; ++i) {
    int y;
    bool in_set;
    row_label(a, i, y, in_set);
    rowloss[i] = R::forward(S + i * a.s_row_stride, Z + i * a.z_row_stride, a.C, y, in_set, y >= 0 ? ca : A(0),
                            in_set ? cb : A(0), ew, scratch, cpad, stats + i, a.N);
  }
}

template <class T, int DIST>
void backward_range(const RowArgs& a, int64_t begin, int64_t end) {
  using V = VecFor<T>;
  using A = typename V::acc;
  using R = Row<V, T, DIST>;
  A ca, cb;
  loss_scales(a.cfg, a.counts, ca, cb);
  const T* S = static_cast<const T*>(a.s);
  const T* Z = static_cast<const T*>(a.z);
  const A* stats = static_cast<const A*>(a.stats);
  const A* grad = static_cast<const A*>(a.grad);
  T* GS = static_cast<T*>(a.gs);
  T* GZ = static_cast<T*>(a.gz);
  const A ew = A(a.cfg.entropy_weight);
  for (int64_t i = begin; i < end; ++i) {
    int y;
    bool in_set;
    row_label(a, i, y, in_set);
    const A g = grad[i * a.grad_stride];
    R::backward(S + i * a.s_row_stride, Z + i * a.z_row_stride, a.C, y, in_set, g * ca, g * cb, ew,
                stats + i, a.N, GS ? GS + i * a.C : nullptr, GZ ? GZ + i * a.C : nullptr);
  }
}

template <template <class, int> class F, class T>
RowsFn pick_distance(int distance) {
  switch (distance) {
    case kKL: return &F<T, kKL>::run;
    case kReverseKL: return &F<T, kReverseKL>::run;
    case kJS: return &F<T, kJS>::run;
    default: return &F<T, kMSE>::run;
  }
}

template <class T, int D> struct Fwd { static void run(const RowArgs& a, int64_t b, int64_t e) { forward_range<T, D>(a, b, e); } };
template <class T, int D> struct Bwd { static void run(const RowArgs& a, int64_t b, int64_t e) { backward_range<T, D>(a, b, e); } };

template <template <class, int> class F>
void run_rows(const RowArgs& a, int64_t begin, int64_t end) {
  RowsFn fn;
  switch (a.dtype) {
    case kFloat32: fn = pick_distance<F, float>(a.cfg.distance); break;
    case kFloat16: fn = pick_distance<F, half_t>(a.cfg.distance); break;
    case kBFloat16: fn = pick_distance<F, bf16_t>(a.cfg.distance); break;
    default: fn = pick_distance<F, double>(a.cfg.distance); break;
  }
  fn(a, begin, end);
}

}  // namespace ERDA_ISA
}  // namespace erda
