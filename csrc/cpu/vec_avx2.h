// The AVX2 (+FMA, F16C) vector policy for erda_row.h: 8 float lanes. Included only by rows_avx2.cpp,
// which is compiled for AVX2 and selected at run time when the CPU has it.
#pragma once
#include <immintrin.h>

#include "../erda_row.h"

namespace erda {
inline namespace ERDA_ISA {

struct F8 {
  __m256 v;
};
inline F8 operator+(F8 a, F8 b) { return {_mm256_add_ps(a.v, b.v)}; }
inline F8 operator-(F8 a, F8 b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline F8 operator*(F8 a, F8 b) { return {_mm256_mul_ps(a.v, b.v)}; }

struct Avx2Ops {
  using acc = float;
  using vec = F8;
  static constexpr int W = 8;

  static F8 load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static F8 load(const half_t* p) { return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))}; }
  static F8 load(const bf16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(w, 16))};
  }
  static __m256i lanes_below(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static F8 load_part(const float* p, int n, float fill) {
    const __m256i m = lanes_below(n);
    return {_mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m))};
  }
  static void store_part(float* p, F8 v, int n) { _mm256_maskstore_ps(p, lanes_below(n), v.v); }
  template <class T>
  static F8 load_part(const T* p, int n, float fill) {
    T tmp[8];
    const T f = Narrow<T>::from(fill);
    for (int i = 0; i < 8; ++i) tmp[i] = i < n ? p[i] : f;
    return load(tmp);
  }
  static void store(float* p, F8 v) { _mm256_storeu_ps(p, v.v); }
  static void store(half_t* p, F8 v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v.v, _MM_FROUND_TO_NEAREST_INT));
  }
  static void store(bf16_t* p, F8 v) {
    const __m256i u = _mm256_castps_si256(v.v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v.v, v.v, _CMP_UNORD_Q));
    const __m256i qnan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    r = _mm256_blendv_epi8(r, qnan, nan);
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
  }
  template <class T>
  static void store_part(T* p, F8 v, int n) {
    T tmp[8];
    store(tmp, v);
    for (int i = 0; i < n; ++i) p[i] = tmp[i];
  }
  static F8 load_acc(const float* p) { return {_mm256_loadu_ps(p)}; }
  static void store_acc(float* p, F8 v) { _mm256_storeu_ps(p, v.v); }
  static F8 set(float x) { return {_mm256_set1_ps(x)}; }
  static F8 max(F8 a, F8 b) { return {_mm256_max_ps(a.v, b.v)}; }
  static float hmax(F8 a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
  static float hsum(F8 a) {
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    m = _mm_add_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
  static F8 zero_if_zero(F8 c, F8 v) {
    return {_mm256_andnot_ps(_mm256_cmp_ps(c.v, _mm256_setzero_ps(), _CMP_EQ_OQ), v.v)};
  }
  static F8 lane_value(int lane, float v) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m = _mm256_cmpeq_epi32(iota, _mm256_set1_epi32(lane));
    return {_mm256_and_ps(_mm256_castsi256_ps(m), _mm256_set1_ps(v))};
  }

  // exp: Cody-Waite range reduction and a degree-6 polynomial (Cephes), about 1 ulp. exp(x) = 0 for
  // x < -87.33 (so exp(-inf) is exactly 0), +inf for x > 88.72, NaN stays NaN.
  static F8 exp(F8 x) {
    const __m256 xin = x.v;
    const __m256 xc = _mm256_min_ps(_mm256_max_ps(xin, _mm256_set1_ps(-88.0f)), _mm256_set1_ps(88.0f));
    const __m256 fx = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(n));
    y = _mm256_andnot_ps(_mm256_cmp_ps(xin, _mm256_set1_ps(-87.33654475f), _CMP_LT_OQ), y);
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(xin, _mm256_set1_ps(88.72283905f), _CMP_GT_OQ));
    y = _mm256_blendv_ps(y, xin, _mm256_cmp_ps(xin, xin, _CMP_UNORD_Q));
    return {y};
  }

  // log (Cephes logf), about 1 ulp on normal numbers; log(0) = -inf, log(x < 0) = NaN, log(inf) = inf,
  // NaN stays NaN; subnormal inputs are treated as the smallest normal number.
  static F8 log(F8 xv) {
    const __m256 xin = xv.v;
    __m256 x = _mm256_max_ps(xin, _mm256_castsi256_ps(_mm256_set1_epi32(0x00800000)));
    __m256i e_i = _mm256_srli_epi32(_mm256_castps_si256(x), 23);
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

}  // namespace ERDA_ISA
}  // namespace erda
