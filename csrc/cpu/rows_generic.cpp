// Portable CPU variant: one row at a time through the scalar policy, for the build's baseline ISA.
#define ERDA_ISA generic
#include "rows_impl.h"

namespace erda {
void erda_rows_generic(const RowArgs& a, int64_t b, int64_t e) { run_rows<ErdaScalar, ErdaScalar>(a, b, e); }
}  // namespace erda
