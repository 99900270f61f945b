// Precondition checks of the ops. A violated one is a bug in the caller (sizes that disagree, an
// id out of range), reported as std::invalid_argument before any work starts, so nothing is
// thrown from inside an OpenMP region.
#pragma once
#include <stdexcept>
#include <string>

namespace upcycle::ops {

inline void require_arg(bool ok, const char* op, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string(op) + ": " + what);
}

}  // namespace upcycle::ops
