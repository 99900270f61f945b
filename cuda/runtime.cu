#include "cuda/runtime.hpp"

#include <stdexcept>

namespace upcycle::cuda {

bool available(std::string* reason) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  std::string why;
  if (status != cudaSuccess)
    why = std::string("no usable CUDA device (") + cudaGetErrorString(status) + ")";
  else if (count == 0)
    why = "no CUDA device";
  else {
    cudaDeviceProp prop{};
    UPCYCLE_CUDA(cudaGetDeviceProperties(&prop, 0));
    if (prop.major < 8)
      why = std::string(prop.name) + " has compute capability " + std::to_string(prop.major) + "." +
            std::to_string(prop.minor) + "; the kernels need 8.0 (bf16) or newer";
  }
  cudaGetLastError();  // a failed query must not show up as the next launch's error
  if (reason) *reason = why;
  return why.empty();
}

std::string device_name() {
  std::string reason;
  if (!available(&reason)) throw std::runtime_error("--device cuda: " + reason);
  cudaDeviceProp prop{};
  UPCYCLE_CUDA(cudaGetDeviceProperties(&prop, 0));
  return prop.name;
}

void fail(const std::string& message, const char* call, const char* file, int line) {
  throw std::runtime_error("CUDA error in " + std::string(call) + " at " + file + ":" + std::to_string(line) + ": " +
                           message);
}

void check(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) fail(cudaGetErrorString(status), call, file, line);
}

void check(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) fail(cublasGetStatusString(status), call, file, line);
}

namespace {

// Keeps freed memory in the pool: by default the pool returns it to the driver at every
// synchronisation, and the next step would pay for cudaMalloc again.
void keep_pool_memory() {
  int device = 0;
  UPCYCLE_CUDA(cudaGetDevice(&device));
  cudaMemPool_t pool;
  UPCYCLE_CUDA(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t keep = UINT64_MAX;
  UPCYCLE_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
}

}  // namespace

void* allocate(size_t bytes, cudaStream_t stream) {
  static const bool configured = (keep_pool_memory(), true);
  (void)configured;
  void* ptr = nullptr;
  UPCYCLE_CUDA(cudaMallocAsync(&ptr, bytes, stream));
  return ptr;
}

void release(void* ptr, cudaStream_t stream) noexcept {
  cudaFreeAsync(ptr, stream);  // no check: runs in destructors, also during unwinding
}

namespace {

struct BlasHandle {
  BlasHandle() {
    UPCYCLE_CUDA(cublasCreate(&handle));
    // Deterministic: cuBLAS picks no split-K reductions with atomics when asked not to.
    UPCYCLE_CUDA(cublasSetAtomicsMode(handle, CUBLAS_ATOMICS_NOT_ALLOWED));
  }
  ~BlasHandle() { cublasDestroy(handle); }
  cublasHandle_t handle = nullptr;
};

}  // namespace

cublasHandle_t blas(cudaStream_t stream) {
  thread_local BlasHandle h;
  UPCYCLE_CUDA(cublasSetStream(h.handle, stream));
  return h.handle;
}

}  // namespace upcycle::cuda
