// AVX2 + FMA + F16C variant. The target pragma comes before every include so that the whole translation
// unit is compiled for AVX2 whatever the build flags (no -march=native); it only runs after the run-time
// check in cpu/dispatch.cpp. Only C headers and our own are included (see rows_impl.h).
#if defined(__x86_64__) || defined(_M_X64)
#pragma GCC target("avx2,fma,f16c")
#define ERDA_ISA avx2
#include "../erda_row.h"
#include "vec_avx2.h"

namespace erda {
inline namespace ERDA_ISA {
template <class T> struct VecPolicy { using type = Avx2Ops; };
template <> struct VecPolicy<double> { using type = ScalarOps<double>; };
}  // namespace ERDA_ISA
}  // namespace erda

#include "rows_impl.h"

namespace erda {
void forward_rows_avx2(const RowArgs& a, int64_t b, int64_t e) { run_rows<Fwd>(a, b, e); }
void backward_rows_avx2(const RowArgs& a, int64_t b, int64_t e) { run_rows<Bwd>(a, b, e); }
}  // namespace erda
#endif
