#include "trainer/train.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "core/progress.hpp"
#include "core/random.hpp"
#include "data/instruction_data.hpp"
#include "formats/open_checkpoint.hpp"
#include "parallel/processes.hpp"
#include "trainer/batches.hpp"
#include "trainer/collapse_watch.hpp"
#include "trainer/eval_loss.hpp"
#include "trainer/lora_init.hpp"
#include "trainer/optimizer.hpp"
#include "trainer/run_state.hpp"
#include "trainer/selection_bias.hpp"
#include "trainer/tensorboard.hpp"

namespace upcycle {

namespace fs = std::filesystem;

namespace {

constexpr const char* kMetricsFile = "metrics.jsonl";
constexpr const char* kFinalFolder = "final";

// One optimizer step's figures, summed over its micro-batches.
struct StepStats {
  double ce_sum = 0, aux = 0, z = 0;
  int64_t counted = 0, tokens = 0;
  std::vector<std::vector<int64_t>> expert_tokens;  // [L][E]
  std::vector<double> entropy;                      // [L] Σ over routed tokens
  int64_t routed = 0;                               // tokens routed in each layer
  double loss() const { return counted ? ce_sum / double(counted) : 0.0; }
};

// Sums tokens routed and their [L][E] breakdown over the processes.
void sum_routing(Communicator& comm, int64_t& routed, std::vector<std::vector<int64_t>>& per_expert) {
  std::vector<int64_t> counts = {routed};
  for (const auto& layer : per_expert) counts.insert(counts.end(), layer.begin(), layer.end());
  comm.sum(std::span(counts));
  routed = counts[0];
  auto next = counts.begin() + 1;
  for (auto& layer : per_expert) {
    std::copy_n(next, layer.size(), layer.begin());
    next += std::ptrdiff_t(layer.size());
  }
}

// The processes' figures of one step summed (counted and tokens are the whole step's on each
// already: every process samples every micro-batch).
void sum_over_processes(Communicator& comm, StepStats& s) {
  std::vector<double> reals = {s.ce_sum, s.aux, s.z};
  reals.insert(reals.end(), s.entropy.begin(), s.entropy.end());
  comm.sum(std::span(reals));
  s.ce_sum = reals[0], s.aux = reals[1], s.z = reals[2];
  std::copy(reals.begin() + 3, reals.end(), s.entropy.begin());
  sum_routing(comm, s.routed, s.expert_tokens);
}

void add_routing(StepStats& s, const LossReport& r) {
  const auto& add = r.expert_tokens;
  if (s.expert_tokens.empty()) s.expert_tokens.assign(add.size(), std::vector<int64_t>(add.empty() ? 0 : add[0].size(), 0));
  for (size_t l = 0; l < add.size(); ++l)
    for (size_t e = 0; e < add[l].size(); ++e) s.expert_tokens[l][e] += add[l][e];
  s.entropy.resize(r.router_entropy.size(), 0.0);
  for (size_t l = 0; l < r.router_entropy.size(); ++l) s.entropy[l] += r.router_entropy[l];
  s.routed += r.routed;
}

// Refuses an output folder holding a run unless resuming or overwriting, so an earlier run's
// checkpoints are never mixed with this one's. The folder itself is made only once every input
// has been checked (create_out), so a refused run leaves nothing.
void check_out(const TrainOptions& o) {
  if (o.resume || o.overwrite) return;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(o.out, ec)) {
    const std::string name = entry.path().filename().string();
    require(name != kFinalFolder && name.rfind("step-", 0) != 0, o.out,
            "already holds a run (" + name + "): --resume DIR continues it, --overwrite starts over");
  }
}

void create_out(const fs::path& out) {
  std::error_code ec;
  fs::create_directories(out, ec);
  require(!ec, out, "cannot create the output folder: " + ec.message());
}

// The metrics of a resumed run keep the lines up to its step; a fresh run starts the file anew.
std::ofstream open_metrics(const fs::path& file, int64_t keep_up_to) {
  std::string kept;
  if (keep_up_to > 0) {
    std::ifstream in(file);
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.contains("step") && j["step"].is_number() && j["step"].get<int64_t>() <= keep_up_to)
        kept += line + "\n";
    }
  }
  std::ofstream out(file, std::ios::trunc);
  require(bool(out), file, "cannot write");
  out << kept;
  return out;
}

// The step's routing per MoE layer: each expert's share of the routed slots, the idlest and the
// busiest share relative to an even one (1/E), and the router's mean entropy per token (nats).
void add_routing_json(nlohmann::ordered_json& j, const StepStats& s) {
  nlohmann::json load = nlohmann::json::array(), idlest = nlohmann::json::array(), busiest = nlohmann::json::array(),
                 entropy = nlohmann::json::array();
  for (size_t l = 0; l < s.expert_tokens.size(); ++l) {
    const auto& counts = s.expert_tokens[l];
    int64_t total = 0;
    for (int64_t c : counts) total += c;
    nlohmann::json row = nlohmann::json::array();
    for (int64_t c : counts) row.push_back(total ? double(c) / double(total) : 0.0);
    const auto [lo, hi] = std::minmax_element(counts.begin(), counts.end());
    const double even = double(total) / double(std::max<size_t>(1, counts.size()));
    idlest.push_back(even > 0 ? double(*lo) / even : 0.0);
    busiest.push_back(even > 0 ? double(*hi) / even : 0.0);
    load.push_back(std::move(row));
    entropy.push_back(s.routed && l < s.entropy.size() ? s.entropy[l] / double(s.routed) : 0.0);
  }
  j["expert_load"] = std::move(load);
  j["load_idlest"] = std::move(idlest);
  j["load_busiest"] = std::move(busiest);
  j["router_entropy"] = std::move(entropy);
}

bool has_counted_token(const TokenizedData& data) {
  for (const TokenizedSample& s : data.samples)
    for (size_t t = 1; t < s.labels.size(); ++t)  // label 0 is never a target: nothing predicts it
      if (s.labels[t] != kIgnoreLabel) return true;
  return false;
}

// The most steps a run takes: more is a mistake (--epochs 1e12), not a plan.
constexpr int64_t kMaxSteps = 1'000'000'000;

// Steps for o.epochs passes: epoch 0's micro-batches over the accumulation, rounded up (past
// kMaxSteps: kMaxSteps + 1, never a cast that overflows).
int64_t steps_for_epochs(const TokenizedData& data, const TrainOptions& o, int64_t seq_len) {
  BatchSampler sampler(data, seq_len, o.batch_tokens, o.seed);
  int64_t micro = 0;
  for (; sampler.cursor().epoch == 0 && size_t(sampler.cursor().index) < data.samples.size(); ++micro) sampler.next();
  const double steps = std::ceil(o.epochs * double(micro) / double(o.grad_accum));
  return steps > double(kMaxSteps) ? kMaxSteps + 1 : int64_t(steps);
}

// Whether step (of `steps`) writes a checkpoint: every save_every steps, or with save_count = N
// at ceil(i * steps / N) for i = 1..N, the last being the final step (N checkpoints where
// steps >= N; a fixed interval of ceil(steps / N) gave fewer where N did not divide steps).
bool saves_at(int64_t step, int64_t steps, const TrainOptions& o) {
  if (o.save_count > 0) return step * o.save_count / steps > (step - 1) * o.save_count / steps;
  return o.save_every > 0 && step % o.save_every == 0;
}

class Trainer {
 public:
  Trainer(const TrainOptions& o, EngineFactory make);
  TrainResult run();

 private:
  StepStats accumulate();
  void log_step(int64_t step, const StepStats& s, double lr, double norm, double step_seconds);
  void save(const std::string& folder);
  // The model's weights as a checkpoint, recording a --template given by hand.
  // The template given by hand (--template other than auto), which saved checkpoints record.
  std::optional<std::string> chosen_template() const;
  std::unique_ptr<Checkpoint> weights_to_save() const;
  TokenizedData read_data(const fs::path& file);
  std::unique_ptr<Engine> lora_engine(EngineFactory make, bool resumed, int64_t& trained, std::string& what);
  void validate(int64_t step);
  void write_metrics(const nlohmann::ordered_json& j);
  void start_selection_bias();
  void count_step_routing(const std::vector<MicroBatch>& micro, LossOptions& lo);
  void check_processes() const;
  // This process's micro-batches of a step's n: [first, last), a contiguous share.
  std::pair<size_t, size_t> own_share(size_t n) const {
    return {n * size_t(comm_.rank()) / size_t(comm_.size()), n * size_t(comm_.rank() + 1) / size_t(comm_.size())};
  }
  bool lead() const { return comm_.rank() == 0; }  // the process that logs and writes

  const TrainOptions& o_;
  Communicator& comm_ = processes();
  AdamW* spread_ = nullptr;  // the engine's optimizer, over the processes when there are several
  int64_t seq_len_ = 0;  // model_seq_len
  std::unique_ptr<ChatEncoder> encoder_;  // loaded for the first text record
  TokenizedData data_, val_;
  fs::path model_path_;  // the checkpoint it starts from: the model, the resumed one, or a LoRA run's base
  std::unique_ptr<Checkpoint> source_;
  ModelConfig config_;
  RunState state_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<BatchSampler> sampler_;
  std::ofstream metrics_;
  fs::path last_saved_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  int64_t first_step_ = 1;
  int64_t end_ = 0;  // the last step of this invocation (--stop-at, else the run's last)
  CollapseWatch collapse_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;  // --tensorboard
};

Trainer::Trainer(const TrainOptions& o, EngineFactory make) : o_(o) {
  check_out(o);
  check_processes();
  const bool lora = o.lora.rank > 0 || o.adapter, lora_resume = o.resume && is_peft_adapter_folder(*o.resume);
  if (lora && o.resume && !lora_resume)
    throw InputError(*o.resume, "holds a model, not a LoRA run's adapter: resume a LoRA run from its step folder");
  if (lora_resume && o.model.empty())
    throw OptionError("model", option_name("resume") + " of a LoRA run needs " + option_name("model") + ", its base model");
  model_path_ = lora_resume || !o.resume ? o.model : *o.resume;
  source_ = open_checkpoint(model_path_);
  config_ = source_->config();
  if (o.aux_loss_coef) config_.router_aux_loss_coef = *o.aux_loss_coef;
  seq_len_ = model_seq_len(o.seq_len, config_);
  data_ = read_data(o.data);
  require(has_counted_token(data_), o.data, "no sample has a token that counts (every label is -100): nothing to learn");
  if (o.val_data) val_ = read_data(*o.val_data);
  else if (o.val_fraction > 0) val_ = split_off(data_, o.val_fraction, o.seed);
  const int64_t steps = o.steps > 0 ? o.steps : steps_for_epochs(data_, o, seq_len_);
  require(steps > 0, o.out, "the run needs a positive number of steps or epochs");
  if (steps > kMaxSteps)
    throw OptionError(o.steps > 0 ? "steps" : "epochs", fmt::format("{} makes {} steps, more than a run can take ({})",
                                                                    option_name(o.steps > 0 ? "steps" : "epochs"), steps,
                                                                    kMaxSteps));

  state_ = {0, {}, o.seed, int64_t(data_.samples.size()), steps, {}};
  if (o.stop_at > steps)
    throw OptionError("stop_at", fmt::format("{} {} lies past the run's last step ({})", option_name("stop_at"), o.stop_at,
                                             steps));
  end_ = o.stop_at ? o.stop_at : steps;
  if (o.resume) {
    const RunState saved = load_run_state(*o.resume);
    require(saved.samples == state_.samples, o.data,
            "holds " + std::to_string(state_.samples) + " samples, the resumed run had " + std::to_string(saved.samples));
    require(saved.seed == o.seed, *o.resume, "was trained with --seed " + std::to_string(saved.seed));
    // Each micro-batch takes at least one sample and never spans two epochs: a cursor past what
    // saved.step steps can reach is not this run's (it would change the data order silently).
    require(saved.cursor.index <= saved.samples && saved.cursor.epoch <= saved.step * o.grad_accum,
            *o.resume / kTrainerStateFile, "epoch and index",
            fmt::format("({}, {}) lie beyond where {} steps of {} micro-batches over {} samples can reach",
                        saved.cursor.epoch, saved.cursor.index, saved.step, o.grad_accum, saved.samples));
    require(saved.step < end_, *o.resume,
            fmt::format("is at step {}, and this run would stop at step {}: nothing to train (give more --steps or "
                        "--epochs, or a later --stop-at)",
                        saved.step, end_));
    if (saved.steps != steps)
      spdlog::warn("the resumed run planned {} steps, this one {}: the schedule differs from a straight run",
                   saved.steps, steps);
    for (const auto& t : source_->tensors())
      if (!lora_resume && t.dtype != DType::F32) {  // a LoRA run's base is frozen: its adapter is checked instead
        spdlog::warn("{} holds {} weights: the run resumes from rounded weights, not exactly", o.resume->string(),
                     dtype_name(t.dtype));
        break;
      }
    state_.step = saved.step;
    state_.cursor = saved.cursor;
    state_.selection_bias = saved.selection_bias;
    last_saved_ = *o.resume;
  }
  int64_t total = 0, trained = 0;
  std::string what;  // what trains, for the log
  if (lora || lora_resume) {
    engine_ = lora_engine(make, lora_resume, trained, what);
  } else {
    engine_ = load_training_engine(*source_, config_, make, TrainSetup{o.adam, o.frozen},
                                   o.precision.empty() ? std::nullopt : std::optional(parse_precision(o.precision)));
    if (o.frozen.any()) what = " (frozen: " + parts_string(o.frozen) + ")";
  }
  for (const ExpectedTensor& t : expected_tensors(config_, default_scheme(config_))) {
    total += *shape_elements(t.shape);
    if (!lora && !lora_resume && !o.frozen[size_t(role_info(t.id.role).part)]) trained += *shape_elements(t.shape);
  }
  // A LoRA-MoE over the dense base: its losses are an MoE's, balanced by its adapter's coefficient.
  if (engine_->config().is_moe() && !config_.is_moe()) config_ = engine_->config();
  start_selection_bias();
  if (comm_.size() > 1) {
    spread_ = engine_->host_optimizer();  // check_processes: the CPU's engines, which have one
    spread_->spread(comm_, o.shard_optimizer);
  }
  if (o.resume) {
    engine_->load_optimizer(*o.resume / kOptimizerFile);
    require(engine_->steps() == state_.step, *o.resume / kOptimizerFile, "its step count differs from the state's");
  }
  sampler_ = std::make_unique<BatchSampler>(data_, seq_len_, o.batch_tokens, o.seed);
  sampler_->seek(state_.cursor);
  if (lead()) {
    create_out(o.out);
    metrics_ = open_metrics(o.out / kMetricsFile, state_.step);
    if (o.tensorboard) tensorboard_ = std::make_unique<TensorBoardWriter>(*o.tensorboard);
  }
  first_step_ = state_.step + 1;

  spdlog::info("{} {} on {}: {} parameters, {} trained{}; {} samples{}, {} tokens per micro-batch x {}",
               config_.model_type, source_->path().string(), engine_->device(), total, trained, what,
               data_.samples.size(),
               val_.samples.empty() ? "" : fmt::format(" (+{} for validation)", val_.samples.size()), o.batch_tokens,
               o.grad_accum);
  if (spread_) {
    int64_t all = 0;
    const int64_t held = spread_->held_elements(&all);
    spdlog::info("data parallel over {} processes: {} micro-batches each per step, gradients summed in rank order, "
                 "{} sent by each process per step; AdamW's moments of {} of the {} trained parameters here{}",
                 comm_.size(), o.grad_accum / comm_.size(), format_bytes(spread_->bytes_sent_per_step()), held, all,
                 o.shard_optimizer ? " (sharded)" : "");
  }
}

// Several processes (mpirun -np N) share each step's micro-batches: the CPU's engines alone (the
// GPU's would need NCCL), and a step that splits evenly.
void Trainer::check_processes() const {
  const int n = comm_.size();
  if (n == 1) return;
  if (o_.device != "cpu")
    throw OptionError("device", fmt::format("{} {} runs in one process (this build has no NCCL); it was launched as {}",
                                            option_name("device"), o_.device, n));
  if (o_.grad_accum % n != 0)
    throw OptionError("grad_accum", fmt::format("{} {} does not split over {} processes: each takes an equal share of a "
                                                "step's micro-batches (give a multiple of {})",
                                                option_name("grad_accum"), o_.grad_accum, n, n));
}

// A LoRA run's engine on the device of `make`: the adapter of the step folder it resumes (its
// settings checked against the options given), the one --adapter gives, or a fresh one; on the
// frozen base. Its trained parameters and a description for the log go to `trained` and `what`.
std::unique_ptr<Engine> Trainer::lora_engine(EngineFactory make, bool resumed, int64_t& trained, std::string& what) {
  const LoraEngineFactory make_lora = make == make_cpu_engine ? nullptr : lora_engine_for(make);
  if (make != make_cpu_engine && !make_lora)
    throw OptionError("device", "LoRA training does not run on " + option_name("device") + " " + o_.device);
  LoraAdapter start;
  if (resumed) {
    start = read_peft_adapter(*o_.resume, config_);
    const LoraConfig& got = start.config;
    if (o_.lora.rank > 0) {
      const LoraConfig want = complete_lora_config(o_.lora, config_);
      require(want.rank == got.rank && want.alpha == got.alpha && want.target_modules == got.target_modules &&
                  want.use_rslora == got.use_rslora && want.dropout == got.dropout && want.experts == got.experts &&
                  want.top_k == got.top_k,
              *o_.resume / "adapter_config.json",
              "was trained with other LoRA settings (rank, alpha, targets, rsLoRA, dropout, experts, top-k) than "
              "these options give");
    }
    for (const LoraModule& m : start.modules)
      if (m.a.dtype() != DType::F32 || m.b.dtype() != DType::F32) {
        spdlog::warn("{} holds {} LoRA weights: the run resumes from rounded weights, not exactly",
                     o_.resume->string(), dtype_name(m.a.dtype() != DType::F32 ? m.a.dtype() : m.b.dtype()));
        break;
      }
  } else if (o_.adapter) {
    start = read_peft_adapter(*o_.adapter, config_);
  } else {
    start = init_lora_adapter(config_, complete_lora_config(o_.lora, config_), o_.seed);
  }
  start.config.base_model = o_.model.string();
  if (o_.aux_loss_coef) start.config.aux_loss_coef = *o_.aux_loss_coef;  // a LoRA-MoE's, kept in its folders
  trained = start.parameter_count();
  const LoraConfig& c = start.config;
  what = fmt::format(" (LoRA rank {}, alpha {:g}{}, dropout {:g} on {}{}; the base frozen)", c.rank, c.alpha,
                     c.use_rslora ? ", rsLoRA" : "", c.dropout, lora_targets_string(c.target_modules),
                     c.is_moe() ? fmt::format(", {} experts top-{}", c.experts, c.top_k) : "");
  if (make_lora) return make_lora(*source_, std::move(start), o_.adam);
  return make_cpu_lora_engine(*source_, std::move(start), o_.adam,
                              o_.precision.empty() ? Precision::F32 : parse_precision(o_.precision));
}

TokenizedData Trainer::read_data(const fs::path& file) {
  const fs::path text_source = o_.tokenizer ? *o_.tokenizer : model_path_;
  auto encoder = [&]() -> const ChatEncoder& {
    if (!encoder_) {
      encoder_ = load_chat_encoder(text_source, o_.chat_template, o_.adapter);
      spdlog::info("text data: {} template, {} tokenizer of {}", chat_format_name(encoder_->chat_template().format),
                   encoder_->tokenizer().description(), text_source.string());
    }
    return *encoder_;
  };
  return read_instruction_data(file, encoder, o_.skip_bad, config_);
}

StepStats Trainer::accumulate() {
  std::vector<MicroBatch> micro;
  StepStats s;
  for (int64_t a = 0; a < o_.grad_accum; ++a) {
    micro.push_back(sampler_->next());
    s.counted += micro.back().counted;
    s.tokens += int64_t(micro.back().targets.size());
  }
  LossOptions lo;
  lo.load_balancing = o_.balance == Balance::Loss;
  lo.selection_bias = state_.selection_bias;
  if (lo.load_balancing && o_.aux_loss == AuxLoss::GlobalBatch && micro.size() > 1 && config_.is_moe())
    count_step_routing(micro, lo);
  lo.z_loss_coef = o_.z_loss_coef;
  lo.aux_loss = o_.aux_loss;
  lo.recompute = o_.recompute;
  lo.normaliser = std::max<int64_t>(1, s.counted);
  lo.aux_scale = 1.0 / double(o_.grad_accum);
  engine_->zero_grads();
  const auto [first, last] = own_share(micro.size());
  for (size_t a = first; a < last; ++a) {
    const MicroBatch& mb = micro[a];
    lo.dropout_seed = Rng::stream(o_.seed, fmt::format("lora dropout {} {}", state_.step + 1, a)).next() | 1;
    const LossReport r = engine_->accumulate(mb.batch, mb.targets, lo);
    s.ce_sum += r.ce_sum;
    s.aux += r.aux * lo.aux_scale;
    s.z += r.z * lo.aux_scale;
    add_routing(s, r);
  }
  if (spread_) {
    spread_->sum_gradients();
    sum_over_processes(comm_, s);
  }
  return s;
}

void Trainer::log_step(int64_t step, const StepStats& s, double lr, double norm, double step_seconds) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  nlohmann::ordered_json j = {{"step", step},         {"loss", s.loss()},     {"aux_loss", s.aux},
                              {"z_loss", s.z},        {"lr", lr},             {"grad_norm", norm},
                              {"tokens", s.tokens},   {"counted", s.counted}, {"tokens_per_s", s.tokens / step_seconds},
                              {"epoch", state_.cursor.epoch + double(state_.cursor.index) / double(data_.samples.size())},
                              {"elapsed_s", elapsed}};
  std::string routing;
  if (config_.is_moe()) {
    add_routing_json(j, s);
    if (!state_.selection_bias.empty()) j["selection_bias"] = state_.selection_bias;
    collapse_.observe(step, s.expert_tokens);
    const auto& idlest = j["load_idlest"];
    routing = fmt::format("  aux {:.4f}  idlest {:.2f}", s.aux,
                          idlest.empty() ? 0.0 : std::min_element(idlest.begin(), idlest.end())->get<double>());
  }
  write_metrics(j);
  if (step % o_.log_every != 0 && step != end_) return;
  const double per_step = elapsed / double(step - first_step_ + 1);
  spdlog::info("step {}/{}  loss {:.4f}{}  lr {:.3g}  |g| {:.3g}  {:.0f} tok/s  ETA {}", step, state_.steps, s.loss(),
               routing, lr, norm, s.tokens / step_seconds,
               format_duration(per_step * double(end_ - step)));
}

// Global-batch balancing: a forward pass over every micro-batch of the step counts where its
// tokens go, so that each micro-batch's loss takes f from the whole step. (With one micro-batch
// the batch's own f is that already.)
void Trainer::count_step_routing(const std::vector<MicroBatch>& micro, LossOptions& lo) {
  LossOptions routing;
  routing.load_balancing = false;
  routing.selection_bias = lo.selection_bias;
  const auto [first, last] = own_share(micro.size());  // not empty: a step splits evenly
  for (size_t a = first; a < last; ++a) {
    const LossReport r = engine_->loss(micro[a].batch, micro[a].targets, routing);
    if (lo.balance_counts.empty()) lo.balance_counts.assign(r.expert_tokens.size(), std::vector<int64_t>(r.expert_tokens[0].size(), 0));
    for (size_t l = 0; l < r.expert_tokens.size(); ++l)
      for (size_t e = 0; e < r.expert_tokens[l].size(); ++e) lo.balance_counts[l][e] += r.expert_tokens[l][e];
    lo.balance_tokens += r.routed;
  }
  if (comm_.size() > 1) sum_routing(comm_, lo.balance_tokens, lo.balance_counts);
}

// --balance bias on an MoE: zeros for a fresh run, the saved bias for a resumed one (checked
// against the model's shape).
void Trainer::start_selection_bias() {
  if (o_.balance != Balance::Bias) {
    if (!state_.selection_bias.empty())
      throw InputError(*o_.resume, "was trained with --balance bias: resume it with --balance bias");
    return;
  }
  require(config_.is_moe(), o_.resume ? *o_.resume : o_.model, "--balance bias balances an MoE's experts; this model is dense");
  const auto L = size_t(config_.num_hidden_layers), E = size_t(config_.num_local_experts);
  if (state_.selection_bias.empty()) state_.selection_bias.assign(L, std::vector<float>(E, 0.f));
  bool shaped = state_.selection_bias.size() == L;
  for (const auto& b : state_.selection_bias) shaped = shaped && b.size() == E;
  require(shaped, o_.resume ? *o_.resume / kTrainerStateFile : o_.model, "the selection bias is not [layers][experts]");
}

// A line of metrics.jsonl, and with --tensorboard its numbers as scalars: "loss", "val_loss",
// per layer "load_idlest/layer0", per layer and expert "expert_load/layer0/expert3".
void Trainer::write_metrics(const nlohmann::ordered_json& j) {
  if (!lead()) return;
  metrics_ << j.dump() << "\n" << std::flush;
  if (!tensorboard_) return;
  std::vector<std::pair<std::string, double>> scalars;
  for (const auto& [key, value] : j.items()) {
    if (key == "step") continue;
    if (value.is_number()) scalars.emplace_back(key, value.get<double>());
    if (!value.is_array()) continue;
    for (size_t l = 0; l < value.size(); ++l) {
      const std::string layer = fmt::format("{}/layer{}", key, l);
      if (value[l].is_number()) scalars.emplace_back(layer, value[l].get<double>());
      for (size_t e = 0; value[l].is_array() && e < value[l].size(); ++e)
        scalars.emplace_back(fmt::format("{}/expert{}", layer, e), value[l][e].get<double>());
    }
  }
  tensorboard_->scalars(j.at("step").get<int64_t>(), scalars);
}

void Trainer::validate(int64_t step) {
  EvalLoss e = evaluate_loss(*engine_, val_, seq_len_, o_.batch_tokens, {}, comm_.rank(), comm_.size());
  if (comm_.size() > 1) {  // each process took its share of the micro-batches
    comm_.sum(std::span(&e.ce_sum, 1));
    std::array<int64_t, 2> counts = {e.tokens, e.samples};
    comm_.sum(std::span(counts));
    e.tokens = counts[0], e.samples = counts[1];
  }
  const nlohmann::ordered_json j = {
      {"step", step}, {"val_loss", e.loss()}, {"val_ppl", e.ppl()}, {"val_tokens", e.tokens}};
  write_metrics(j);
  spdlog::info("step {}: validation loss {:.4f}, perplexity {:.3f} over {} tokens", step, e.loss(), e.ppl(), e.tokens);
}

std::optional<std::string> Trainer::chosen_template() const {
  if (!encoder_ || o_.chat_template == "auto") return std::nullopt;
  return chat_format_name(encoder_->chat_template().format);
}

std::unique_ptr<Checkpoint> Trainer::weights_to_save() const {
  std::unique_ptr<Checkpoint> weights = engine_->checkpoint(source_.get());
  if (const auto chosen = chosen_template()) return with_chosen_template(std::move(weights), *chosen);
  return weights;
}

// The lead process writes (the others sending it their shares of sharded moments meanwhile),
// then the others wait for it at the next step's sums.
void Trainer::save(const std::string& folder) {
  const fs::path dir = o_.out / folder;
  if (spread_) spread_->serve_save();
  if (lead()) {
    if (const auto adapter = engine_->trained_adapter())
      save_adapter_checkpoint(dir, *adapter, o_.save_dtype, *engine_, state_, chosen_template());
    else
      save_checkpoint(dir, *weights_to_save(), o_.save_dtype, *engine_, state_);
    if (!o_.keep_all_states && !last_saved_.empty() && fs::absolute(last_saved_) != fs::absolute(dir))
      drop_optimizer_state(last_saved_);
    spdlog::info("saved {}", dir.string());
  }
  last_saved_ = dir;
}

TrainResult Trainer::run() {
  LrSchedule schedule = o_.schedule;
  schedule.total = state_.steps;
  TrainResult result{state_.step, 0, {}};
  for (int64_t step = state_.step + 1; step <= end_; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const StepStats s = accumulate();
    const double norm = engine_->clip(o_.clip);
    const double loss = s.loss() + s.aux + s.z;
    if (!std::isfinite(loss) || !std::isfinite(norm))
      throw std::runtime_error(fmt::format("step {}: the {} is {} (nothing of this step was saved{})", step,
                                           std::isfinite(loss) ? "gradient norm" : "loss",
                                           std::isnan(std::isfinite(loss) ? norm : loss) ? "NaN" : "infinite",
                                           last_saved_.empty() ? "" : "; the last checkpoint is " + last_saved_.string()));
    const double lr = schedule.at(step);
    engine_->step(lr);
    if (!state_.selection_bias.empty()) nudge_selection_bias(state_.selection_bias, s.expert_tokens, o_.bias_rate);
    state_.step = step;
    state_.cursor = sampler_->cursor();
    log_step(step, s, lr, norm, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    result = {step, s.loss(), last_saved_};
    if (!val_.samples.empty() && ((o_.eval_every > 0 && step % o_.eval_every == 0) || step == end_)) validate(step);
    if (saves_at(step, state_.steps, o_) && step != end_) save(step_folder_name(step));
  }
  if (state_.step == end_ && first_step_ <= end_) save(end_ == state_.steps ? kFinalFolder : step_folder_name(end_));
  result.checkpoint = last_saved_;
  return result;
}

}  // namespace

TrainResult train(const TrainOptions& opts, EngineFactory make) {
  set_peer_timeout(std::chrono::seconds(opts.timeout));
  return Trainer(opts, make ? make : engine_for_device(opts.device)).run();
}

}  // namespace upcycle
