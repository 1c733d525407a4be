/* Ends one instantiation of gemm_real.c / vec_real.c for an ISA in gradkern.c: every
   macro the templates read is undefined, so the next ISA starts from nothing.
   Not part of the C API (that is gradkern.h alone); no declarations here. */
#undef ISA_NAME
#undef REAL
#undef VEC
#undef DT_NAME
#undef SQRT
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
#undef MR
#undef NR
#undef KC
#undef MC
#undef NC
