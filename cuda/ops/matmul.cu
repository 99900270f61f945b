#include "cuda/ops/matmul.hpp"

#include <climits>

#include "cuda/ops/convert.cuh"
#include "cuda/ops/gemm.cuh"
#include "trainer/ops/check.hpp"

namespace upcycle::cuda {

namespace {

constexpr int kThreads = 256;

// out[n,o] = bias[o], before a GEMM with beta = 1 adds the product: one rounding for a bf16 out.
template <class T, class Out>
__global__ void broadcast_bias(Out* out, const T* bias, int64_t N, int64_t O) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < N * O) out[i] = from_float<Out>(to_float(bias[i % O]));
}

// d_bias[o] += Σ_n d_out[n,o]. A block covers kCols columns (coalesced reads along a row); its
// kLanes rows of threads each sum every kLanes-th row, then lane 0 adds the kLanes partials in
// order: a fixed summation order, so the same bits every run, and no atomics.
constexpr int kCols = 32, kLanes = 16;
template <class T>
__global__ void bias_grad(float* d_bias, const T* d_out, int64_t N, int64_t O) {
  __shared__ float partial[kLanes][kCols];
  const int64_t o = int64_t(blockIdx.x) * kCols + threadIdx.x;
  float sum = 0;
  if (o < O)
    for (int64_t n = threadIdx.y; n < N; n += kLanes) sum += to_float(d_out[n * O + o]);
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y != 0 || o >= O) return;
  float total = 0;
  for (int lane = 0; lane < kLanes; ++lane) total += partial[lane][threadIdx.x];
  d_bias[o] += total;
}

// cuBLAS takes int sizes.
void check_sizes(int64_t N, int64_t I, int64_t O) {
  ops::require_arg(N >= 0 && I > 0 && O > 0, "matmul", "sizes must be positive");
  ops::require_arg(N <= INT_MAX && I <= INT_MAX && O <= INT_MAX, "matmul", "sizes beyond cuBLAS's int");
}

}  // namespace

// Row major out[N,O] is column major C[O,N] = Wᵀ·in, W read as column major [I,O] and in as [I,N].
template <class T, class Out>
void matmul_forward(Out* out, const T* in, const T* W, const T* bias, int64_t N, int64_t I, int64_t O,
                    cudaStream_t stream) {
  check_sizes(N, I, O);
  if (N == 0) return;
  if (bias) {
    broadcast_bias<<<blocks_for(N * O, kThreads), kThreads, 0, stream>>>(out, bias, N, O);
    UPCYCLE_CUDA_LAUNCHED("broadcast_bias");
  }
  gemm(stream, CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, W, I, in, I, bias ? 1.f : 0.f, out, O);
}

template <class T>
void matmul_backward(T* d_in, float* d_W, float* d_bias, const T* d_out, const T* in, const T* W, int64_t N, int64_t I,
                     int64_t O, cudaStream_t stream) {
  check_sizes(N, I, O);
  if (N == 0) return;
  // d_in: column major C[I,N] += W[I,O]·d_out[O,N]
  if (d_in) gemm(stream, CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, W, I, d_out, O, 1.f, d_in, I);
  // d_W: column major C[I,O] += in[I,N]·d_out[O,N]ᵀ, into fp32 whatever T is
  if (d_W) gemm(stream, CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, in, I, d_out, O, 1.f, d_W, I);
  if (d_bias) {
    bias_grad<<<blocks_for(O, kCols), dim3(kCols, kLanes), 0, stream>>>(d_bias, d_out, N, O);
    UPCYCLE_CUDA_LAUNCHED("bias_grad");
  }
}

template void matmul_forward(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t,
                             cudaStream_t);
template void matmul_forward(bf16*, const bf16*, const bf16*, const bf16*, int64_t, int64_t, int64_t, cudaStream_t);
template void matmul_forward(float*, const bf16*, const bf16*, const bf16*, int64_t, int64_t, int64_t, cudaStream_t);
template void matmul_backward(float*, float*, float*, const float*, const float*, const float*, int64_t, int64_t,
                              int64_t, cudaStream_t);
template void matmul_backward(bf16*, float*, float*, const bf16*, const bf16*, const bf16*, int64_t, int64_t, int64_t,
                              cudaStream_t);

}  // namespace upcycle::cuda
