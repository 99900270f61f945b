// Which kernels OpenBLAS runs. It picks them as it loads, from a table of CPU models or from
// OPENBLAS_CORETYPE, so a CPU newer than its table, or the variable set for an older CPU, gets
// older kernels (on a Zen 5 EPYC with OPENBLAS_CORETYPE=Haswell: AVX2 sgemm, 250 against
// oneDNN's 470-500 GFLOP/s). upcycle bench reports it beside the ceiling it measures.
#pragma once
#include <string>

namespace upcycle::ops {

// The kernels' name as OpenBLAS reports it ("Haswell", "SkylakeX", ...); "" where the BLAS is
// not OpenBLAS.
std::string blas_core();

}  // namespace upcycle::ops
