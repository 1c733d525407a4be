/* isa_generic.h: portable C, a 4 x 8 tile of scalars that the compiler may vectorize.

   An ISA header describes one instruction set and nothing else; isa_instance.h includes it
   once per dtype (REAL, DT_NAME, GK_F64 set) and instantiates gemm_real.c and vec_real.c
   from it. It opens the ISA's target region (isa_instance.h closes it) and defines:
     ISA_NAME              the suffix of its functions (gemm_generic_f32 ...) and its name
     ISA_SUPPORTED()       whether this CPU runs it
     MR, NR, KC, MC, NC    register tile and cache blocks (gemm_real.c says what they are)
     VEC, VLEN, VMASK, MAKE_MASK(count), VZERO(), VLOAD(p), VLOADM(m, p), VSTOREM(p, m, v),
     VBCAST(x), VFMA(a, b, acc), VADD(a, b)          its vector operations on REAL
   and optionally GK_PACK_T_FAST / GK_PACK_A_T_FAST (transposing packs, see gemm_real.c).
   Adding an ISA: one such header, one `GK_ISA` line in gradkern.c's table, one member of
   contract.Isa. Not part of the C API; no declarations here. */

#pragma GCC push_options

#define ISA_NAME generic
#define ISA_SUPPORTED() 1
#define MR 4
#define NR 8
#define KC 256
#define MC 128
#define NC 2048

#define VEC REAL
#define VLEN 1
#define VMASK int
#define MAKE_MASK(count) ((count) > 0)
#define VZERO() ((REAL)0)
#define VLOAD(p) (*(p))
#define VLOADM(m, p) ((m) ? *(p) : (REAL)0)
#define VSTOREM(p, m, v) ((m) ? (void)(*(p) = (v)) : (void)0)
#define VBCAST(x) (x)
#define VFMA(a, b, acc) ((a) * (b) + (acc))
#define VADD(a, b) ((a) + (b))
