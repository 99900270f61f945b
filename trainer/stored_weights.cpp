#include "trainer/stored_weights.hpp"

#include <memory>
#include <stdexcept>

#include "trainer/load_by_role.hpp"

namespace upcycle {

ops::StoredMatrix StoredWeight::matrix() const {
  if (tensor_.rank() < 1 || !ops::stored_matmul_supports(tensor_.dtype()))
    throw std::logic_error("StoredWeight: a " + std::string(dtype_name(tensor_.dtype())) + " tensor of shape " +
                           shape_string(tensor_.shape()) + " is not a matrix the stored matmul reads");
  const int64_t rows = tensor_.dim(0);
  return {tensor_.dtype(), tensor_.bytes().data(), rows, rows ? int64_t(tensor_.numel()) / rows : 0};
}

StoredWeight StoredWeight::slice(const Shape& shape, int64_t e, int64_t first, int64_t rows) const {
  const size_t row_bytes = ops::stored_row_bytes(tensor_.dtype(), shape[2]);
  const size_t offset = size_t(e * shape[1] + first) * row_bytes;
  // The view keeps the whole stacked tensor (and so its mapping) alive.
  const auto whole = std::make_shared<Tensor>(tensor_);
  std::shared_ptr<const std::byte> bytes(whole, whole->bytes().data() + offset);
  return StoredWeight(Tensor::borrowed(tensor_.dtype(), {rows, shape[2]}, std::move(bytes)));
}

StoredWeights load_stored_weights(const Checkpoint& ckpt) {
  auto load = [&](const std::string& name) { return ckpt.load_stored(name); };
  // Matrices stay as stored where the stored matmul reads their dtype; the rest become f32.
  auto keep = [](const Tensor& t, Role role) {
    const bool matrix = t.rank() >= 2 && role != Role::Router;
    return StoredWeight(matrix && ops::stored_matmul_supports(t.dtype()) ? t : t.to(DType::F32));
  };
  auto slice = [](const StoredWeight& all, const Shape& shape, int64_t e, int64_t first, int64_t rows) {
    return all.slice(shape, e, first, rows);
  };
  return load_by_role<StoredWeight>(ckpt, load, keep, slice);
}

}  // namespace upcycle
