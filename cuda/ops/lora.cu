#include "cuda/ops/lora.hpp"

#include <climits>
#include <type_traits>

#include "cuda/ops/convert.cuh"
#include "cuda/ops/elementwise.hpp"
#include "cuda/ops/gemm.cuh"
#include "trainer/ops/check.hpp"

namespace upcycle::cuda {

namespace {

constexpr int kThreads = 256;

// The dropout's mask as the kernels take it; `on` false keeps every element.
struct Mask {
  bool on = false;
  uint64_t seed = 0;
  float keep = 1;  // 1 − p, in float as the CPU computes it
};

Mask mask_of(const ops::LoraDropout& drop) { return {drop.active(), drop.seed, 1.0f - drop.p}; }
float inverse(const Mask& m) { return m.on ? 1.0f / m.keep : 1.0f; }
// p >= 1: the CPU's x is all zeros, so the term and its gradients add nothing (and 1/(1 − p),
// folded into a GEMM's alpha below, would turn those zeros into NaN).
bool nothing_kept(const Mask& m) { return m.on && !(m.keep > 0); }

// Whether element i is kept: Rng(seed + i·φ).uniform() < keep, as ops::lora_dropout draws it
// (core/random.hpp: next() adds φ to the state and mixes it; uniform() takes the top 53 bits). The
// wraparound of uint64 and the compare in double are the CPU's, so the bits agree.
__device__ __forceinline__ bool kept(const Mask& m, int64_t i) {
  if (!m.on) return true;
  constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;  // φ, splitmix64's increment
  uint64_t z = m.seed + uint64_t(i) * kGolden + kGolden;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return double(z >> 11) * 0x1.0p-53 < double(m.keep);
}

// out[i] = kept ? in[i]·scale : 0, rounded once into T. In place is allowed (one thread per i).
template <class T>
__global__ void dropout_kernel(T* out, const T* in, int64_t n, Mask m, float scale) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = kept(m, i) ? from_float<T>(to_float(in[i]) * scale) : from_float<T>(0.f);
}

// dst[n,c] += factor · Σ_j left[n,j]·right[c·rc + j·rk] where element n·C + c is kept (a dropped
// one adds 0): the product over the rank in fp32 on the fp32 factor, rounded once into dst. One
// thread per element; left's row and right's column are a few values that stay in cache.
//   dst [N,C], left [N,r]; right is B [C,r] (rc = r, rk = 1) or A [r,C] (rc = 1, rk = C)
template <class T>
__global__ void add_low_rank(T* dst, const float* left, const float* right, int64_t rc, int64_t rk, int64_t N,
                             int64_t C, int64_t r, float factor, Mask m) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * C || !kept(m, i)) return;
  const float* l = left + i / C * r;
  const float* rt = right + i % C * rc;
  float acc = 0;
  for (int64_t j = 0; j < r; ++j) acc += l[j] * rt[j * rk];
  dst[i] = from_float<T>(to_float(dst[i]) + factor * acc);
}

// Row major C[M,Nc] = alpha·X·Y + beta·C: X [M,K] (stored [K,M] when x_t), Y [K,Nc] (stored
// [Nc,K] when y_t). cuBLAS is column major, where a row-major matrix reads as its transpose, so
// it computes Cᵀ = Yᵀ·Xᵀ.
template <class T, class C>
void product(C* c, const T* x, bool x_t, const T* y, bool y_t, int64_t M, int64_t K, int64_t Nc, float alpha,
             float beta, cudaStream_t stream) {
  gemm<T, C>(stream, y_t ? CUBLAS_OP_T : CUBLAS_OP_N, x_t ? CUBLAS_OP_T : CUBLAS_OP_N, Nc, M, K, y, y_t ? K : Nc, x,
             x_t ? M : K, beta, c, Nc, alpha);
}

// An fp32 array [n] as a GEMM operand of type T: itself for float, a bf16 copy in `copy` for bf16.
template <class T>
const T* as_operand(const float* v, int64_t n, DeviceBuffer<T>& copy, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    copy.resize(size_t(n));
    cast<T, float>(copy.data(), v, n, stream);
    return copy.data();
  }
}

// The term's input [n]: `in` itself, or in ⊙ mask in `buffer`, unscaled: 1/(1 − p) goes into the
// GEMMs' alpha instead, so a bf16 input is not rounded again.
template <class T>
const T* masked_input(const T* in, int64_t n, const Mask& m, DeviceBuffer<T>& buffer, cudaStream_t stream) {
  if (!m.on) return in;
  buffer.resize(size_t(n));
  dropout_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(buffer.data(), in, n, m, 1.f);
  UPCYCLE_CUDA_LAUNCHED("lora mask");
  return buffer.data();
}

// cuBLAS takes int sizes.
void check_sizes(int64_t N, int64_t I, int64_t O, int64_t r) {
  ops::require_arg(N >= 0 && I > 0 && O > 0 && r > 0, "lora", "sizes must be positive (N may be 0)");
  ops::require_arg(N <= INT_MAX && I <= INT_MAX && O <= INT_MAX && r <= INT_MAX, "lora", "sizes beyond cuBLAS's int");
}

}  // namespace

template <class T>
void lora_dropout(T* out, const T* in, int64_t n, const ops::LoraDropout& drop, cudaStream_t stream) {
  ops::require_arg(n >= 0, "lora_dropout", "negative size");
  if (n == 0) return;
  const Mask m{true, drop.seed, 1.0f - drop.p};  // applied whatever active() says, as the CPU's
  dropout_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(out, in, n, m, 1.0f / m.keep);
  UPCYCLE_CUDA_LAUNCHED("lora_dropout");
}

template <class T>
void lora_forward(T* out, const T* in, const float* A, const float* B, float scale, int64_t N, int64_t I, int64_t O,
                  int64_t r, const ops::LoraDropout& drop, cudaStream_t stream) {
  check_sizes(N, I, O, r);
  const Mask m = mask_of(drop);
  if (N == 0 || nothing_kept(m)) return;
  DeviceBuffer<T> x_buffer(0, stream), a_copy(0, stream);
  const T* x = masked_input(in, N * I, m, x_buffer, stream);
  DeviceBuffer<float> down(size_t(N * r), stream);  // scale · x·Aᵀ [N,r]
  product<T, float>(down.data(), x, false, as_operand(A, r * I, a_copy, stream), true, N, I, r, scale * inverse(m),
                    0.f, stream);
  add_low_rank<<<blocks_for(N * O, kThreads), kThreads, 0, stream>>>(out, down.data(), B, r, 1, N, O, r, 1.f, Mask{});
  UPCYCLE_CUDA_LAUNCHED("lora forward");
}

template <class T>
void lora_backward(T* d_in, float* d_A, float* d_B, const T* d_out, const T* in, const float* A, const float* B,
                   float scale, int64_t N, int64_t I, int64_t O, int64_t r, const ops::LoraDropout& drop,
                   cudaStream_t stream) {
  check_sizes(N, I, O, r);
  const Mask m = mask_of(drop);
  if (N == 0 || nothing_kept(m)) return;
  DeviceBuffer<T> b_copy(0, stream);
  DeviceBuffer<float> d_down(size_t(N * r), stream);  // scale · d_out·B [N,r]
  product<T, float>(d_down.data(), d_out, false, as_operand(B, O * r, b_copy, stream), false, N, O, r, scale, 0.f,
                    stream);
  if (d_in) {  // d_in += dropout(d_down·A): the same mask, 1/(1 − p) as the factor
    add_low_rank<<<blocks_for(N * I, kThreads), kThreads, 0, stream>>>(d_in, d_down.data(), A, 1, I, N, I, r,
                                                                        inverse(m), m);
    UPCYCLE_CUDA_LAUNCHED("lora backward");
  }
  if (!d_A && !d_B) return;
  DeviceBuffer<T> x_buffer(0, stream), a_copy(0, stream), d_down_copy(0, stream);
  const T* x = masked_input(in, N * I, m, x_buffer, stream);  // in ⊙ mask, 1/(1 − p) in alpha
  if (d_A)  // d_A += d_downᵀ·x, d_down read transposed in place
    product<T, float>(d_A, as_operand(d_down.data(), N * r, d_down_copy, stream), true, x, false, r, N, I, inverse(m),
                      1.f, stream);
  if (!d_B) return;
  DeviceBuffer<T> xa(size_t(N * r), stream);  // x·Aᵀ [N,r], in T to meet d_out
  product<T, T>(xa.data(), x, false, as_operand(A, r * I, a_copy, stream), true, N, I, r, inverse(m), 0.f, stream);
  product<T, float>(d_B, d_out, true, xa.data(), false, O, N, r, scale, 1.f, stream);  // d_outᵀ read in place
}

template void lora_dropout(float*, const float*, int64_t, const ops::LoraDropout&, cudaStream_t);
template void lora_dropout(bf16*, const bf16*, int64_t, const ops::LoraDropout&, cudaStream_t);
template void lora_forward(float*, const float*, const float*, const float*, float, int64_t, int64_t, int64_t, int64_t,
                           const ops::LoraDropout&, cudaStream_t);
template void lora_forward(bf16*, const bf16*, const float*, const float*, float, int64_t, int64_t, int64_t, int64_t,
                           const ops::LoraDropout&, cudaStream_t);
template void lora_backward(float*, float*, float*, const float*, const float*, const float*, const float*, float,
                            int64_t, int64_t, int64_t, int64_t, const ops::LoraDropout&, cudaStream_t);
template void lora_backward(bf16*, float*, float*, const bf16*, const bf16*, const float*, const float*, float,
                            int64_t, int64_t, int64_t, int64_t, const ops::LoraDropout&, cudaStream_t);

}  // namespace upcycle::cuda
