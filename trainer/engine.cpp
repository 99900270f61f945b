#include "trainer/engine.hpp"

namespace upcycle {

std::unique_ptr<Engine> load_engine(const Checkpoint& ckpt, EngineFactory make, std::optional<TrainSetup> training) {
  return make({ckpt.config(), load_weights<float>(ckpt), ckpt.path(), std::move(training)});
}

}  // namespace upcycle
