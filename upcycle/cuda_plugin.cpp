#include "upcycle/cuda_plugin.hpp"

#include <dlfcn.h>

#include <filesystem>

#include "core/error.hpp"

namespace upcycle {

namespace {

#ifdef UPCYCLE_HAVE_CUDA
const CudaPlugin& load() {
  const std::filesystem::path path = std::filesystem::read_symlink("/proc/self/exe").parent_path() / "libupcycle_cuda.so";
  // Kept loaded for the life of the process: its code is called until exit.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  const char* why = handle ? nullptr : dlerror();
  require(handle, path, std::string("cannot be loaded (the CUDA backend, needed by --device cuda): ") + (why ? why : "?"));
  using Entry = const CudaPlugin* (*)();
  const auto entry = reinterpret_cast<Entry>(dlsym(handle, "upcycle_cuda_plugin"));
  require(entry, path, "has no upcycle_cuda_plugin entry point: not the CUDA backend of this upcycle");
  const CudaPlugin* plugin = entry();
  require(plugin && plugin->abi == kCudaPluginAbi, path, "is the CUDA backend of another upcycle build (rebuild both)");
  return *plugin;
}
#endif

}  // namespace

const CudaPlugin& cuda_plugin() {
#ifdef UPCYCLE_HAVE_CUDA
  static const CudaPlugin& plugin = load();
  return plugin;
#else
  throw UsageError("--device cuda: this upcycle was built without the CUDA backend (no nvcc at build time)");
#endif
}

void register_cuda_device() {
  register_device("cuda", [] {
    const CudaPlugin& plugin = cuda_plugin();
    return DeviceEngines{plugin.make_engine, plugin.make_lora_engine};
  });
}

}  // namespace upcycle
