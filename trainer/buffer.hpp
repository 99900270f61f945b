// The CPU backend's activation buffers: std::vector whose elements are left unset when it is
// sized (default-initialised: no zeroing), as the GPU's are. The model writes every forward
// buffer whole before reading it, so zero-filling each one first (a memset per op, and the
// kernel's page clearing behind it) only cost time: about a quarter of a bf16 forward on a CPU
// with AMX. Buffers that are added into are asked for as B::zeros.
#pragma once
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace upcycle {

template <class T>
struct DefaultInitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() = default;
  template <class U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    std::allocator_traits<std::allocator<T>>::construct(static_cast<std::allocator<T>&>(*this), p,
                                                        std::forward<Args>(args)...);
  }
};

template <class T>
using Buffer = std::vector<T, DefaultInitAllocator<T>>;

}  // namespace upcycle
