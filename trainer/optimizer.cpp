#include "trainer/optimizer.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <stdexcept>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/random.hpp"
#include "formats/safetensors.hpp"

namespace upcycle {

namespace {

const char* const kSteps = "adamw_steps";

DType slot_dtype(const MomentSlot& s) { return s.m16 ? DType::BF16 : DType::F32; }

// What to do about moments stored as `got` that this run does not hold.
std::string moments_hint(DType got) {
  if (got == DType::BF16) return ": resume with --bf16-moments, as the run was";
  if (got == DType::F32) return ": resume without --bf16-moments, as the run was";
  return " (this tool writes them in f32, or in bf16 under --bf16-moments)";
}

// Bytes the caller keeps alive while they are read.
std::shared_ptr<const std::byte> unowned(std::span<const std::byte> bytes) {
  return {bytes.data(), [](const std::byte*) {}};
}

std::vector<MomentSlot> model_slots(Weights<float>& m, Weights<float>& v, const ModelConfig& config) {
  std::vector<MomentSlot> slots;
  auto pm = parameters(m, config), pv = parameters(v, config);
  for (size_t i = 0; i < pm.size(); ++i)
    if (!pm[i].values->empty()) slots.push_back({pm[i].tensor.name, pm[i].tensor.shape, pm[i].values, pv[i].values});
  return slots;
}

}  // namespace

std::vector<TrainedTensor> trained_tensors(Weights<float>& weights, Weights<float>& grads, const ModelConfig& config,
                                           Weights<uint16_t>* bf16_copies) {
  std::vector<TrainedTensor> out;
  auto w = parameters(weights, config), g = parameters(grads, config);
  std::vector<Parameter<uint16_t>> copies;
  if (bf16_copies) copies = parameters(*bf16_copies, config);
  for (size_t i = 0; i < w.size(); ++i) {
    if (g[i].values->empty()) continue;
    out.push_back({w[i].tensor.name, w[i].tensor.shape, *w[i].values, *g[i].values, decays(w[i].tensor.id.role)});
    if (!copies.empty() && !copies[i].values->empty()) {
      if (copies[i].values->size() != w[i].values->size())
        throw std::logic_error("trained_tensors: " + w[i].tensor.name + "'s bf16 copy has another size");
      out.back().bf16_copy = *copies[i].values;
    }
  }
  return out;
}

AdamW::AdamW(std::vector<TrainedTensor> tensors, const ops::AdamWConfig& hyper)
    : tensors_(std::move(tensors)), hyper_(hyper) {
  m_.resize(tensors_.size()), v_.resize(tensors_.size()), m16_.resize(tensors_.size()), v16_.resize(tensors_.size());
  for (const TrainedTensor& t : tensors_)
    if (t.values.size() != t.grad.size()) throw std::logic_error("AdamW: " + t.name + "'s gradient has another size");
}

// The moments are made at the first step, save or load, so that a sharded optimizer never
// touches the pages of the moments it does not own (a heap that is never trimmed would keep them).
void AdamW::place() {
  if (placed_) return;
  placed_ = true;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (!owns(i)) continue;
    const size_t n = tensors_[i].values.size();
    if (hyper_.bf16_moments) m16_[i].assign(n, 0), v16_[i].assign(n, 0);
    else m_[i].assign(n, 0.0f), v_[i].assign(n, 0.0f);
  }
}

// Tensor i's two moments as bytes (bf16 or f32, as held).
std::array<std::span<std::byte>, 2> AdamW::moment_bytes(size_t i) {
  if (hyper_.bf16_moments) return {std::as_writable_bytes(std::span(m16_[i])), std::as_writable_bytes(std::span(v16_[i]))};
  return {std::as_writable_bytes(std::span(m_[i])), std::as_writable_bytes(std::span(v_[i]))};
}

std::vector<std::span<float>> AdamW::grads() const {
  std::vector<std::span<float>> out;
  for (const TrainedTensor& t : tensors_) out.push_back(t.grad);
  return out;
}

std::vector<std::span<float>> AdamW::values() const {
  std::vector<std::span<float>> out;
  for (const TrainedTensor& t : tensors_) out.push_back(t.values);
  return out;
}

void AdamW::spread(Communicator& comm, bool sharded) {
  if (placed_) throw std::logic_error("AdamW::spread after the moments were made");
  comm_ = &comm;
  sharded_ = sharded && comm.size() > 1;
  if (!sharded_) return;
  const auto size = size_t(comm.size());
  size_t total = 0;
  for (const TrainedTensor& t : tensors_) total += t.values.size();
  // A tensor belongs to the process whose even share of the elements holds its first element;
  // the owners' runs are then whole tensors, in order.
  owner_.clear();
  bounds_.assign(size + 1, total);
  bounds_[0] = 0;
  size_t at = 0, rank = 0;
  for (const TrainedTensor& t : tensors_) {
    owner_.push_back(int(std::min(size - 1, at * size / std::max<size_t>(1, total))));
    while (rank < size_t(owner_.back())) bounds_[++rank] = at;
    at += t.values.size();
  }
}

void AdamW::sum_gradients() {
  if (!comm_) return;
  if (sharded_) sum_spans_to_owners(*comm_, grads(), bounds_);
  else sum_spans(*comm_, grads());
}

double AdamW::bytes_sent_per_step() const {
  if (!comm_) return 0;
  double n = 0;
  for (const TrainedTensor& t : tensors_) n += double(t.values.size());
  // Unsharded: every chunk's values to its owner, its sum back. Sharded: the same, the sums'
  // place taken by the updated values.
  return 2.0 * double(comm_->size() - 1) / double(comm_->size()) * n * sizeof(float);
}

int64_t AdamW::held_elements(int64_t* total) const {
  int64_t held = 0, all = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    all += int64_t(tensors_[i].values.size());
    if (owns(i)) held += int64_t(tensors_[i].values.size());
  }
  if (total) *total = all;
  return held;
}

void AdamW::serve_save() {
  if (!sharded_ || comm_->rank() == 0) return;
  place();
  for (const int second : {0, 1})  // in the order save() writes them: every m, then every v
    for (size_t i = 0; i < tensors_.size(); ++i)
      if (owns(i)) comm_->send(0, moment_bytes(i)[size_t(second)]);
}

void AdamW::save(const std::filesystem::path& file) {
  place();
  if (!sharded_) {
    save_moments(file, slots(), steps_);
    return;
  }
  // Every tensor's moments, this process's from memory and the others' as their owners send
  // them (serve_save), one tensor at a time: the file a single process would write.
  const DType dtype = hyper_.bf16_moments ? DType::BF16 : DType::F32;
  std::vector<TensorInfo> infos;
  for (const char* prefix : {"exp_avg.", "exp_avg_sq."})
    for (const TrainedTensor& t : tensors_) infos.push_back({prefix + t.name, dtype, t.shape});
  SafetensorsWriter writer(file, infos, {{kSteps, std::to_string(steps_)}});
  for (const int second : {0, 1})
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorInfo& info = infos[size_t(second) * tensors_.size() + i];
      if (owns(i)) {
        writer.write(Tensor::borrowed(dtype, info.shape, unowned(moment_bytes(i)[size_t(second)])));
        continue;
      }
      auto bytes = std::make_shared<std::vector<std::byte>>(tensors_[i].values.size() * (hyper_.bf16_moments ? 2 : 4));
      comm_->receive(owner_[i], *bytes);
      writer.write(Tensor::borrowed(dtype, info.shape, std::shared_ptr<const std::byte>(bytes, bytes->data())));
    }
  writer.finish();
}

void AdamW::zero_grads() {
  for (const TrainedTensor& t : tensors_) std::fill(t.grad.begin(), t.grad.end(), 0.0f);
  grad_scale_ = 1;
}

double AdamW::clip(double max_norm) {
  std::vector<std::span<const float>> grads;
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (owns(i)) grads.push_back(tensors_[i].grad);
  double norm = ops::global_norm<float>(grads);
  if (sharded_) {  // each process knows its own tensors' sums alone
    double squares = norm * norm;
    comm_->sum(std::span(&squares, 1));
    norm = std::sqrt(squares);
  }
  grad_scale_ = max_norm > 0 ? float(ops::clip_scale(norm, max_norm)) : 1.0f;
  return norm;
}

void AdamW::step(double lr) {
  place();
  ++steps_;
  ops::AdamWConfig hyper = hyper_;
  hyper.lr = lr;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (!owns(i)) continue;
    const TrainedTensor& t = tensors_[i];
    uint16_t* copy = t.bf16_copy.empty() ? nullptr : t.bf16_copy.data();
    const auto n = int64_t(t.values.size());
    if (hyper_.bf16_moments)
      ops::adamw_step_bf16_moments(t.values.data(), t.grad.data(), m16_[i].data(), v16_[i].data(), n, hyper, steps_,
                                   t.decay, grad_scale_, copy, Rng::stream(uint64_t(steps_), std::to_string(i)).next());
    else
      ops::adamw_step(t.values.data(), t.grad.data(), m_[i].data(), v_[i].data(), n, hyper, steps_, t.decay,
                      grad_scale_, copy);
  }
  if (!sharded_) return;
  gather_spans_from_owners(*comm_, values(), bounds_);
  for (size_t i = 0; i < tensors_.size(); ++i) {  // the copies the owners' updates made, made here
    const TrainedTensor& t = tensors_[i];
    if (owns(i) || t.bf16_copy.empty()) continue;
#pragma omp parallel for schedule(static)
    for (size_t e = 0; e < t.values.size(); ++e) t.bf16_copy[e] = f32_to_bf16(t.values[e]);
  }
}

std::vector<MomentSlot> AdamW::slots() {
  place();
  std::vector<MomentSlot> out;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (!owns(i)) continue;
    if (hyper_.bf16_moments)
      out.push_back({tensors_[i].name, tensors_[i].shape, nullptr, nullptr, &m16_[i], &v16_[i]});
    else
      out.push_back({tensors_[i].name, tensors_[i].shape, &m_[i], &v_[i]});
  }
  return out;
}

void save_moments(const std::filesystem::path& file, std::span<const MomentSlot> slots, int64_t steps) {
  std::vector<TensorInfo> infos;
  std::vector<std::span<const std::byte>> data;
  for (auto [prefix, second] : {std::pair{"exp_avg.", false}, std::pair{"exp_avg_sq.", true}})
    for (const MomentSlot& s : slots) {
      infos.push_back({prefix + s.name, slot_dtype(s), s.shape});
      if (s.m16) data.push_back(std::as_bytes(std::span(second ? *s.v16 : *s.m16)));
      else data.push_back(std::as_bytes(std::span(second ? *s.v : *s.m)));
    }
  SafetensorsWriter writer(file, infos, {{kSteps, std::to_string(steps)}});
  for (size_t i = 0; i < infos.size(); ++i) writer.write(Tensor::borrowed(infos[i].dtype, infos[i].shape, unowned(data[i])));
  writer.finish();
}

int64_t load_moments(const std::filesystem::path& file, std::span<const MomentSlot> slots, bool others) {
  const SafetensorsFile f = SafetensorsFile::open(file);
  std::map<std::string, const SafetensorsEntry*> by_name;
  for (const auto& e : f.entries()) by_name[e.info.name] = &e;
  for (auto [prefix, squares] : {std::pair{"exp_avg.", false}, std::pair{"exp_avg_sq.", true}})
    for (const MomentSlot& slot : slots) {
      const std::string name = prefix + slot.name;
      const auto it = by_name.find(name);
      const std::string where = "tensor '" + name + "'";
      require(it != by_name.end(), file, where, "missing (was the run frozen differently?)");
      // A run resumes with the moments' dtype it saved: rounded or widened moments would not
      // continue it exactly.
      const DType want = slot_dtype(slot);
      const DType got = it->second->info.dtype;
      require(got == want, file, where,
              "stored as " + std::string(dtype_name(got)) + ", but this run's optimizer moments are " +
                  std::string(dtype_name(want)) + moments_hint(got));
      const Tensor t = f.load(*it->second);
      require(t.shape() == slot.shape, file, where, "shape differs from the model's");
      const std::vector<float> values = t.to_f32_vector();
      require(std::all_of(values.begin(), values.end(), [&](float x) { return std::isfinite(x) && (!squares || x >= 0); }),
              file, where, squares ? "holds a negative or non-finite value" : "holds a non-finite value");
      if (slot.m16) {
        const auto bits = t.span<uint16_t>();
        (squares ? slot.v16 : slot.m16)->assign(bits.begin(), bits.end());
      } else {
        (squares ? slot.v : slot.m)->assign(values.begin(), values.end());
      }
      by_name.erase(it);
    }
  require(others || by_name.empty(), file, "tensor '" + (by_name.empty() ? "" : by_name.begin()->first) + "'",
          "not a moment of this model's trained parameters (" + std::to_string(by_name.size()) +
              " such; was the run frozen differently?)");
  auto steps = f.metadata().find(kSteps);
  require(steps != f.metadata().end(), file, std::string("no '") + kSteps + "' in the metadata");
  const std::string& text = steps->second;
  require(!text.empty() && text.find_first_not_of("0123456789") == std::string::npos && text.size() < 16, file,
          std::string("'") + kSteps + "' is not a step count: '" + text + "'");
  return std::stoll(text);
}

void save_moments(const std::filesystem::path& file, Weights<float>& m, Weights<float>& v, const ModelConfig& config,
                  int64_t steps) {
  save_moments(file, model_slots(m, v, config), steps);
}

int64_t load_moments(const std::filesystem::path& file, Weights<float>& m, Weights<float>& v,
                     const ModelConfig& config) {
  return load_moments(file, model_slots(m, v, config));
}

}  // namespace upcycle
