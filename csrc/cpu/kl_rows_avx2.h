// kl on blocks of 8 float32 rows read in their own (N, C) layout, for C a multiple of 4 and rows stored
// one after the other: the common case of the AVX2 variant (the default distance, blocks with no labeled
// row, which is 12 blocks in 13 with 1% of the points labeled). Included only by rows_avx2.cpp.
//
// The lanes layout of rows_avx2.cpp costs two 8x8 transposes per 8 classes on the way in and two on the
// way out. Here the per-element work (the exponentials, t, the gradients) runs on the rows' own vectors,
// and only the per-row values cross lanes:
// - The 8 rows of a block are 4 pairs of rows, 2C values = Q = C / 4 vectors each. Row 2p fills the
//   first vectors of pair p, row 2p + 1 the last ones and, for odd Q, they share the middle vector (first
//   half, second half): C is a multiple of 4, so a row starts at a vector or at its middle.
// - A sum or maximum over each row is taken vertically within the pair, folded to [4 values of row 2p |
//   4 of row 2p + 1] and, for the 4 pairs together, to one vector in the order [rows 0 2 4 6 | 1 3 5 7]
//   ("block order"): 6 shuffles for the block.
// - A per-row value goes back to the rows' layout by two in-lane broadcasts per pair (and a blend for the
//   shared vector).
// 1 to kRowsLayoutBlocks blocks go through each pass together, so that the latency of one block's sums,
// logs and divisions overlaps the others' work. The maths per element and per row is Rows<V, kKL>'s
// (erda_row.h), on the same operations, so results match the lanes layout up to the order of the sums.
// For groups of kRowsLayoutBlocks blocks with C <= 4 kMaxFixedQ, Q = C / 4 is a template argument
// (kl_rows_layout_fn): the loops over a pair's vectors then unroll and their accumulators stay in
// registers, which at C = 20 takes about a tenth off the kernel's time; shorter groups and larger C run
// the same code with the block count and Q read at run time.
#pragma once
#include "vec_avx2.h"

namespace erda {
inline namespace ERDA_ISA {

struct MaxOp {
  static __m256 f(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }  // a NaN in b propagates
  static __m256 identity() { return _mm256_set1_ps(-INFINITY); }
};
struct AddOp {
  static __m256 f(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
  static __m256 identity() { return _mm256_setzero_ps(); }
};

template <int P>
struct Part {
  static constexpr int v = P;
};
// Calls f(j, Part<n>()) for the Q vectors of a pair of rows: n = 0 for the first row's vectors, 1 for
// the vector the two rows share (odd Q), 2 for the second row's (a constant, so that per-part values
// stay in registers).
template <class F>
inline __attribute__((always_inline)) void pair_loop(int Q, F f) {
  const int h = Q / 2;
  for (int j = 0; j < h; ++j) f(j, Part<0>());
  if (Q & 1) f(h, Part<1>());
  for (int j = (Q + 1) / 2; j < Q; ++j) f(j, Part<2>());
}

// Per-part accumulators of one pair -> [4 partial values of the first row | 4 of the second].
template <class Op>
inline __m256 fold_pair(const __m256 acc[3], int Q) {
  if (Q == 1) return acc[1];
  __m256 m = Op::f(_mm256_permute2f128_ps(acc[0], acc[2], 0x20), _mm256_permute2f128_ps(acc[0], acc[2], 0x31));
  return (Q & 1) ? Op::f(m, acc[1]) : m;
}

// The 4 pairs' folds -> one value per row, in block order.
template <class Op>
inline __m256 fold_block(const __m256 m[4]) {
  const __m256 a = Op::f(_mm256_unpacklo_ps(m[0], m[1]), _mm256_unpackhi_ps(m[0], m[1]));
  const __m256 b = Op::f(_mm256_unpacklo_ps(m[2], m[3]), _mm256_unpackhi_ps(m[2], m[3]));
  return Op::f(_mm256_shuffle_ps(a, b, 0x44), _mm256_shuffle_ps(a, b, 0xEE));
}

// A per-row value (block order) as the three vectors pair p needs: the first row's value in every lane,
// the second row's, and the two halves of the shared vector.
struct PairValue {
  __m256 part[3];
  PairValue(__m256 lo_rows, __m256 hi_rows, int p) {  // lo_rows: [0 2 4 6 | 0 2 4 6], hi_rows: [1 3 5 7 | 1 3 5 7]
    const __m256i at = _mm256_set1_epi32(p);
    part[0] = _mm256_permutevar_ps(lo_rows, at);
    part[2] = _mm256_permutevar_ps(hi_rows, at);
    part[1] = _mm256_blend_ps(part[0], part[2], 0xf0);
  }
};
struct BlockValue {  // a per-row value in block order, ready for PairValue
  __m256 lo, hi;
  BlockValue() = default;
  explicit BlockValue(__m256 v) : lo(_mm256_permute2f128_ps(v, v, 0x00)), hi(_mm256_permute2f128_ps(v, v, 0x11)) {}
  PairValue pair(int p) const { return PairValue(lo, hi, p); }
};

inline bool kl_rows_layout_ok(const RowArgs& a) {
  return a.dtype == kFloat32 && a.cfg.distance == kKL && a.C > 0 && a.C % 4 == 0 && a.s_row_stride == a.C &&
         a.z_row_stride == a.C;
}

constexpr int kRowsLayoutBlocks = 4;  // blocks that kl_blocks_rows_layout takes at once, at most
constexpr int kMaxFixedQ = 16;        // C / 4 up to this is a template argument

// Rows [i0, i0 + 8 NB), NB = 1 .. kRowsLayoutBlocks blocks, none labeled and so all in the ERDA set
// (checked by the caller), with kl_rows_layout_ok(a). FNB, FQ: NB and C / 4 when fixed at compile time,
// else 0 (nb and a.C are read then). b: the ERDA weight of loss_scales. ex: 40 kRowsLayoutBlocks C floats
// of scratch, 32-byte aligned.
template <int FNB, int FQ>
void kl_blocks_rows_layout(const RowArgs& a, int64_t i0, int nb, float b, float* ex) {
  using V = Avx2Ops;
  using R = Rows<V, kKL>;
  constexpr int MB = kRowsLayoutBlocks;
  const int NB = FNB ? FNB : nb;
  const int C = FQ ? 4 * FQ : a.C, Q = FQ ? FQ : C / 4;
  const float* S = static_cast<const float*>(a.s) + i0 * C;
  const float* Z = static_cast<const float*>(a.z) + i0 * C;
  float* e_s = ex;                 // exp(s - max s)
  float* e_z = ex + MB * 8 * C;    // exp(z - max z)
  float* e_t = ex + MB * 16 * C;   // t = (1 - ew)(s - max s) - (z - max z)
  float* e_g = ex + MB * 24 * C;   // max s of each element's row (Q read at run time only)
  float* e_h = ex + MB * 32 * C;   // max z of each element's row (the same)
  const F8 ew1 = V::set(1.f - a.cfg.entropy_weight);

  // maxima
  __m256 fs[4 * MB], fz[4 * MB];
  for (int p = 0; p < 4 * NB; ++p) {
    const float* sp = S + p * 2 * C;
    const float* zp = Z + p * 2 * C;
    __m256 as[3] = {MaxOp::identity(), MaxOp::identity(), MaxOp::identity()};
    __m256 az[3] = {MaxOp::identity(), MaxOp::identity(), MaxOp::identity()};
    pair_loop(Q, [&](int j, auto part_) {
      constexpr int part = decltype(part_)::v;
      as[part] = MaxOp::f(as[part], _mm256_loadu_ps(sp + 8 * j));
      az[part] = MaxOp::f(az[part], _mm256_loadu_ps(zp + 8 * j));
    });
    fs[p] = fold_pair<MaxOp>(as, Q);
    fz[p] = fold_pair<MaxOp>(az, Q);
  }
  BlockValue ms[MB], mz[MB];
  for (int k = 0; k < NB; ++k) {
    ms[k] = BlockValue(fold_block<MaxOp>(fs + 4 * k));
    mz[k] = BlockValue(fold_block<MaxOp>(fz + 4 * k));
  }

  // The exponentials and t. With Q fixed, pair by pair, the maxima in registers; otherwise the maxima
  // in the rows' layout first, then one flat loop over the NB * C vectors (the exp constants stay in
  // registers; per-part loops this short, with Q read at run time, would reload them).
  const auto exp_terms = [&](int v, F8 m_s, F8 m_z) {
    const F8 z{_mm256_loadu_ps(Z + 8 * v)};
    const F8 ez = V::exp(z - m_z);
    F8 es, t;
    R::kl_terms_of(F8{_mm256_loadu_ps(S + 8 * v)}, z, m_s, m_z, ew1, es, t);
    _mm256_store_ps(e_z + 8 * v, ez.v);
    _mm256_store_ps(e_s + 8 * v, es.v);
    _mm256_store_ps(e_t + 8 * v, t.v);
  };
  if (FQ) {
    for (int p = 0; p < 4 * NB; ++p) {
      const PairValue m_s = ms[p / 4].pair(p % 4), m_z = mz[p / 4].pair(p % 4);
      pair_loop(Q, [&](int j, auto part_) {
        constexpr int part = decltype(part_)::v;
        exp_terms(p * Q + j, F8{m_s.part[part]}, F8{m_z.part[part]});
      });
    }
  } else {
    for (int p = 0; p < 4 * NB; ++p) {
      const PairValue m_s = ms[p / 4].pair(p % 4), m_z = mz[p / 4].pair(p % 4);
      pair_loop(Q, [&](int j, auto part_) {
        constexpr int part = decltype(part_)::v;
        _mm256_store_ps(e_g + (p * Q + j) * 8, m_s.part[part]);
        _mm256_store_ps(e_h + (p * Q + j) * 8, m_z.part[part]);
      });
    }
    for (int v = 0; v < NB * C; ++v) exp_terms(v, F8{_mm256_load_ps(e_g + 8 * v)}, F8{_mm256_load_ps(e_h + 8 * v)});
  }
  // the sums over each row: es, ez, es t
  __m256 fa[4 * MB];
  for (int p = 0; p < 4 * NB; ++p) {
    __m256 ss[3] = {AddOp::identity(), AddOp::identity(), AddOp::identity()};
    __m256 sz[3] = {AddOp::identity(), AddOp::identity(), AddOp::identity()};
    __m256 sa[3] = {AddOp::identity(), AddOp::identity(), AddOp::identity()};
    pair_loop(Q, [&](int j, auto part_) {
      constexpr int part = decltype(part_)::v;
      const int o = (p * Q + j) * 8;
      const F8 es{_mm256_load_ps(e_s + o)};
      ss[part] = AddOp::f(ss[part], es.v);
      sz[part] = AddOp::f(sz[part], _mm256_load_ps(e_z + o));
      sa[part] = V::fma(es, V::zero_if_zero(es, F8{_mm256_load_ps(e_t + o)}), F8{sa[part]}).v;
    });
    fs[p] = fold_pair<AddOp>(ss, Q);
    fz[p] = fold_pair<AddOp>(sz, Q);
    fa[p] = fold_pair<AddOp>(sa, Q);
  }
  BlockValue bs[MB], bq[MB], K[MB];
  for (int k = 0; k < NB; ++k) {
    const R::KlRow r = R::kl_row(F8{fold_block<AddOp>(fs + 4 * k)}, F8{fold_block<AddOp>(fz + 4 * k)},
                                 F8{fold_block<AddOp>(fa + 4 * k)}, a.cfg.entropy_weight, true);
    // no labeled row, all in the set: the loss is b e (row_loss); block order -> rows 0..7
    const __m256 loss = _mm256_mul_ps(_mm256_set1_ps(b), r.e.v);
    _mm256_storeu_ps(static_cast<float*>(a.rowloss) + i0 + 8 * k,
                     _mm256_permutevar8x32_ps(loss, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    bs[k] = BlockValue(_mm256_mul_ps(_mm256_set1_ps(b), r.inv_s.v));
    bq[k] = BlockValue(_mm256_mul_ps(_mm256_set1_ps(b), r.inv_z.v));
    K[k] = BlockValue(r.K.v);
  }

  float* GS = static_cast<float*>(a.gs);
  float* GZ = static_cast<float*>(a.gz);
  if (!GS && !GZ) return;
  if (GS) GS += i0 * C;
  if (GZ) GZ += i0 * C;
  // 8 * C floats per block: a multiple of 32 bytes, so every block of an aligned output is aligned
  const bool stream = a.stream_grads && ((reinterpret_cast<uintptr_t>(GS) | reinterpret_cast<uintptr_t>(GZ)) & 31) == 0;
  for (int p = 0; p < 4 * NB; ++p) {
    const PairValue vbs = bs[p / 4].pair(p % 4), vbq = bq[p / 4].pair(p % 4), vK = K[p / 4].pair(p % 4);
    pair_loop(Q, [&](int j, auto part_) {
      constexpr int part = decltype(part_)::v;
      const int o = (p * Q + j) * 8;
      F8 g_s, g_z;
      R::kl_set_grads(F8{_mm256_load_ps(e_s + o)}, F8{_mm256_load_ps(e_z + o)}, F8{_mm256_load_ps(e_t + o)},
                      F8{vbs.part[part]}, F8{vbq.part[part]}, F8{vK.part[part]}, g_s, g_z);
      if (stream) {  // staged over es and ez (read above), streamed below in one burst
        _mm256_store_ps(e_s + o, g_s.v);
        _mm256_store_ps(e_z + o, g_z.v);
      } else {
        if (GS) _mm256_storeu_ps(GS + o, g_s.v);
        if (GZ) _mm256_storeu_ps(GZ + o, g_z.v);
      }
    });
  }
  if (stream) {
    // Streaming stores mixed with the arithmetic run slower than the same stores in a burst.
    if (GS)
      for (int v = 0; v < NB * C; ++v) _mm256_stream_ps(GS + 8 * v, _mm256_load_ps(e_s + 8 * v));
    if (GZ)
      for (int v = 0; v < NB * C; ++v) _mm256_stream_ps(GZ + 8 * v, _mm256_load_ps(e_z + 8 * v));
  }
}

using KlRowsFn = void (*)(const RowArgs&, int64_t, int, float, float*);

// The variant for kRowsLayoutBlocks blocks of a's C (kl_rows_layout_ok(a), so C is a positive multiple
// of 4); fewer blocks, or C / 4 > kMaxFixedQ, take kl_blocks_rows_layout<0, 0>. (A plain table: no
// standard C++ header is included in an instruction-set translation unit, see rows_impl.h.)
inline KlRowsFn kl_rows_layout_fn(const RowArgs& a) {
  constexpr int M = kRowsLayoutBlocks;
  static constexpr KlRowsFn fixed[kMaxFixedQ] = {
      &kl_blocks_rows_layout<M, 1>,  &kl_blocks_rows_layout<M, 2>,  &kl_blocks_rows_layout<M, 3>,
      &kl_blocks_rows_layout<M, 4>,  &kl_blocks_rows_layout<M, 5>,  &kl_blocks_rows_layout<M, 6>,
      &kl_blocks_rows_layout<M, 7>,  &kl_blocks_rows_layout<M, 8>,  &kl_blocks_rows_layout<M, 9>,
      &kl_blocks_rows_layout<M, 10>, &kl_blocks_rows_layout<M, 11>, &kl_blocks_rows_layout<M, 12>,
      &kl_blocks_rows_layout<M, 13>, &kl_blocks_rows_layout<M, 14>, &kl_blocks_rows_layout<M, 15>,
      &kl_blocks_rows_layout<M, 16>};
  return a.C / 4 <= kMaxFixedQ ? fixed[a.C / 4 - 1] : &kl_blocks_rows_layout<0, 0>;
}

}  // namespace ERDA_ISA
}  // namespace erda
