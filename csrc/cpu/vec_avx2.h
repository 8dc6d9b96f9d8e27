// The AVX2 (+FMA, F16C) vector policy for erda_row.h: 8 float lanes, one row each. Included only by
// rows_avx2.cpp, which is compiled for AVX2 and selected at run time when the CPU has it.
#pragma once
#include <immintrin.h>

#include "../erda_row.h"

namespace erda {
inline namespace ERDA_ISA {

struct F8 {
  __m256 v;
};
struct M8 {
  __m256 m;
};
inline F8 operator+(F8 a, F8 b) { return {_mm256_add_ps(a.v, b.v)}; }
inline F8 operator-(F8 a, F8 b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline F8 operator*(F8 a, F8 b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline F8 operator/(F8 a, F8 b) { return {_mm256_div_ps(a.v, b.v)}; }

struct Avx2Ops {
  using acc = float;
  using vec = F8;
  using mask = M8;
  static constexpr int W = 8;

  static F8 set(float x) { return {_mm256_set1_ps(x)}; }
  static F8 load(const float* p) { return {_mm256_load_ps(p)}; }  // 32-byte aligned scratch
  static void store(float* p, F8 v) { _mm256_store_ps(p, v.v); }
  // NaN in b propagates (maxps returns its second operand when either is NaN)
  static F8 max(F8 a, F8 b) { return {_mm256_max_ps(a.v, b.v)}; }
  static F8 zero_if_zero(F8 c, F8 v) {
    return {_mm256_andnot_ps(_mm256_cmp_ps(c.v, _mm256_setzero_ps(), _CMP_EQ_OQ), v.v)};
  }
  static F8 select(M8 m, F8 a, F8 b) { return {_mm256_blendv_ps(b.v, a.v, m.m)}; }
  static M8 is_class(F8 y, int k) { return {_mm256_cmp_ps(y.v, _mm256_set1_ps(float(k)), _CMP_EQ_OQ)}; }
  static M8 nonneg(F8 y) { return {_mm256_cmp_ps(y.v, _mm256_setzero_ps(), _CMP_GE_OQ)}; }
  static bool any(M8 m) { return _mm256_movemask_ps(m.m) != 0; }

  static F8 fma(F8 a, F8 b, F8 c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  static F8 fms(F8 a, F8 b, F8 c) { return {_mm256_fmsub_ps(a.v, b.v, c.v)}; }
  static bool all(M8 m) { return _mm256_movemask_ps(m.m) == 0xff; }

  // exp of x <= 0 (the kernels only take exp of x - max). exp_arg clamps x to >= -88, where the result
  // is exactly 0 (so exp(-inf) = 0 and exp_arg(x) * exp(x) = 0 there); maxps returns its second operand
  // when either is NaN, so a NaN stays NaN. Results are 0 below about -87.68 and subnormal (less
  // accurate) between that and -87.34.
  static F8 exp_arg(F8 x) { return {_mm256_max_ps(_mm256_set1_ps(-88.0f), x.v)}; }
  // exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 in two Cody-Waite steps, exp(r) on
  // [-ln2/2, ln2/2] by a degree-5 polynomial fitted for least maximum relative error: about 2 ulp
  // (1.6e-7 relative) where the result is a normal float (csrc/tests/test_row.cpp checks it). Adding
  // 1.5 * 2^23 + 127 rounds x / ln 2 to an integer and leaves n + 127 in the low mantissa bits, which
  // shift into 2^n's exponent.
  static F8 exp_of_arg(F8 xv) {
    const __m256 x = xv.v;
    const __m256 magic = _mm256_set1_ps(12583039.0f);  // 1.5 * 2^23 + 127
    const __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), magic);
    const __m256 n = _mm256_sub_ps(fx, magic);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(8.2903150469e-3f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1897930205e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6667635739e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.9999150634e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(9.9999970198e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.0f));
    const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(fx), 23));
    return {_mm256_mul_ps(y, scale)};
  }
  static F8 exp(F8 x) { return exp_of_arg(exp_arg(x)); }

  // log (Cephes logf), about 1 ulp on normal numbers; log(0) = -inf, log(x < 0) = NaN, log(inf) = inf,
  // NaN stays NaN; subnormal inputs are treated as the smallest normal number.
  static F8 log(F8 xv) {
    const __m256 xin = xv.v;
    __m256 x = _mm256_max_ps(xin, _mm256_castsi256_ps(_mm256_set1_epi32(0x00800000)));
    const __m256i e_i = _mm256_srli_epi32(_mm256_castps_si256(x), 23);
    x = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(~0x7f800000)));
    x = _mm256_or_ps(x, _mm256_set1_ps(0.5f));
    __m256 e = _mm256_add_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(e_i, _mm256_set1_epi32(127))), _mm256_set1_ps(1.0f));
    const __m256 small = _mm256_cmp_ps(x, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
    const __m256 tmp = _mm256_and_ps(x, small);
    x = _mm256_sub_ps(x, _mm256_set1_ps(1.0f));
    e = _mm256_sub_ps(e, _mm256_and_ps(_mm256_set1_ps(1.0f), small));
    x = _mm256_add_ps(x, tmp);
    const __m256 z = _mm256_mul_ps(x, x);
    __m256 y = _mm256_set1_ps(7.0376836292e-2f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-1.1514610310e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.1676998740e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-1.2420140846e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.4249322787e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-1.6668057665e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(2.0000714765e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-2.4999993993e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(3.3333331174e-1f));
    y = _mm256_mul_ps(_mm256_mul_ps(y, x), z);
    y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
    y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
    x = _mm256_add_ps(x, y);
    x = _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_blendv_ps(x, _mm256_set1_ps(-INFINITY), _mm256_cmp_ps(xin, _mm256_setzero_ps(), _CMP_EQ_OQ));
    x = _mm256_blendv_ps(x, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(xin, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ));
    x = _mm256_blendv_ps(x, _mm256_set1_ps(NAN), _mm256_cmp_ps(xin, _mm256_setzero_ps(), _CMP_LT_OQ));
    x = _mm256_blendv_ps(x, xin, _mm256_cmp_ps(xin, xin, _CMP_UNORD_Q));
    return {x};
  }
};

// ---------------------------------------------------------------------------------------------------
// Moving 8 rows between their (N, C) layout and the lanes layout of a block scratch [k * 8 + row].

inline __m256i lanes_below(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const half_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline __m256 load8(const bf16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
inline __m256 load_part(const float* p, int n, float fill) {
  const __m256i m = lanes_below(n);
  return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
template <class T>
inline __m256 load_part(const T* p, int n, float fill) {
  T tmp[8];
  const T f = Narrow<T>::from(fill);
  for (int i = 0; i < 8; ++i) tmp[i] = i < n ? p[i] : f;
  return load8(tmp);
}

inline void store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
inline void store8(half_t* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
inline void store8(bf16_t* p, __m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  const __m256i qnan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  r = _mm256_blendv_epi8(r, qnan, nan);
  const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}
// The first n (<= 8) lanes, without vmaskmovps, whose stores are slow on AMD CPUs.
inline void store_part(float* p, __m256 v, int n) {
  if (n == 8) return _mm256_storeu_ps(p, v);
  __m128 h = _mm256_castps256_ps128(v);
  if (n >= 4) {
    _mm_storeu_ps(p, h);
    h = _mm256_extractf128_ps(v, 1);
    p += 4;
    n -= 4;
  }
  if (n >= 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(p), h);
    h = _mm_movehl_ps(h, h);
    p += 2;
    n -= 2;
  }
  if (n) _mm_store_ss(p, h);
}
template <class T>
inline void store_part(T* p, __m256 v, int n) {
  T tmp[8];
  store8(tmp, v);
  for (int i = 0; i < n; ++i) p[i] = tmp[i];
}

inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// rows [0, nrows) of the block (row r at base + r * stride), classes [0, C) -> out[k * 8 + r];
// lanes of missing rows repeat row 0 (their results are never stored).
template <class T>
inline void gather_block(const T* base, int64_t stride, int nrows, int C, float* out) {
  const T* p[8];
#pragma GCC unroll 8
  for (int row = 0; row < 8; ++row) p[row] = base + (row < nrows ? row : 0) * stride;
  auto put_chunk = [out](int kb, __m256 r[8]) {  // one row per vector -> classes [kb, kb + 8) in lanes layout
    transpose8(r);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) _mm256_store_ps(out + (kb + j) * 8, r[j]);
  };
  int kb = 0;
  for (; kb + 8 <= C; kb += 8) {
    __m256 r[8];
#pragma GCC unroll 8
    for (int row = 0; row < 8; ++row) r[row] = load8(p[row] + kb);
    put_chunk(kb, r);
  }
  if (kb < C) {
    // Lanes for classes >= C are never read, so a row followed by another row of the block (which starts
    // at least C values further on) loads a whole vector.
    __m256 r[8];
    if (nrows == 8 && stride >= C) {
#pragma GCC unroll 7
      for (int row = 0; row < 7; ++row) r[row] = load8(p[row] + kb);
      r[7] = load_part(p[7] + kb, C - kb, -INFINITY);
    } else {
#pragma GCC unroll 8
      for (int row = 0; row < 8; ++row) r[row] = load_part(p[row] + kb, C - kb, -INFINITY);
    }
    put_chunk(kb, r);
  }
}

// in[k * 8 + r] -> rows [0, nrows) of a contiguous (N, C) output starting at base. With `stream`, a full
// block whose 8 * C outputs start 32-byte aligned is staged in `stage` (8 * C + 8 values) and written with
// streaming stores, bypassing the caches.
//
// A full block takes its chunks of 8 classes from the last to the first, and stores a partial last chunk
// of a row as a whole vector that runs into the first classes of the following rows, which a later chunk
// (or, for C < 8, the following rows of the same chunk) overwrites. Only a store that would run past the
// block's 8 * C outputs (into rows of the next block, maybe another thread's) is partial; the stage has
// room for the overrun.
template <class T>
inline void scatter_block(const float* in, int nrows, int C, T* base, T* stage, bool stream) {
  stream = stream && nrows == 8 && (reinterpret_cast<uintptr_t>(base) & 31) == 0 && (C * sizeof(T)) % 4 == 0;
  T* out = stream ? stage : base;
  auto rows_of_chunk = [in](int kb, __m256 r[8]) {  // classes [kb, kb + 8) of the 8 rows, one row per vector
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) r[j] = _mm256_load_ps(in + (kb + j) * 8);
    transpose8(r);
  };
  if (nrows == 8) {
    for (int kb = (C - 1) / 8 * 8; kb >= 0; kb -= 8) {
      const int n = C - kb < 8 ? C - kb : 8;
      __m256 r[8];
      rows_of_chunk(kb, r);
      if (C >= 8) {  // only the last row's store can run past the block
#pragma GCC unroll 7
        for (int row = 0; row < 7; ++row) store8(out + int64_t(row) * C + kb, r[row]);
        if (stream || n == 8) store8(out + int64_t(7) * C + kb, r[7]);
        else store_part(out + int64_t(7) * C + kb, r[7], n);
      } else {
        for (int row = 0; row < 8; ++row) {
          if (stream || row * C + 8 <= 8 * C) store8(out + int64_t(row) * C, r[row]);
          else store_part(out + int64_t(row) * C, r[row], n);
        }
      }
    }
  } else {
    for (int kb = 0; kb < C; kb += 8) {
      const int n = C - kb < 8 ? C - kb : 8;
      __m256 r[8];
      rows_of_chunk(kb, r);
      for (int row = 0; row < nrows; ++row) store_part(out + int64_t(row) * C + kb, r[row], n);
    }
  }
  if (stream) {  // 8 * C * sizeof(T) bytes: a multiple of 32 since C * sizeof(T) is a multiple of 4
    const int nvec = int(8 * C * sizeof(T) / 32);
    const char* src = reinterpret_cast<const char*>(stage);
    char* dst = reinterpret_cast<char*>(base);
    for (int v = 0; v < nvec; ++v)
      _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + 32 * v),
                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32 * v)));
  }
}

// Asks for rows [0, 8) of a block (row r at base + r * stride, C values each) to be brought into cache.
template <class T>
inline void prefetch_block(const T* base, int64_t stride, int C) {
  const char* p = reinterpret_cast<const char*>(base);
  if (stride == C) {
    const int bytes = 8 * C * int(sizeof(T));
    for (int o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
  } else {
    for (int r = 0; r < 8; ++r)
      for (int o = 0; o < C * int(sizeof(T)); o += 64) _mm_prefetch(p + r * stride * int64_t(sizeof(T)) + o, _MM_HINT_T0);
  }
}

struct BlockRef {
  const float* st;  // s, lanes layout
  const float* zt;  // z, lanes layout
  float* gs;        // gradients, lanes layout (may alias st / zt: class k is read before it is written)
  float* gz;
  F8 s(int k) const { return {_mm256_load_ps(st + k * 8)}; }
  F8 z(int k) const { return {_mm256_load_ps(zt + k * 8)}; }
  F8 z_at(F8 y, M8 labeled) const {
    const __m256i idx = _mm256_add_epi32(_mm256_slli_epi32(_mm256_cvtps_epi32(_mm256_and_ps(y.v, labeled.m)), 3),
                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return {_mm256_mask_i32gather_ps(_mm256_setzero_ps(), zt, idx, labeled.m, 4)};
  }
  void put_gs(int k, F8 v) { _mm256_store_ps(gs + k * 8, v.v); }
  void put_gz(int k, F8 v) { _mm256_store_ps(gz + k * 8, v.v); }
};

}  // namespace ERDA_ISA
}  // namespace erda
