// The row maths of the ERDA loss, shared by the CPU kernels (every instruction set) and the CUDA kernel.
//
// For one point (row) with pseudo-label logits s and segmentation logits z over C classes:
//   p = softmax(s), q = softmax(z)            (in float32, or float64 for float64 inputs)
//   e = entropy_weight * H(p) + D(p, q)       the ERDA term, D one of kl / reverse_kl / js / mse
//   c = -log q[y]                             the supervised term, on labeled points
// and, given the row's statistics, the gradients of a * c + b * e with respect to s and z in closed form:
//   H:           dH/ds_k  = -p_k (log p_k + H)
//   kl:          dD/ds_k  =  p_k (log p_k - log q_k - D),          dD/dz_k = q_k - p_k
//   reverse_kl:  dD/ds_k  =  p_k - q_k,                            dD/dz_k = q_k (log q_k - log p_k - D)
//   js:          dD/ds_k  =  p_k (log p_k - log m_k - KL(p||m))/2, dD/dz_k = q_k (log q_k - log m_k - KL(q||m))/2
//   mse:         dD/ds_k  =  p_k (d_k - sum_j p_j d_j),            dD/dz_k = -q_k (d_k - sum_j q_j d_j),  d = p - q
//   c:           dc/dz_k  =  q_k - [k == y]
//
// The code is written once over a vector policy V whose W lanes are W different rows ("SIMD over blocks
// of rows"): every operation is lane-wise and the loops run over the C classes, so there is no
// horizontal reduction and no partial vector whatever C is. The scalar policy (W = 1) is one row: the
// CUDA kernel (one thread per row) and the portable CPU path; csrc/cpu/vec_avx2.h gives 8 rows per vector.
// Rows reach the maths through an accessor `X` that says where class k of the W rows comes from
// (X::s(k), X::z(k)) and where the gradients go (X::put_gs, X::put_gz).
//
// A zero probability contributes exactly zero to every x log x term (also for classes at -inf), while
// a NaN anywhere in a row makes that row's loss and gradients NaN.
//
// Everything lives in the inline namespace ERDA_ISA, so translation units compiled for different
// instruction sets never share a symbol (the same idea as ATen's CPU_CAPABILITY).
#pragma once
#include <float.h>
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
// The scalar vector policy: one lane, one row.

ERDA_HD float exp_(float x) { return ::expf(x); }
ERDA_HD double exp_(double x) { return ::exp(x); }
ERDA_HD float log_(float x) { return ::logf(x); }
ERDA_HD double log_(double x) { return ::log(x); }
ERDA_HD float lowest_(float) { return -FLT_MAX; }
ERDA_HD double lowest_(double) { return -DBL_MAX; }

template <class A>
struct ScalarOps {
  using acc = A;
  using vec = A;
  using mask = bool;
  static constexpr int W = 1;
  ERDA_HD static vec set(A x) { return x; }
  ERDA_HD static vec fma(vec a, vec b, vec c) { return a * b + c; }
  ERDA_HD static vec fms(vec a, vec b, vec c) { return a * b - c; }
  // exp of x <= 0 (always x - max here), in two steps: exp_arg(x) clamps x from below to a finite value
  // whose exp is exactly 0 (a NaN stays NaN), so that exp_arg(x) * exp(x) is 0, never 0 * inf, for
  // x = -inf; exp_of_arg takes such a clamped argument.
  ERDA_HD static vec exp_arg(vec x) { return x < lowest_(x) ? lowest_(x) : x; }
  ERDA_HD static vec exp_of_arg(vec x) { return exp_(x); }
  ERDA_HD static vec exp(vec x) { return exp_(x); }
  ERDA_HD static vec log(vec x) { return log_(x); }
  ERDA_HD static vec max(vec a, vec b) { return b > a ? b : a; }
  ERDA_HD static vec load(const A* p) { return p[0]; }
  ERDA_HD static void store(A* p, vec v) { p[0] = v; }
  // 0 where c == 0, else v (a NaN in c or v stays NaN)
  ERDA_HD static vec zero_if_zero(vec c, vec v) { return c == A(0) ? A(0) : v; }
  ERDA_HD static vec select(mask m, vec a, vec b) { return m ? a : b; }
  ERDA_HD static mask is_class(vec y, int k) { return y == A(k); }
  ERDA_HD static mask nonneg(vec y) { return y >= A(0); }
  ERDA_HD static bool any(mask m) { return m; }
  ERDA_HD static bool all(mask m) { return m; }
};

// ---------------------------------------------------------------------------------------------------
// Per-call weights: the supervised weight and the ERDA weight, normalised for reduction="mean".

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

// What the maths needs to know of the W rows' labels.
template <class V>
struct RowLabels {
  typename V::vec y;          // the class, or -1 for an unlabeled row
  typename V::mask labeled;   // y >= 0
  typename V::mask in_set;    // the row is in the ERDA set
};

// Values per class and row that forward() can keep for gradients() in its scratch: exp(s - max(s)),
// exp(z - max(z)) and, for kl, (1 - ew)(s - max(s)) - (z - max(z)).
constexpr int kScratchPerClass = 3;

// What the forward learns of each row and the gradient pass reuses.
template <class V>
struct RowStats {
  typename V::vec ms, lSs;      // max of s, log sum exp(s - ms) (0 for kl with entropy weight 1: unused)
  typename V::vec mz, lSz;      // the same for z
  typename V::vec inv_s, inv_z; // 1 / sum exp(s - ms), 1 / sum exp(z - mz)
  typename V::vec H, r1, r2;    // H(p); reverse_kl: D, 0; js: KL(p||m), KL(q||m); mse: sum p d, sum q d;
                                // kl: 0, 0, K (see forward_kl)
};

// ---------------------------------------------------------------------------------------------------
// W rows at once: the loss (forward) and, after it, the gradients.

template <class V, int DIST>
struct Rows {
  using A = typename V::acc;
  using vec = typename V::vec;
  using mask = typename V::mask;

  // The rows' maxima over the classes.
  template <class X>
  ERDA_HD static void maxima(const X& x, int C, vec& ms, vec& mz) {
    ms = V::set(-A(INFINITY));
    mz = V::set(-A(INFINITY));
    for (int k = 0; k < C; ++k) {
      ms = V::max(ms, x.s(k));
      mz = V::max(mz, x.z(k));
    }
  }

  // a * c [labeled] + b * e [in set], with c = -log q[y] from z's max and log-sum-exp; e is not read for
  // rows outside the ERDA set (0 there).
  template <class X>
  ERDA_HD static vec row_loss(const X& x, const RowLabels<V>& lab, A a, A b, vec mz, vec lSz, vec e) {
    vec loss = V::set(0);
    if (V::any(lab.labeled)) {
      const vec c = V::set(0) - ((x.z_at(lab.y, lab.labeled) - mz) - lSz);
      loss = V::select(lab.labeled, V::set(a) * c, loss);
    }
    if (V::any(lab.in_set)) loss = loss + V::select(lab.in_set, V::set(b) * e, V::set(0));
    return loss;
  }

  // Returns the rows' loss a * c [labeled] + b * e [in set] and fills `st`. `scratch` (kScratchPerClass *
  // C * W values, or null) keeps exp(x - max) for the later passes (and for gradients()); without it they
  // are recomputed.
  template <class X>
  ERDA_HD static vec forward(const X& x, int C, const RowLabels<V>& lab, A a, A b, A entropy_weight, A* scratch,
                             RowStats<V>& st) {
    if (DIST == kKL) return forward_kl(x, C, lab, a, b, entropy_weight, scratch, st);  // the rest: reverse_kl, js, mse
    vec ms, mz;
    maxima(x, C, ms, mz);
    const bool any_set = V::any(lab.in_set);
    vec sum_s = V::set(0), sum_z = V::set(0);
    for (int k = 0; k < C; ++k) {
      const vec ez = V::exp(x.z(k) - mz);
      sum_z = sum_z + ez;
      if (scratch) V::store(scratch + (C + k) * V::W, ez);
      if (any_set) {
        const vec es = V::exp(x.s(k) - ms);
        sum_s = sum_s + es;
        if (scratch) V::store(scratch + k * V::W, es);
      }
    }
    const vec lSz = V::log(sum_z);
    const vec lSs = any_set ? V::log(sum_s) : V::set(0);
    const vec inv_s = any_set ? V::set(A(1)) / sum_s : V::set(0), inv_z = V::set(A(1)) / sum_z;
    vec H = V::set(0), r1 = V::set(0), r2 = V::set(0), D = V::set(0);
    if (any_set) {
      const vec ln2 = V::set(A(0.69314718055994530942));
      vec acc_h = V::set(0), acc1 = V::set(0), acc2 = V::set(0), acc3 = V::set(0);
      for (int k = 0; k < C; ++k) {
        const vec lp = (x.s(k) - ms) - lSs;
        const vec lq = (x.z(k) - mz) - lSz;
        const vec p = scratch ? V::load(scratch + k * V::W) * inv_s : V::exp(lp);
        const vec q = scratch ? V::load(scratch + (C + k) * V::W) * inv_z : V::exp(lq);
        acc_h = acc_h + V::zero_if_zero(p, p * lp);
        if (DIST == kReverseKL) {
          acc1 = acc1 + V::zero_if_zero(q, q * (lq - lp));
        } else if (DIST == kJS) {
          const vec lm = V::log(p + q) - ln2;
          acc1 = acc1 + V::zero_if_zero(p, p * (lp - lm));
          acc2 = acc2 + V::zero_if_zero(q, q * (lq - lm));
        } else {  // kMSE
          const vec d = p - q;
          acc1 = acc1 + p * d;
          acc2 = acc2 + q * d;
          acc3 = acc3 + d * d;
        }
      }
      H = V::set(0) - acc_h;
      r1 = acc1;
      if (DIST == kReverseKL) {
        D = r1;
      } else if (DIST == kJS) {
        r2 = acc2;
        D = V::set(A(0.5)) * (r1 + r2);
      } else {
        r2 = acc2;
        D = V::set(A(0.5)) * acc3;
      }
    }
    st = RowStats<V>{ms, lSs, mz, lSz, inv_s, inv_z, H, r1, r2};
    return row_loss(x, lab, a, b, mz, lSz, V::set(entropy_weight) * H + D);
  }

  // kl, class k of the rows: es = exp(xs) and t = (1 - ew) xs - (z - max(z)), with xs = s - max(s) clamped
  // by exp_arg (so es = 0 and t finite where s = -inf).
  template <class X>
  ERDA_HD static void kl_terms(const X& x, int k, vec ms, vec mz, vec ew1, vec& es, vec& t) {
    kl_terms_of(x.s(k), x.z(k), ms, mz, ew1, es, t);
  }
  ERDA_HD static void kl_terms_of(vec s, vec z, vec ms, vec mz, vec ew1, vec& es, vec& t) {
    const vec xs = V::exp_arg(s - ms);
    es = V::exp_of_arg(xs);
    t = V::fms(ew1, xs, z - mz);
  }

  // kl, rows in the ERDA set, from the class sums Ss = sum es, Sz = sum ez and acc = sum(es t) (see
  // forward_kl): the row's e, and what the gradient pass needs (lSs is 0 for entropy weight 1: unused).
  struct KlRow {
    vec lSz, inv_z, lSs, inv_s, K, e;
  };
  ERDA_HD static KlRow kl_row(vec sum_s, vec sum_z, vec acc, A entropy_weight, bool any_set) {
    KlRow r;
    r.lSz = V::log(sum_z);
    r.inv_z = V::set(A(1)) / sum_z;
    r.lSs = r.inv_s = r.K = r.e = V::set(0);
    if (any_set) {
      if (entropy_weight != A(1)) r.lSs = V::log(sum_s);  // with weight 1, e = sum p (-log q) has no log p
      r.inv_s = V::set(A(1)) / sum_s;
      r.K = V::set(0) - acc * r.inv_s;
      r.e = (r.lSz - V::set(A(1) - entropy_weight) * r.lSs) - r.K;
    }
    return r;
  }

  // kl, one class of rows in the ERDA set, with bs = b / Ss and bq = b / Sz:
  //   g_s = b p (t + K) (0 where es == 0), g_z = b (q - p)
  ERDA_HD static void kl_set_grads(vec es, vec ez, vec t, vec bs, vec bq, vec K, vec& g_s, vec& g_z) {
    const vec bp = es * bs;
    g_s = V::zero_if_zero(bp, bp * (t + K));
    g_z = V::fms(ez, bq, bp);
  }

  // The same for kl, the default distance, with two passes over the classes instead of three and fewer
  // operations per class. With xs = s - max(s), xz = z - max(z), es = exp(xs), ez = exp(xz), Ss = sum es,
  // log p = xs - lSs, log q = xz - lSz and t = (1 - ew) xs - xz:
  //   e = ew H + D = sum p ((1 - ew) log p - log q) = sum(es t) / Ss - (1 - ew) lSs + lSz
  // Terms with es == 0 count exactly 0 (xs is clamped by exp_arg, t is masked), as in the general form.
  // Leaves K = -sum(es t) / Ss in r2 for gradients_kl, and t in the scratch.
  template <class X>
  ERDA_HD static vec forward_kl(const X& x, int C, const RowLabels<V>& lab, A a, A b, A entropy_weight, A* scratch,
                                RowStats<V>& st) {
    vec ms, mz;
    maxima(x, C, ms, mz);
    const bool any_set = V::any(lab.in_set);
    const vec ew1 = V::set(A(1) - entropy_weight);
    vec sum_s = V::set(0), sum_z = V::set(0), acc = V::set(0);
    // z and s in separate loops: fewer values live at once (no spills with 16 vector registers)
    for (int k = 0; k < C; ++k) {
      const vec ez = V::exp(x.z(k) - mz);
      sum_z = sum_z + ez;
      if (scratch) V::store(scratch + (C + k) * V::W, ez);
    }
    if (any_set) {
      for (int k = 0; k < C; ++k) {
        vec es, t;
        kl_terms(x, k, ms, mz, ew1, es, t);
        sum_s = sum_s + es;
        if (scratch) {
          V::store(scratch + k * V::W, es);
          V::store(scratch + (2 * C + k) * V::W, t);
        }
        acc = V::fma(es, V::zero_if_zero(es, t), acc);
      }
    }
    const KlRow r = kl_row(sum_s, sum_z, acc, entropy_weight, any_set);
    st = RowStats<V>{ms, r.lSs, mz, r.lSz, r.inv_s, r.inv_z, V::set(0), V::set(0), r.K};  // gradients_kl needs only K
    return row_loss(x, lab, a, b, mz, r.lSz, r.e);
  }

  // kl gradients after forward_kl, per class:
  //   g_s = b p ((1 - ew) log p - log q - e) = (b es / Ss) (t + K), 0 where es == 0
  //   g_z = b (q - p) + a (q - [k == y])
  // Blocks whose rows are all in the ERDA set and unlabeled (nearly all of them with few labels) skip
  // the per-row selects.
  template <class X>
  ERDA_HD static void gradients_kl(X& x, int C, const RowLabels<V>& lab, A a, A b, A entropy_weight,
                                   const RowStats<V>& st, const A* scratch, bool want_s, bool want_z) {
    const vec ms = st.ms, mz = st.mz, K = st.r2, zero = V::set(0);
    const vec ew1 = V::set(A(1) - entropy_weight);
    const vec bs = V::set(b) * st.inv_s, bq = V::set(b) * st.inv_z, aq = V::set(a) * st.inv_z, ga = V::set(a);
    const bool any_lab = V::any(lab.labeled), any_set = V::any(lab.in_set);
    const bool plain = any_set && !any_lab && V::all(lab.in_set);
    for (int k = 0; k < C; ++k) {
      const vec ez = scratch ? V::load(scratch + (C + k) * V::W) : V::exp(x.z(k) - mz);
      vec g_s = zero, g_z = zero;
      if (any_set) {
        vec es, t;
        if (scratch) {
          es = V::load(scratch + k * V::W);
          t = V::load(scratch + (2 * C + k) * V::W);
        } else {
          kl_terms(x, k, ms, mz, ew1, es, t);
        }
        kl_set_grads(es, ez, t, bs, bq, K, g_s, g_z);
        if (!plain) {
          g_s = V::select(lab.in_set, g_s, zero);
          g_z = V::select(lab.in_set, g_z, zero);
        }
      }
      if (any_lab) {
        const vec ce = V::fms(ez, aq, V::select(V::is_class(lab.y, k), ga, zero));
        g_z = g_z + V::select(lab.labeled, ce, zero);
      }
      if (want_s) x.put_gs(k, g_s);
      if (want_z) x.put_gz(k, g_z);
    }
  }

  // Gradients of a * c + b * e after forward() on the same rows, in one pass over the classes; p and q
  // come from forward()'s scratch when it had one, else from exp. Writes x.put_gs(k, .) when want_s and
  // x.put_gz(k, .) when want_z.
  template <class X>
  ERDA_HD static void gradients(X& x, int C, const RowLabels<V>& lab, A a, A b, A entropy_weight,
                                const RowStats<V>& st, const A* scratch, bool want_s, bool want_z) {
    if (DIST == kKL) return gradients_kl(x, C, lab, a, b, entropy_weight, st, scratch, want_s, want_z);
    const vec ms = st.ms, lSs = st.lSs, mz = st.mz, lSz = st.lSz, H = st.H, r1 = st.r1, r2 = st.r2;
    const vec ga = V::set(a), gb = V::set(b);
    const vec ew = V::set(entropy_weight), half = V::set(A(0.5)), one = V::set(A(1)), zero = V::set(0);
    const vec ln2 = V::set(A(0.69314718055994530942));
    const bool any_lab = V::any(lab.labeled), any_set = V::any(lab.in_set);
    for (int k = 0; k < C; ++k) {
      const vec vs = x.s(k), vz = x.z(k);
      const vec lq = (vz - mz) - lSz;
      const vec q = scratch ? V::load(scratch + (C + k) * V::W) * st.inv_z : V::exp(lq);
      vec g_z = zero, g_s = zero;
      if (any_lab) g_z = V::select(lab.labeled, ga * (q - V::select(V::is_class(lab.y, k), one, zero)), zero);
      if (any_set) {
        const vec lp = (vs - ms) - lSs;
        const vec p = scratch ? V::load(scratch + k * V::W) * st.inv_s : V::exp(lp);
        const vec ent = V::zero_if_zero(p, p * (lp + H));  // -dH/ds
        vec ds, dz;
        if (DIST == kReverseKL) {
          ds = p - q;
          dz = V::zero_if_zero(q, q * ((lq - lp) - r1));
        } else if (DIST == kJS) {
          const vec lm = V::log(p + q) - ln2;
          ds = half * V::zero_if_zero(p, p * ((lp - lm) - r1));
          dz = half * V::zero_if_zero(q, q * ((lq - lm) - r2));
        } else {  // kMSE
          const vec d = p - q;
          ds = p * (d - r1);
          dz = q * (r2 - d);
        }
        g_s = V::select(lab.in_set, gb * (ds - ew * ent), zero);
        g_z = g_z + V::select(lab.in_set, gb * dz, zero);
      }
      if (want_s) x.put_gs(k, g_s);
      if (want_z) x.put_gz(k, g_z);
    }
  }
};

// ---------------------------------------------------------------------------------------------------
// One row read in place (W = 1): the CUDA kernels and the portable CPU path.

template <class A, class T, class G = T>
struct RowRef {
  const T* sp;
  const T* zp;
  G* gsp = nullptr;
  G* gzp = nullptr;
  ERDA_HD A s(int k) const { return A(widen(sp[k])); }
  ERDA_HD A z(int k) const { return A(widen(zp[k])); }
  ERDA_HD A z_at(A y, bool labeled) const { return labeled ? z(int(y)) : A(0); }
  ERDA_HD void put_gs(int k, A v) { gsp[k] = Narrow<G>::from(v); }
  ERDA_HD void put_gz(int k, A v) { gzp[k] = Narrow<G>::from(v); }
};

}  // namespace ERDA_ISA
}  // namespace erda
