#include "core/quant.hpp"
#include <stdexcept>
namespace upcycle {
void dequantize(DType, const std::byte*, uint64_t, float*, uint64_t) { throw std::logic_error("SCAFFOLD quant"); }
}
