// AVX2 + FMA + F16C variant: blocks of 8 rows, one row per lane. Each block is transposed into a small
// lanes-layout scratch (8x8 register transposes), the shared row maths runs on it (the loss, then the
// gradients from the same exponentials), and the gradients are transposed back and stored (streamed past
// the caches when large). For kl on float32 rows of C % 4 == 0 classes stored one after the other,
// blocks with no labeled row skip the transposes: kl_rows_avx2.h computes them in the rows' own layout.
//
// The target pragma comes before every include so that the whole translation unit is compiled for AVX2
// whatever the build flags (no -march=native); it only runs after the run-time check in
// erda_loss_cpu.cpp. Only C headers and our own are included (see rows_impl.h).
#if defined(__x86_64__) || defined(_M_X64)
#pragma GCC target("avx2,fma,f16c")
#define ERDA_ISA avx2
#include "rows_impl.h"
#include "vec_avx2.h"
#include "kl_rows_avx2.h"

namespace erda {
inline namespace ERDA_ISA {

using V = Avx2Ops;
constexpr int64_t kPrefetchRows = 16;  // rows ahead of the block being computed
constexpr int64_t kRowsLayoutPrefetchRows = 64;  // the same for kl_blocks_rows_layout (2-3% faster than 16 at N = 10^6)

// Labels of rows [i0, i0 + nrows) as lanes.
inline RowLabels<V> block_labels(const RowArgs& a, int64_t i0, int nrows) {
  const __m256i all = _mm256_set1_epi32(-1);
  const RowLabels<V> none{V::set(-1.f), M8{_mm256_setzero_ps()}, M8{_mm256_castsi256_ps(all)}};
  if (!a.labels) return none;  // every row unlabeled, so every row in the ERDA set
  RowLabels<V> lab;
  if (nrows == 8 && a.label_stride == 1) {
    // 8 int64 labels, already checked to be classes or ignore_index. With 1% of the points labeled, about
    // 12 blocks in 13 have no labeled row and return at the first test.
    const __m256i ignore = _mm256_set1_epi64x(a.ignore_index);
    const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.labels + i0));
    const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.labels + i0 + 4));
    const __m256i u0 = _mm256_cmpeq_epi64(l0, ignore), u1 = _mm256_cmpeq_epi64(l1, ignore);
    if (_mm256_movemask_epi8(_mm256_and_si256(u0, u1)) == -1) return none;
    const __m256i low = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);  // the low halves of the four int64
    const __m256i y = _mm256_blend_epi32(_mm256_permutevar8x32_epi32(l0, low), _mm256_permutevar8x32_epi32(l1, low), 0xf0);
    const __m256i u = _mm256_blend_epi32(_mm256_permutevar8x32_epi32(u0, low), _mm256_permutevar8x32_epi32(u1, low), 0xf0);
    lab.y = {_mm256_cvtepi32_ps(_mm256_or_si256(y, u))};  // -1 for an unlabeled row
  } else {
    alignas(32) float y[8];
    for (int r = 0; r < 8; ++r) y[r] = r < nrows ? float(row_label(a, i0 + r)) : -1.f;
    lab.y = {_mm256_load_ps(y)};
  }
  lab.labeled = V::nonneg(lab.y);
  lab.in_set = a.cfg.erda_all ? M8{_mm256_castsi256_ps(all)}
                              : M8{_mm256_cmp_ps(lab.y.v, _mm256_setzero_ps(), _CMP_LT_OQ)};
  return lab;
}

inline void store_rows(float* p, __m256 v, int nrows) {
  if (nrows == 8) _mm256_storeu_ps(p, v);
  else _mm256_maskstore_ps(p, lanes_below(nrows), v);
}

template <class T, int DIST>
void erda_blocks(const RowArgs& a, int64_t begin, int64_t end) {
  float ca, cb;
  loss_scales(a.cfg, a.counts, ca, cb);
  const int C = a.C, cpad = (C + 7) / 8 * 8;
  // lanes layout: 3 + kScratchPerClass vectors per class; kl_blocks_rows_layout: 5 * kRowsLayoutBlocks from ex on
  Scratch<float> buf(size_t(3 + 5 * kRowsLayoutBlocks) * cpad * 8);
  if (!buf.p) return erda_range_scalar<T, DIST>(a, begin, end);
  float* st = buf.p;          // s of the block, lanes layout; then its gradient
  float* zt = st + cpad * 8;  // z of the block, lanes layout; then its gradient
  float* ex = zt + cpad * 8;  // the row maths' scratch, kScratchPerClass * C * 8
  T* stage = reinterpret_cast<T*>(ex + kScratchPerClass * cpad * 8);  // 8 * C (+ 8) outputs for streaming stores
  const T* S = static_cast<const T*>(a.s);
  const T* Z = static_cast<const T*>(a.z);
  float* rowloss = static_cast<float*>(a.rowloss);
  T* GS = static_cast<T*>(a.gs);
  T* GZ = static_cast<T*>(a.gz);
  const float ew = a.cfg.entropy_weight;
  // (the loss alone is faster through the lanes layout, whose sums come with the exponentials)
  const bool rows_layout = DIST == kKL && sizeof(T) == 4 && (GS || GZ) && kl_rows_layout_ok(a);
  const KlRowsFn kl_rows = rows_layout ? kl_rows_layout_fn(a) : nullptr;
  for (int64_t i0 = begin; i0 < end; i0 += 8) {
    const int nrows = end - i0 < 8 ? int(end - i0) : 8;
    if (i0 + kPrefetchRows + 8 <= end) {
      prefetch_block(S + (i0 + kPrefetchRows) * a.s_row_stride, a.s_row_stride, C);
      prefetch_block(Z + (i0 + kPrefetchRows) * a.z_row_stride, a.z_row_stride, C);
    }
    const RowLabels<V> lab = block_labels(a, i0, nrows);
    if (rows_layout && nrows == 8 && !V::any(lab.labeled)) {  // then every row is in the ERDA set
      // up to kRowsLayoutBlocks whole blocks with no labeled row: more at once overlap the latency of each
      // pass's sums
      int nb = 1;
      while (nb < kRowsLayoutBlocks && i0 + 8 * (nb + 1) <= end && !V::any(block_labels(a, i0 + 8 * nb, 8).labeled)) ++nb;
      for (int k = 0; k < nb && i0 + 8 * k + kRowsLayoutPrefetchRows + 8 <= end; ++k) {
        prefetch_block(S + (i0 + 8 * k + kRowsLayoutPrefetchRows) * C, C, C);
        prefetch_block(Z + (i0 + 8 * k + kRowsLayoutPrefetchRows) * C, C, C);
      }
      if (nb == kRowsLayoutBlocks) kl_rows(a, i0, nb, cb, ex);
      else kl_blocks_rows_layout<0, 0>(a, i0, nb, cb, ex);
      i0 += 8 * (nb - 1);
      continue;
    }
    gather_block(S + i0 * a.s_row_stride, a.s_row_stride, nrows, C, st);
    gather_block(Z + i0 * a.z_row_stride, a.z_row_stride, nrows, C, zt);
    BlockRef x{st, zt, st, zt};  // gradients overwrite the staged rows
    RowStats<V> rs;
    const F8 loss = Rows<V, DIST>::forward(x, C, lab, ca, cb, ew, ex, rs);
    store_rows(rowloss + i0, loss.v, nrows);
    if (GS || GZ) {
      Rows<V, DIST>::gradients(x, C, lab, ca, cb, ew, rs, ex, GS != nullptr, GZ != nullptr);
      if (GS) scatter_block(st, nrows, C, GS + i0 * C, stage, a.stream_grads);
      if (GZ) scatter_block(zt, nrows, C, GZ + i0 * C, stage, a.stream_grads);
    }
  }
  if (a.stream_grads) _mm_sfence();  // order the streaming stores before the caller reads the gradients
}

template <class T, int D> struct ErdaBlocks { static void run(const RowArgs& a, int64_t b, int64_t e) { erda_blocks<T, D>(a, b, e); } };

}  // namespace ERDA_ISA

void erda_rows_avx2(const RowArgs& a, int64_t b, int64_t e) { run_rows<ErdaBlocks, ErdaScalar>(a, b, e); }

void erda_exp_avx2(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, V::exp(F8{_mm256_loadu_ps(x + i)}).v);
  if (i < n) {
    alignas(32) float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t j = i; j < n; ++j) t[j - i] = x[j];
    _mm256_store_ps(t, V::exp(F8{_mm256_load_ps(t)}).v);
    for (int64_t j = i; j < n; ++j) y[j] = t[j - i];
  }
}

}  // namespace erda
#endif
