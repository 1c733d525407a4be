/* isa_instance.h: one instruction set's GEMM and streaming kernels, both dtypes, and its
   entries of the dispatch table (kernels_<isa>_f32, kernels_<isa>_f64, isa_supported_<isa>).
   Included by gradkern.c once per ISA, with GK_ISA_HEADER naming the ISA's description
   (isa_generic.h says what one defines). Not part of the C API; no declarations here. */

#define GK_F64 0
#define REAL float
#define DT_NAME f32
#define SQRT sqrtf
#include "isa_dtype.h"

#define GK_F64 1
#define REAL double
#define DT_NAME f64
#define SQRT sqrt
#include "isa_dtype.h"

#undef GK_ISA_HEADER
