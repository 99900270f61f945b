// Hot loops built three times, for the baseline x86-64, for AVX2 (x86-64-v3) and for AVX-512
// (x86-64-v4), the best picked at load time. They give the same bits in every build: the loops'
// order of operations is written out (explicit lanes, no reassociation without -ffast-math) and
// the project compiles with -ffp-contract=off, so only the vector width changes.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define UPCYCLE_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define UPCYCLE_SIMD_CLONES
#endif
