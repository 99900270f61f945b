// fp32 weights by role (trainer/weights.hpp) as a checkpoint laid out like another: the way back
// from load_weights. A stage that loads a checkpoint whole, changes some of its weights and
// writes it (the router stage) writes those weights with the first one's tensor names, order,
// dtypes, config, side files and generated files, and holds no second copy of the model: a
// tensor listed as f32 is a view of its buffer, a fused expert tensor is made a range at a time
// from the experts' buffers, and a tensor listed in another dtype is converted when loaded, one
// tensor at a time.
#pragma once
#include <memory>

#include "core/checkpoint.hpp"
#include "trainer/weights.hpp"

namespace upcycle {

// `weights` are read when a tensor is loaded, so they may change in between, keeping the sizes
// load_weights(like) gave them (std::logic_error naming the tensor otherwise); the view keeps
// them alive. std::invalid_argument when a tensor of `like` has a name of no role.
std::unique_ptr<Checkpoint> checkpoint_like(const Checkpoint& like, std::shared_ptr<Weights<float>> weights);

}  // namespace upcycle
