// The CUDA runtime as the backend uses it: whether a device is usable, errors turned into
// exceptions naming the call and the source line, this thread's cuBLAS handle, and an owning
// device buffer. Storage types: float, and bf16 (__nv_bfloat16) for activations and weight
// copies; every kernel accumulates in fp32.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace upcycle::cuda {

using bf16 = __nv_bfloat16;

// True when a CUDA device can run our kernels; otherwise false, with the reason (no device, a
// driver older than this runtime, a device older than the architectures built) in *reason.
bool available(std::string* reason = nullptr);
// The usable device's name; std::runtime_error "--device cuda: REASON" when there is none.
std::string device_name();

// std::runtime_error "CUDA error in CALL at FILE:LINE: MESSAGE".
[[noreturn]] void fail(const std::string& message, const char* call, const char* file, int line);
void check(cudaError_t status, const char* call, const char* file, int line);
void check(cublasStatus_t status, const char* call, const char* file, int line);
#define UPCYCLE_CUDA(call) ::upcycle::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: a bad launch configuration shows here, not at the next call.
#define UPCYCLE_CUDA_LAUNCHED(kernel) ::upcycle::cuda::check(cudaGetLastError(), kernel, __FILE__, __LINE__)

// This thread's cuBLAS handle (created on first use, workspace set, math in fp32 with tensor
// cores allowed for bf16 inputs), bound to `stream` for the next calls.
cublasHandle_t blas(cudaStream_t stream);

// Blocks of `threads` covering n items: ceil(n / threads), at least 1.
inline unsigned blocks_for(int64_t n, int threads) { return unsigned(n > 0 ? (n + threads - 1) / threads : 1); }

// Stream-ordered device memory from the device's pool (cudaMallocAsync): no device-wide
// synchronisation per allocation, and freed blocks stay in the pool for the next step's buffers
// rather than going back to the driver. Never managed memory.
void* allocate(size_t bytes, cudaStream_t stream);
void release(void* ptr, cudaStream_t stream) noexcept;

// An owning device allocation of n elements of T, allocated and freed in the order of `stream`
// (the default stream unless given): an op's scratch is freed after the work queued on it.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n, cudaStream_t stream = nullptr) : stream_(stream) { resize(n); }
  ~DeviceBuffer() { drop(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), n_(o.n_), stream_(o.stream_) { o.ptr_ = nullptr, o.n_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) drop(), ptr_ = o.ptr_, n_ = o.n_, stream_ = o.stream_, o.ptr_ = nullptr, o.n_ = 0;
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Contents are not kept across a resize to a different size.
  void resize(size_t n) {
    if (n == n_) return;
    drop();
    if (n) ptr_ = static_cast<T*>(allocate(n * sizeof(T), stream_));
    n_ = n;
  }
  void zero(cudaStream_t s = nullptr) {
    if (n_) UPCYCLE_CUDA(cudaMemsetAsync(ptr_, 0, n_ * sizeof(T), s));
  }
  void upload(const T* host, size_t n, cudaStream_t s = nullptr) {
    resize(n);
    if (n) UPCYCLE_CUDA(cudaMemcpyAsync(ptr_, host, n * sizeof(T), cudaMemcpyHostToDevice, s));
  }
  void upload(const std::vector<T>& host, cudaStream_t s = nullptr) { upload(host.data(), host.size(), s); }
  // Waits for the stream, so the vector is complete on return.
  std::vector<T> download(cudaStream_t s = nullptr) const {
    std::vector<T> host(n_);
    if (n_) UPCYCLE_CUDA(cudaMemcpyAsync(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost, s));
    UPCYCLE_CUDA(cudaStreamSynchronize(s));
    return host;
  }

  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }

 private:
  void drop() {
    if (ptr_) cuda::release(ptr_, stream_);
    ptr_ = nullptr, n_ = 0;
  }
  T* ptr_ = nullptr;
  size_t n_ = 0;
  cudaStream_t stream_ = nullptr;
};

}  // namespace upcycle::cuda
