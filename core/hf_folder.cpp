#include "core/hf_folder.hpp"
#include "core/writer.hpp"
#include <stdexcept>
namespace upcycle {
std::unique_ptr<Checkpoint> open_hf_folder(const std::filesystem::path&) { throw std::logic_error("SCAFFOLD hf"); }
void write_hf_folder(const Checkpoint&, const std::filesystem::path&, const WriteOptions&) { throw std::logic_error("SCAFFOLD hf"); }
}
