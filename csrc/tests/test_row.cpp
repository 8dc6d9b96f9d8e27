// C++ tests of the row maths without PyTorch: every CPU variant against a float64 reference written
// out here from the definitions (loss, statistics, both gradients), and the fp16/bf16 conversions.
#define ERDA_ISA row_test
#include <float.h>
#include <math.h>
#include <stdio.h>

#include <random>
#include <string>
#include <vector>

#include "erda_row.h"
#include "kernel_api.h"

using namespace erda;

static int failures = 0;
#define CHECK(cond, ...)                         \
  do {                                           \
    if (!(cond)) {                               \
      ++failures;                                \
      if (failures < 20) {                       \
        printf("FAIL %s:%d: ", __FILE__, __LINE__); \
        printf(__VA_ARGS__);                     \
        printf("\n");                            \
      }                                          \
    }                                            \
  } while (0)

static bool close(double a, double b, double rtol, double atol) {
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
  return fabs(a - b) <= atol + rtol * fabs(b);
}

// Float64 reference of one row: loss a*c + b*e and its gradients by central differences of that loss.
struct RefRow {
  static double loss(const std::vector<double>& s, const std::vector<double>& z, int y, bool in_set, double a,
                     double b, int dist, double ew) {
    const int C = int(s.size());
    double ms = -INFINITY, mz = -INFINITY, Ss = 0, Sz = 0;
    for (int k = 0; k < C; ++k) ms = fmax(ms, s[k]), mz = fmax(mz, z[k]);
    for (int k = 0; k < C; ++k) Ss += exp(s[k] - ms), Sz += exp(z[k] - mz);
    std::vector<double> p(C), q(C);
    for (int k = 0; k < C; ++k) p[k] = exp(s[k] - ms) / Ss, q[k] = exp(z[k] - mz) / Sz;
    double H = 0, D = 0;
    for (int k = 0; k < C; ++k) {
      if (p[k] > 0) H -= p[k] * log(p[k]);
      if (dist == kKL && p[k] > 0) D += p[k] * log(p[k] / q[k]);
      if (dist == kReverseKL && q[k] > 0) D += q[k] * log(q[k] / p[k]);
      if (dist == kJS) {
        const double m = (p[k] + q[k]) / 2;
        if (p[k] > 0) D += 0.5 * p[k] * log(p[k] / m);
        if (q[k] > 0) D += 0.5 * q[k] * log(q[k] / m);
      }
      if (dist == kMSE) D += 0.5 * (p[k] - q[k]) * (p[k] - q[k]);
    }
    double L = 0;
    if (y >= 0) L += a * -log(q[y]);
    if (in_set) L += b * (ew * H + D);
    return L;
  }
};

struct Variant {
  const char* name;
  RowsFn fn;
};

static void test_variant(const Variant& v) {
  std::mt19937 gen(42);
  std::normal_distribution<double> nd(0.0, 1.5);
  for (int C : {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 20, 40, 67}) {
    for (int dist = 0; dist < 4; ++dist) {
      const int64_t N = 19;  // two full blocks of 8 and a partial one
      std::vector<float> s(N * C), z(N * C), gs(N * C), gz(N * C), rowloss(N);
      for (auto& x : s) x = float(nd(gen));
      for (auto& x : z) x = float(nd(gen));
      std::vector<int64_t> labels(N);
      int64_t n_lab = 0;
      for (int64_t i = 0; i < N; ++i) {
        labels[i] = (i % 3 == 0) ? int64_t(gen() % C) : -1;
        n_lab += labels[i] >= 0;
      }
      for (bool erda_all : {false, true}) {
        int64_t counts[2] = {n_lab, erda_all ? N : N - n_lab};
        RowArgs a;
        a.s = s.data();
        a.z = z.data();
        a.s_row_stride = C;
        a.z_row_stride = C;
        a.labels = labels.data();
        a.counts = counts;
        a.N = N;
        a.C = C;
        a.cfg.distance = dist;
        a.cfg.reduction = kMean;
        a.cfg.entropy_weight = 0.7f;
        a.cfg.erda_weight = 0.3f;
        a.cfg.ce_weight = 1.2f;
        a.cfg.erda_all = erda_all;
        a.rowloss = rowloss.data();
        a.gs = gs.data();
        a.gz = gz.data();
        v.fn(a, 0, 8);
        v.fn(a, 8, N);  // ranges as threads get them
        const double ca = 1.2 / double(counts[0] > 0 ? counts[0] : 1), cb = 0.3 / double(counts[1] > 0 ? counts[1] : 1);
        for (int64_t i = 0; i < N; ++i) {
          std::vector<double> si(s.begin() + i * C, s.begin() + (i + 1) * C), zi(z.begin() + i * C, z.begin() + (i + 1) * C);
          const int y = int(labels[i]);
          const bool in_set = erda_all || y < 0;
          const double ai = y >= 0 ? ca : 0, bi = in_set ? cb : 0;
          const double L = RefRow::loss(si, zi, y, in_set, ai, bi, dist, 0.7);
          CHECK(close(rowloss[i], L, 1e-5, 1e-6), "%s C=%d dist=%d row %ld: loss %.9g vs %.9g", v.name, C, dist, long(i),
                rowloss[i], L);
          for (int k = 0; k < C; ++k) {
            const double h = 1e-5;
            auto fd = [&](std::vector<double>& x) {
              const double x0 = x[k];
              x[k] = x0 + h;
              const double up = RefRow::loss(si, zi, y, in_set, ai, bi, dist, 0.7);
              x[k] = x0 - h;
              const double dn = RefRow::loss(si, zi, y, in_set, ai, bi, dist, 0.7);
              x[k] = x0;
              return (up - dn) / (2 * h);
            };
            const double es = fd(si), ez = fd(zi);
            CHECK(close(gs[i * C + k], es, 1e-4, 1e-7), "%s C=%d dist=%d grad s[%ld,%d] %.9g vs %.9g", v.name, C, dist,
                  long(i), k, gs[i * C + k], es);
            CHECK(close(gz[i * C + k], ez, 1e-4, 1e-7), "%s C=%d dist=%d grad z[%ld,%d] %.9g vs %.9g", v.name, C, dist,
                  long(i), k, gz[i * C + k], ez);
          }
        }
      }
    }
  }
}

#ifdef ERDA_HAVE_AVX2_VARIANT
// The vector exp against float64 exp: within 2.5 ulp (2.0 measured) wherever the result is a normal
// float (x >= -87.3), exactly 0 below about -87.68 (and for -inf), NaN for NaN, 1 at 0.
static void test_exp_avx2() {
  std::vector<float> x, y;
  for (double v = -87.3; v <= 0; v += 1.3e-4) x.push_back(float(v));
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> u(-20.f, 0.f);
  for (int i = 0; i < 200000; ++i) x.push_back(u(gen));
  y.resize(x.size());
  erda_exp_avx2(x.data(), y.data(), int64_t(x.size()));
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double ref = exp(double(x[i]));
    const double ulp = nextafterf(float(ref), INFINITY) - float(ref);
    const double err = fabs(double(y[i]) - ref) / ulp;
    worst = fmax(worst, err);
    CHECK(err <= 2.5, "exp(%.9g) = %.9g, expected %.9g (%.2f ulp)", x[i], y[i], ref, err);
  }
  printf("avx2 exp: worst %.2f ulp over %zu arguments\n", worst, x.size());
  const float special[] = {0.f, -0.f, -87.5f, -87.7f, -88.f, -1e30f, -INFINITY, NAN};
  float out[8];
  erda_exp_avx2(special, out, 8);
  CHECK(out[0] == 1.f && out[1] == 1.f, "exp(0) = %.9g, exp(-0) = %.9g", out[0], out[1]);
  CHECK(out[2] > 0.f && out[2] < FLT_MIN, "exp(-87.5) = %.9g, expected a subnormal", out[2]);
  for (int i = 3; i < 7; ++i) CHECK(out[i] == 0.f, "exp(%g) = %.9g, expected 0", special[i], out[i]);
  CHECK(isnan(out[7]), "exp(NaN) = %.9g", out[7]);
}
#endif

// The row maths without a scratch (the CUDA kernel's way: exponentials recomputed in the gradient
// pass) through the scalar policy, against the same maths with a scratch (the CPU's way) and the
// float64 reference; with classes at -inf in some rows, which must get exactly zero gradients.
template <int DIST>
static void test_without_scratch_dist() {
  using V = ScalarOps<float>;
  std::mt19937 gen(11);
  std::normal_distribution<double> nd(0.0, 2.0);
  for (int C : {1, 2, 5, 13, 20}) {
    for (int row = 0; row < 12; ++row) {
      std::vector<float> s(C), z(C), gs1(C), gz1(C), gs2(C), gz2(C), scratch(kScratchPerClass * C);
      for (int k = 0; k < C; ++k) s[k] = float(nd(gen)), z[k] = float(nd(gen));
      const bool with_inf = row % 3 == 2 && C > 2;
      if (with_inf) s[1] = z[1] = -INFINITY;
      const int y = row % 4 == 0 ? int(gen() % C) : -1;
      const int yy = (with_inf && y == 1) ? 0 : y;
      const bool in_set = yy < 0 || row % 5 == 0;
      RowLabels<V> lab{float(yy), yy >= 0, in_set};
      const float a = 0.8f, b = 0.3f, ew = 0.6f;
      RowStats<V> st1, st2;
      RowRef<float, float> x1{s.data(), z.data(), gs1.data(), gz1.data()};
      RowRef<float, float> x2{s.data(), z.data(), gs2.data(), gz2.data()};
      const float l1 = Rows<V, DIST>::forward(x1, C, lab, a, b, ew, nullptr, st1);
      Rows<V, DIST>::gradients(x1, C, lab, a, b, ew, st1, nullptr, true, true);
      const float l2 = Rows<V, DIST>::forward(x2, C, lab, a, b, ew, scratch.data(), st2);
      Rows<V, DIST>::gradients(x2, C, lab, a, b, ew, st2, scratch.data(), true, true);
      std::vector<double> sd(s.begin(), s.end()), zd(z.begin(), z.end());
      const double L = RefRow::loss(sd, zd, yy, in_set, yy >= 0 ? a : 0, in_set ? b : 0, DIST, ew);
      CHECK(close(l1, L, 1e-5, 1e-6), "no scratch C=%d dist=%d row %d: loss %.9g vs %.9g", C, DIST, row, l1, L);
      CHECK(close(l1, l2, 1e-5, 1e-6), "C=%d dist=%d row %d: loss %.9g without scratch, %.9g with", C, DIST, row, l1, l2);
      for (int k = 0; k < C; ++k) {
        CHECK(close(gs1[k], gs2[k], 1e-5, 1e-7) && close(gz1[k], gz2[k], 1e-5, 1e-7),
              "C=%d dist=%d row %d class %d: gradients (%.9g, %.9g) without scratch, (%.9g, %.9g) with", C, DIST, row,
              k, gs1[k], gz1[k], gs2[k], gz2[k]);
      }
      if (with_inf) CHECK(gs1[1] == 0 && gz1[1] == 0, "C=%d dist=%d row %d: class at -inf has gradients (%g, %g)", C,
                          DIST, row, gs1[1], gz1[1]);
    }
  }
}

static void test_without_scratch() {
  test_without_scratch_dist<kKL>();
  test_without_scratch_dist<kReverseKL>();
  test_without_scratch_dist<kJS>();
  test_without_scratch_dist<kMSE>();
}

static void test_conversions() {
  // every finite half and bfloat16 value survives float and back; NaN stays NaN
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = widen(half_t{uint16_t(h)});
    const uint16_t back = Narrow<half_t>::from(f).x;
    if (isnan(f)) CHECK((back & 0x7c00) == 0x7c00 && (back & 0x3ff), "half NaN 0x%04x", h);
    else CHECK(back == h, "half 0x%04x -> %g -> 0x%04x", h, f, back);
    const float fb = widen(bf16_t{uint16_t(h)});
    const uint16_t bb = Narrow<bf16_t>::from(fb).x;
    if (isnan(fb)) CHECK(isnan(widen(bf16_t{bb})), "bf16 NaN 0x%04x", h);
    else CHECK(bb == h, "bf16 0x%04x -> %g -> 0x%04x", h, fb, bb);
  }
  // rounding to nearest even, overflow to inf
  CHECK(widen(Narrow<half_t>::from(1.0f + 1.0f / 2048)) == 1.0f, "half ties to even");
  CHECK(widen(Narrow<half_t>::from(1.0f + 3.0f / 2048)) == 1.0f + 4.0f / 2048, "half ties to even (odd)");
  CHECK(isinf(widen(Narrow<half_t>::from(70000.f))), "half overflow");
  CHECK(widen(Narrow<bf16_t>::from(1.0f + 1.0f / 256)) == 1.0f, "bf16 ties to even");
  CHECK(widen(Narrow<bf16_t>::from(1.0f + 3.0f / 256)) == 1.0f + 4.0f / 256, "bf16 ties to even (odd)");
}

int main() {
  test_conversions();
  test_without_scratch();
  std::vector<Variant> variants = {{"generic", &erda_rows_generic}};
#ifdef ERDA_HAVE_AVX2_VARIANT
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
    variants.push_back({"avx2", &erda_rows_avx2});
    test_exp_avx2();
  } else
    printf("avx2 variant skipped: CPU lacks AVX2/FMA/F16C\n");
#endif
  for (const auto& v : variants) test_variant(v);
  printf("%s (%d failures)\n", failures ? "FAILED" : "ok", failures);
  return failures ? 1 : 0;
}
