// cuBLAS's GEMM on T operands (float or bf16) with fp32 compute: the one call every product of
// cuda/ops makes. The handle keeps the default math mode, so float inputs run true fp32 (no TF32)
// and bf16 inputs run on tensor cores with fp32 accumulation; with beta = 1 a bf16 C is read,
// added in fp32 and rounded once.
#pragma once
#include <cstdint>

#include "cuda/runtime.hpp"

namespace upcycle::cuda {

template <class T>
constexpr cudaDataType_t kDataType = CUDA_R_32F;
template <>
constexpr cudaDataType_t kDataType<bf16> = CUDA_R_16BF;

// Column-major C[m,n] = alpha·op(A)·op(B) + beta·C.
template <class T, class C>
void gemm(cudaStream_t stream, cublasOperation_t op_a, cublasOperation_t op_b, int64_t m, int64_t n, int64_t k,
          const T* A, int64_t lda, const T* B, int64_t ldb, float beta, C* c, int64_t ldc, float alpha = 1.f) {
  UPCYCLE_CUDA(cublasGemmEx(blas(stream), op_a, op_b, int(m), int(n), int(k), &alpha, A, kDataType<T>, int(lda), B,
                            kDataType<T>, int(ldb), &beta, c, kDataType<C>, int(ldc), CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
}

}  // namespace upcycle::cuda
