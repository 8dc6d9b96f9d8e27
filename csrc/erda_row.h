// The row maths of the ERDA loss, shared by the CPU kernels (every instruction set) and the CUDA kernel.
//
// For one point (row) with pseudo-label logits s and segmentation logits z over C classes:
//   p = softmax(s), q = softmax(z)            (in float32, or float64 for float64 inputs)
//   e = entropy_weight * H(p) + D(p, q)       the ERDA term, D one of kl / reverse_kl / js / mse
//   c = -log q[y]                             the supervised term, on labeled points
// and, given the row's statistics, the gradients of a * c + b * e with respect to s and z in closed form.
//
// The code is written once over a "vector policy" V: V::W lanes of V::acc, with loads, stores, exp, log and
// horizontal reductions. ScalarOps (W = 1) serves CUDA and the portable CPU path; csrc/cpu/vec_avx2.h
// serves AVX2. Tail lanes are loaded as -inf, which makes p = q = 0 there, and every term below is guarded
// so that a zero probability contributes exactly zero (x log x -> 0) while a NaN still propagates.
//
// Everything lives in the inline namespace ERDA_ISA, so translation units compiled for different
// instruction sets never share a symbol (the same idea as ATen's CPU_CAPABILITY).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "erda_config.h"

#if defined(__CUDACC__)
#define ERDA_HD __host__ __device__ __forceinline__
#else
#define ERDA_HD inline __attribute__((always_inline))
#endif

#ifndef ERDA_ISA
#define ERDA_ISA generic
#endif

namespace erda {
inline namespace ERDA_ISA {

// ---------------------------------------------------------------------------------------------------
// Storage <-> compute conversions (round to nearest even, NaN kept NaN).

ERDA_HD uint32_t bits_of(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
#endif
}
ERDA_HD float float_of(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, 4);
  return f;
#endif
}

ERDA_HD float widen(float x) { return x; }
ERDA_HD double widen(double x) { return x; }
ERDA_HD float widen(bf16_t h) { return float_of(uint32_t(h.x) << 16); }
ERDA_HD float widen(half_t h) {
  const uint32_t sign = uint32_t(h.x & 0x8000u) << 16;
  const uint32_t exp = (h.x >> 10) & 0x1fu;
  const uint32_t mant = h.x & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    const float v = float(mant) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  if (exp == 31) return float_of(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  return float_of(sign | ((exp + 112u) << 23) | (mant << 13));
}

template <class T> struct Narrow;
template <> struct Narrow<float> {
  template <class A> ERDA_HD static float from(A v) { return float(v); }
};
template <> struct Narrow<double> {
  template <class A> ERDA_HD static double from(A v) { return double(v); }
};
template <> struct Narrow<bf16_t> {
  ERDA_HD static bf16_t from(float v) {
    const uint32_t u = bits_of(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{uint16_t((u >> 16) | 0x40u)};  // quiet NaN
    return bf16_t{uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
  }
};
template <> struct Narrow<half_t> {
  ERDA_HD static half_t from(float v) {
    uint32_t f = bits_of(v);
    const uint16_t sign = uint16_t((f >> 16) & 0x8000u);
    f &= 0x7fffffffu;
    if (f >= 0x7f800000u) return half_t{uint16_t(sign | (f > 0x7f800000u ? 0x7e00u : 0x7c00u))};
    if (f >= 0x477ff000u) return half_t{uint16_t(sign | 0x7c00u)};  // rounds past 65504: inf
    if (f < 0x38800000u) {  // result is subnormal or zero: let the FPU round by adding a magic number
      const uint32_t r = bits_of(float_of(f) + float_of(0x3f000000u)) - 0x3f000000u;
      return half_t{uint16_t(sign | r)};
    }
    const uint32_t odd = (f >> 13) & 1u;
    f += 0xc8000fffu + odd;  // rebias the exponent (15 - 127) and round to nearest even
    return half_t{uint16_t(sign | (f >> 13))};
  }
};

// ---------------------------------------------------------------------------------------------------
// The scalar vector policy (one lane).

ERDA_HD float exp_(float x) { return ::expf(x); }
ERDA_HD double exp_(double x) { return ::exp(x); }
ERDA_HD float log_(float x) { return ::logf(x); }
ERDA_HD double log_(double x) { return ::log(x); }

template <class A>
struct ScalarOps {
  using acc = A;
  using vec = A;
  static constexpr int W = 1;
  template <class T> ERDA_HD static vec load(const T* p) { return A(widen(p[0])); }
  template <class T> ERDA_HD static vec load_part(const T* p, int, A) { return load(p); }
  template <class T> ERDA_HD static void store(T* p, vec v) { p[0] = Narrow<T>::from(v); }
  template <class T> ERDA_HD static void store_part(T* p, vec v, int) { store(p, v); }
  ERDA_HD static vec load_acc(const A* p) { return p[0]; }
  ERDA_HD static void store_acc(A* p, vec v) { p[0] = v; }
  ERDA_HD static vec set(A x) { return x; }
  ERDA_HD static vec exp(vec x) { return exp_(x); }
  ERDA_HD static vec log(vec x) { return log_(x); }
  ERDA_HD static vec max(vec a, vec b) { return b > a ? b : a; }
  ERDA_HD static A hmax(vec a) { return a; }
  ERDA_HD static A hsum(vec a) { return a; }
  // 0 where c == 0, else v (a NaN in c or v stays NaN)
  ERDA_HD static vec zero_if_zero(vec c, vec v) { return c == A(0) ? A(0) : v; }
  // v in lane `lane` (when 0 <= lane < W), 0 elsewhere
  ERDA_HD static vec lane_value(int lane, A v) { return lane == 0 ? v : A(0); }
};

// ---------------------------------------------------------------------------------------------------
// Per-row weights: the supervised weight a and the ERDA weight b, normalised for reduction="mean".

template <class A>
ERDA_HD void loss_scales(const LossConfig& cfg, const int64_t* counts, A& ca, A& cb) {
  if (cfg.reduction == kMean) {
    const int64_t n_lab = counts[0] > 0 ? counts[0] : 1;
    const int64_t n_set = counts[1] > 0 ? counts[1] : 1;
    ca = A(cfg.ce_weight) / A(n_lab);
    cb = A(cfg.erda_weight) / A(n_set);
  } else {
    ca = A(cfg.ce_weight);
    cb = A(cfg.erda_weight);
  }
}

// ---------------------------------------------------------------------------------------------------
// One row, forward and backward. T is the storage type of s and z, DIST a Distance.

template <class V, class T, int DIST>
struct Row {
  using A = typename V::acc;
  using vec = typename V::vec;

  // f(k, n, s[k..k+W), z[k..k+W)) for every chunk of W classes; the last chunk holds n < W valid lanes.
  template <class F>
  ERDA_HD static void chunks(const T* s, const T* z, int C, F&& f) {
    int k = 0;
    for (; k + V::W <= C; k += V::W) f(k, V::W, V::load(s + k), V::load(z + k));
    if (k < C) {
      const A ninf = -A(INFINITY);
      f(k, C - k, V::load_part(s + k, C - k, ninf), V::load_part(z + k, C - k, ninf));
    }
  }

  // Returns the row's loss a * c + b * e (terms of a set the row is not in are left out) and writes the
  // row's statistics st[j * sst], j < kNumStats. `scratch` (2 * round_up(C, W) values, or null) keeps
  // exp(x - max) between passes; without it they are recomputed.
  ERDA_HD static A forward(const T* s, const T* z, int C, int y, bool in_set, A a, A b, A entropy_weight,
                           A* scratch, int cpad, A* st, int64_t sst) {
    vec mxs = V::set(-A(INFINITY)), mxz = V::set(-A(INFINITY));
    chunks(s, z, C, [&](int, int, vec vs, vec vz) {
      mxs = V::max(mxs, vs);
      mxz = V::max(mxz, vz);
    });
    const A ms = V::hmax(mxs), mz = V::hmax(mxz);
    const vec vms = V::set(ms), vmz = V::set(mz);

    vec sum_s = V::set(0), sum_z = V::set(0);
    chunks(s, z, C, [&](int k, int, vec vs, vec vz) {
      const vec ez = V::exp(vz - vmz);
      sum_z = sum_z + ez;
      if (scratch) V::store_acc(scratch + cpad + k, ez);
      if (in_set) {
        const vec es = V::exp(vs - vms);
        sum_s = sum_s + es;
        if (scratch) V::store_acc(scratch + k, es);
      }
    });
    const A Ss = V::hsum(sum_s), Sz = V::hsum(sum_z);
    const A lSz = log_(Sz);
    const A lSs = in_set ? log_(Ss) : A(0);

    A H = 0, r1 = 0, r2 = 0, D = 0;
    if (in_set) {
      const vec vlSs = V::set(lSs), vlSz = V::set(lSz);
      const vec inv_s = V::set(A(1) / Ss), inv_z = V::set(A(1) / Sz);
      vec acc_h = V::set(0), acc1 = V::set(0), acc2 = V::set(0), acc3 = V::set(0);
      chunks(s, z, C, [&](int k, int, vec vs, vec vz) {
        const vec lp = (vs - vms) - vlSs;
        const vec lq = (vz - vmz) - vlSz;
        const vec p = scratch ? V::load_acc(scratch + k) * inv_s : V::exp(lp);
        const vec q = scratch ? V::load_acc(scratch + cpad + k) * inv_z : V::exp(lq);
        acc_h = acc_h + V::zero_if_zero(p, p * lp);
        if (DIST == kKL) {
          acc1 = acc1 + V::zero_if_zero(p, p * (lp - lq));
        } else if (DIST == kReverseKL) {
          acc1 = acc1 + V::zero_if_zero(q, q * (lq - lp));
        } else if (DIST == kJS) {
          const vec lm = V::log(p + q) - V::set(A(0.69314718055994530942));
          acc1 = acc1 + V::zero_if_zero(p, p * (lp - lm));
          acc2 = acc2 + V::zero_if_zero(q, q * (lq - lm));
        } else {  // kMSE
          const vec d = p - q;
          acc1 = acc1 + p * d;
          acc2 = acc2 + q * d;
          acc3 = acc3 + d * d;
        }
      });
      H = -V::hsum(acc_h);
      r1 = V::hsum(acc1);
      if (DIST == kKL || DIST == kReverseKL) {
        D = r1;
      } else if (DIST == kJS) {
        r2 = V::hsum(acc2);
        D = A(0.5) * (r1 + r2);
      } else {
        r2 = V::hsum(acc2);
        D = A(0.5) * V::hsum(acc3);
      }
    }

    A loss = 0;
    if (y >= 0) loss += a * -((A(widen(z[y])) - mz) - lSz);
    if (in_set) loss += b * (entropy_weight * H + D);
    st[0] = ms;
    st[sst] = lSs;
    st[2 * sst] = mz;
    st[3 * sst] = lSz;
    st[4 * sst] = H;
    st[5 * sst] = r1;
    st[6 * sst] = r2;
    return loss;
  }

  // Gradients of ga * c + gb * e (ga, gb already include grad_output and the normalisation), in one pass.
  // gs or gz may be null when that gradient is not wanted. gs/gz may alias s/z (each element is read
  // before it is written).
  ERDA_HD static void backward(const T* s, const T* z, int C, int y, bool in_set, A ga, A gb,
                               A entropy_weight, const A* st, int64_t sst, T* gs, T* gz) {
    const vec vms = V::set(st[0]), vlSs = V::set(st[sst]);
    const vec vmz = V::set(st[2 * sst]), vlSz = V::set(st[3 * sst]);
    const vec vH = V::set(st[4 * sst]), vr1 = V::set(st[5 * sst]), vr2 = V::set(st[6 * sst]);
    const vec vga = V::set(ga), vgb = V::set(gb), vew = V::set(entropy_weight), half = V::set(A(0.5));
    chunks(s, z, C, [&](int k, int n, vec vs, vec vz) {
      const vec lq = (vz - vmz) - vlSz;
      const vec q = V::exp(lq);
      vec g_z = V::set(0), g_s = V::set(0);
      if (y >= 0) g_z = vga * (q - V::lane_value(y - k, A(1)));
      if (in_set) {
        const vec lp = (vs - vms) - vlSs;
        const vec p = V::exp(lp);
        const vec ent = V::zero_if_zero(p, p * (lp + vH));  // -dH/ds
        vec ds, dz;
        if (DIST == kKL) {
          ds = V::zero_if_zero(p, p * ((lp - lq) - vr1));
          dz = q - p;
        } else if (DIST == kReverseKL) {
          ds = p - q;
          dz = V::zero_if_zero(q, q * ((lq - lp) - vr1));
        } else if (DIST == kJS) {
          const vec lm = V::log(p + q) - V::set(A(0.69314718055994530942));
          ds = half * V::zero_if_zero(p, p * ((lp - lm) - vr1));
          dz = half * V::zero_if_zero(q, q * ((lq - lm) - vr2));
        } else {  // kMSE
          const vec d = p - q;
          ds = p * (d - vr1);
          dz = q * (vr2 - d);
        }
        g_s = vgb * (ds - vew * ent);
        g_z = g_z + vgb * dz;
      }
      if (n == V::W) {
        if (gs) V::store(gs + k, g_s);
        if (gz) V::store(gz + k, g_z);
      } else {
        if (gs) V::store_part(gs + k, g_s, n);
        if (gz) V::store_part(gz + k, g_z, n);
      }
    });
  }
};

}  // namespace ERDA_ISA
}  // namespace erda
