/* isa_dtype.h: one (ISA, dtype) instantiation, for isa_instance.h (which sets REAL,
   DT_NAME, SQRT and GK_F64): the ISA's description opens its target region, the templates
   are compiled inside it, the table entry records them, and every macro is undefined so
   the next instantiation starts from nothing. */

#include GK_ISA_HEADER
#include "gemm_real.c"
#include "vec_real.c"

static const GK_CAT2(gk_kernels, DT_NAME) G(kernels) = {
    MR, NR, KC, G(work), G(gemm), G(sum_squares), G(scale), G(sgd_update), G(adam_update),
    G(rmsprop_update), G(adagrad_update), G(fma_loop),
};

#pragma GCC pop_options

#if !GK_F64  /* outside the target region: it must run on any CPU */
static int GK_CAT2(isa_supported, ISA_NAME)(void)
{
    return ISA_SUPPORTED();
}
#endif

#undef GK_F64
#undef REAL
#undef DT_NAME
#undef SQRT
#undef ISA_NAME
#undef ISA_SUPPORTED
#undef MR
#undef NR
#undef KC
#undef MC
#undef NC
#undef VEC
#undef VLEN
#undef VMASK
#undef MAKE_MASK
#undef VZERO
#undef VLOAD
#undef VLOADM
#undef VSTOREM
#undef VBCAST
#undef VFMA
#undef VADD
#undef GK_PACK_T_FAST
#undef GK_PACK_A_T_FAST
