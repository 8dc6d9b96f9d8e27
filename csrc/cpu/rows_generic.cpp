// Portable CPU variant: the scalar policy, whatever the compiler makes of it for the build's baseline ISA.
#define ERDA_ISA generic
#include "../erda_row.h"

namespace erda {
inline namespace ERDA_ISA {
template <class T> struct VecPolicy { using type = ScalarOps<float>; };
template <> struct VecPolicy<double> { using type = ScalarOps<double>; };
}  // namespace ERDA_ISA
}  // namespace erda

#include "rows_impl.h"

namespace erda {
void forward_rows_generic(const RowArgs& a, int64_t b, int64_t e) { run_rows<Fwd>(a, b, e); }
void backward_rows_generic(const RowArgs& a, int64_t b, int64_t e) { run_rows<Bwd>(a, b, e); }
}  // namespace erda
