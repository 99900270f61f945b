// `upcycle bench`: the machine's matmul ceiling, then forward and training throughput of two
// standard shapes measured in the same run: dense with SmolLM2-135M's shape and an MoE of the
// same shape with 4 experts top-2. Ratios to the ceiling are the figures to compare. And the
// matrix-vector product of decoding on weights in each stored dtype, against the f32 path.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/memory_info.hpp"
#include "core/random.hpp"
#include "experiments/router_stage_bench.hpp"
#include "formats/model_presets.hpp"
#include "formats/random_init.hpp"
#include "trainer/engine.hpp"
#include "trainer/flops.hpp"
#include "trainer/lora_init.hpp"
#include "trainer/model.hpp"
#include "trainer/ops/bf16_matmul.hpp"
#include "trainer/ops/matmul.hpp"
#include "trainer/ops/stored_matmul.hpp"
#include "trainer/optimizer.hpp"
#include "trainer/stored_model.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"
#include "upcycle/cuda_plugin.hpp"

namespace upcycle {

namespace {

struct BenchOptions {
  int64_t seq_len = 256, batch = 4, steps = 3, warmup = 1;
};

// Seconds per call of fn: `warmup` untimed calls, then the mean of `steps` timed ones.
double seconds_per_call(const BenchOptions& o, const std::function<void()>& fn) {
  for (int64_t i = 0; i < o.warmup; ++i) fn();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < o.steps; ++i) fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / double(o.steps);
}

// GFLOP/s of an n×n×n product: the best of three calls of `product` after one that warms up.
double cube_gflops(int64_t n, const std::function<void()>& product) {
  double best = 1e30;
  for (int i = 0; i < 4; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    product();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i > 0) best = std::min(best, s);
  }
  return 2.0 * double(n) * double(n) * double(n) / best / 1e9;
}

// The ceiling: the product through the same matmul op the model uses (ops::f32_product).
double sgemm_gflops(int64_t n) {
  Rng rng(1);
  std::vector<float> a(size_t(n * n)), b(size_t(n * n)), c(size_t(n * n));
  for (auto* v : {&a, &b})
    for (float& x : *v) x = float(rng.uniform() - 0.5);
  return cube_gflops(n, [&] { ops::matmul_forward<float>(c.data(), a.data(), b.data(), nullptr, n, n, n); });
}

// Decoding's product, one token against a weight too large for any cache (8192 x 4096): the f32
// matmul the model runs today, then ops::stored_matmul_forward on the same values stored as f32,
// bf16, f16 and Q8_0 (each value's q the f32 value's scaled and rounded; only the bytes matter
// here). Milliseconds per product, the weight bytes read per second, and each one's speed-up
// over the f32 matmul.
nlohmann::ordered_json bench_matvec(const BenchOptions& o) {
  const int64_t O = 8192, I = 4096;
  Rng rng(3);
  std::vector<float> w(static_cast<size_t>(O * I)), x(static_cast<size_t>(I)), y(static_cast<size_t>(O));
  for (float& v : w) v = float(rng.uniform() - 0.5);
  for (float& v : x) v = float(rng.uniform() - 0.5);
  BenchOptions many = o;
  many.steps = std::max<int64_t>(o.steps, 20);
  nlohmann::ordered_json j;
  j["matvec_shape"] = {O, I};
  const double f32_s = seconds_per_call(many, [&] { ops::matmul_forward<float>(y.data(), x.data(), w.data(), nullptr, 1, I, O); });
  j["matvec_ms_f32_matmul"] = 1e3 * f32_s;
  for (DType t : {DType::F32, DType::BF16, DType::F16, DType::Q8_0}) {
    std::vector<std::byte> bytes(*dtype_bytes(t, w.size()));
    if (t == DType::Q8_0) {
      for (size_t b = 0; b < w.size() / 32; ++b) {  // d = 1/254 (0.5 / 127), q = round(254 x)
        const uint16_t d = f32_to_f16(1.0f / 254);
        std::memcpy(&bytes[b * 34], &d, 2);
        for (size_t i = 0; i < 32; ++i) bytes[b * 34 + 2 + i] = std::byte(uint8_t(int8_t(std::lround(254 * w[b * 32 + i]))));
      }
    } else {
      convert(DType::F32, w.data(), t, bytes.data(), w.size());
    }
    const ops::StoredMatrix W{t, bytes.data(), O, I};
    const double s = seconds_per_call(many, [&] { ops::stored_matmul_forward(y.data(), x.data(), W, nullptr, 1); });
    const std::string name(dtype_name(t));
    j["matvec_ms_" + name] = 1e3 * s;
    j["matvec_gb_per_s_" + name] = double(bytes.size()) / s / 1e9;
    j["matvec_speedup_" + name] = f32_s / s;
    spdlog::info("matvec {}x{} {}: {:.2f} ms ({:.1f} GB/s), {:.2f}x the f32 matmul's {:.2f} ms", O, I, name, 1e3 * s,
                 double(bytes.size()) / s / 1e9, f32_s / s, 1e3 * f32_s);
  }
  return j;
}

// The same product in bf16 with f32 sums (ops::bf16_matmul_forward, oneDNN): the bf16 path's
// ceiling.
double bf16_gemm_gflops(int64_t n) {
  Rng rng(1);
  std::vector<uint16_t> a(static_cast<size_t>(n * n)), b(static_cast<size_t>(n * n));
  std::vector<float> c(static_cast<size_t>(n * n));
  for (auto* v : {&a, &b})
    for (uint16_t& x : *v) x = f32_to_bf16(float(rng.uniform() - 0.5));
  return cube_gflops(n, [&] { ops::bf16_matmul_forward(c.data(), a.data(), b.data(), n, n, n); });
}

struct ModelFigures {
  double forward_tokens_per_s = 0, train_tokens_per_s = 0, train_gflops = 0;
  double bf16_forward_tokens_per_s = 0;  // the inference model in --precision bf16
  double bf16_train_tokens_per_s = 0;    // tune --precision bf16's engine
  double forward_peak_rss_mb = 0;  // the process's peak once the forward ran (alone with --only)
};

// --batch sequences of --seq-len random tokens, each predicting the next.
struct TokenBatch {
  Batch batch;
  std::vector<int32_t> targets;
  double tokens() const { return double(targets.size()); }
};
TokenBatch random_batch(const ModelConfig& c, const BenchOptions& o) {
  Rng rng(2);
  std::vector<std::vector<int32_t>> seqs(size_t(o.batch));
  std::vector<int32_t> targets;
  for (auto& s : seqs) {
    for (int64_t t = 0; t < o.seq_len; ++t) s.push_back(int32_t(rng.below(uint64_t(c.vocab_size))));
    for (int64_t t = 0; t < o.seq_len; ++t) targets.push_back(t + 1 < o.seq_len ? s[size_t(t + 1)] : -100);
  }
  return {pack(seqs), std::move(targets)};
}

// One training step of `engine` (zero, forward and backward, clip, AdamW).
void train_step(Engine& engine, const TokenBatch& b, const LossOptions& opts = {}) {
  engine.zero_grads();
  engine.accumulate(b.batch, b.targets, opts);
  engine.clip(1.0);
  engine.step(1e-5);
}

ModelFigures bench_model(const std::string& label, const ModelConfig& c, const BenchOptions& o) {
  spdlog::info("{}: {} layers, hidden {}, {} experts; {} x {} tokens per step", label, c.num_hidden_layers,
               c.hidden_size, c.num_local_experts, o.batch, o.seq_len);
  const auto ckpt = random_init(c, 1);
  Transformer<float> model(*ckpt);
  const TokenBatch b = random_batch(c, o);
  const Batch& batch = b.batch;
  const std::vector<int32_t>& targets = b.targets;
  const double tokens = b.tokens();

  ModelFigures f;
  f.forward_tokens_per_s = tokens / seconds_per_call(o, [&] { model.loss(batch, targets); });
  f.forward_peak_rss_mb = peak_rss_mb();
  spdlog::info("{}: forward {:.0f} tokens/s, peak RSS {:.0f} MiB", label, f.forward_tokens_per_s, f.forward_peak_rss_mb);
  {
    const StoredModel bf16(c, load_stored_weights(*ckpt, Precision::BF16), ckpt->path());
    f.bf16_forward_tokens_per_s = tokens / seconds_per_call(o, [&] { bf16.loss(batch, targets); });
    spdlog::info("{}: bf16 forward {:.0f} tokens/s", label, f.bf16_forward_tokens_per_s);
  }
  Weights<float> grads = zeros_like(model.weights(), c);
  AdamW optimizer(trained_tensors(model.weights(), grads, c), {});
  const double step_s = seconds_per_call(o, [&] {
    optimizer.zero_grads();
    model.loss_and_grad(batch, targets, grads);
    optimizer.clip(1.0);
    optimizer.step(1e-5);
  });
  f.train_tokens_per_s = tokens / step_s;
  f.train_gflops = f.train_tokens_per_s * train_flops_per_token(c, o.seq_len) / 1e9;
  spdlog::info("{}: training {:.0f} tokens/s, {:.1f} GFLOP/s ({:.2f} s per step)", label, f.train_tokens_per_s,
               f.train_gflops, step_s);
  {  // every product in bf16 on oneDNN, on bf16 copies AdamW keeps; f32 masters and moments
    const auto bf16 = load_training_engine(*ckpt, c, make_cpu_engine, TrainSetup{}, Precision::BF16);
    f.bf16_train_tokens_per_s = tokens / seconds_per_call(o, [&] { train_step(*bf16, b); });
    spdlog::info("{}: bf16 training {:.0f} tokens/s", label, f.bf16_train_tokens_per_s);
  }
  return f;
}

// tune --lora-rank's engine on a dense model of `shape` (a preset of upcycle init, random
// weights), every module it has adapted at the rank `asked` gives (a LoRA-MoE with its experts):
// training tokens/s in each precision (bf16 converts the base when loaded) and the process's
// peak RSS. A LoRA-MoE's keys say lora_moe where a LoRA's say lora. With `recompute`, tune
// --recompute's steps (one layer's activations held).
nlohmann::ordered_json bench_lora(const BenchOptions& o, const std::string& shape, const LoraConfig& asked,
                                  const std::vector<Precision>& precisions, bool recompute) {
  const auto preset = preset_config(shape);
  if (!preset) throw UsageError("--lora-shape: '" + shape + "' is not a preset of upcycle init");
  const ModelConfig c = ModelConfig::from_json(*preset, shape);
  const LoraConfig config = complete_lora_config(asked, c);
  const LoraAdapter start = init_lora_adapter(c, config, 1);
  const int64_t trained = start.parameter_count();
  const std::string kind = config.is_moe() ? "lora_moe" : "lora";
  const int64_t rank = config.rank;
  const auto ckpt = random_init(c, 1);
  const TokenBatch b = random_batch(c, o);
  nlohmann::ordered_json j = {{"lora_shape", shape},
                              {"lora_rank", rank},
                              {"lora_targets", lora_targets_string(config.target_modules)},
                              {"lora_experts", config.experts},
                              {"lora_top_k", config.top_k},
                              {kind + "_trained_parameters", trained},
                              {"seq_len", o.seq_len},
                              {"batch", o.batch},
                              {"recompute", recompute}};
  spdlog::info("LoRA{} on {} ({} layers, hidden {}): rank {} on {}, {} trained parameters; {} x {} tokens per step",
               config.is_moe() ? fmt::format("-MoE of {} experts top-{}", config.experts, config.top_k) : "", shape,
               c.num_hidden_layers, c.hidden_size, rank, lora_targets_string(config.target_modules), trained, o.batch,
               o.seq_len);
  for (const Precision p : precisions) {
    const std::string prefix = p == Precision::BF16 ? "bf16_" : "";
    const auto engine = make_cpu_lora_engine(*ckpt, start, {}, p);
    LossOptions opts;
    opts.recompute = recompute;
    const double s = seconds_per_call(o, [&] { train_step(*engine, b, opts); });
    j[prefix + kind + "_train_tokens_per_s"] = b.tokens() / s;
    j[prefix + kind + "_step_s"] = s;
    spdlog::info("LoRA training in {}: {:.1f} tokens/s ({:.2f} s per step), peak RSS so far {:.0f} MiB",
                 precision_name(p), b.tokens() / s, s, peak_rss_mb());
  }
  j[kind + "_peak_rss_mb"] = peak_rss_mb();
  return j;
}

ModelConfig bench_config(bool moe) {
  auto j = *preset_config("smollm2-135m");
  if (moe) {
    j["model_type"] = "mixtral";
    j["architectures"] = {"MixtralForCausalLM"};
    j["num_local_experts"] = 4;
    j["num_experts_per_tok"] = 2;
  }
  return ModelConfig::from_json(j, moe ? "bench moe" : "bench dense");
}

nlohmann::ordered_json run_cuda_bench(const BenchOptions& o, int64_t gemm_size, const cli::po::variables_map& vm) {
  const CudaPlugin& cuda = cuda_plugin();
  CudaBenchOptions c;
  c.batch = o.batch, c.seq_len = o.seq_len, c.steps = o.steps, c.warmup = o.warmup, c.gemm_size = gemm_size;
  if (vm.count("shape")) c.shapes = vm["shape"].as<std::vector<std::string>>();
  return cuda.bench(c);
}

int print_json_or_table(const nlohmann::ordered_json& j, bool json) {
  if (json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  for (const auto& [key, value] : j.items()) std::printf("%-30s %s\n", key.c_str(), value.dump().c_str());
  return 0;
}

}  // namespace

int cmd_bench(const Args& args) {
  cli::Spec spec;
  spec.usage =
      "upcycle bench [--device cpu|cuda] [--json] [--seq-len N --batch N --steps N --warmup N]\n"
      "       upcycle bench --router-stage [--router-shape PRESET --experts E --precision f32|bf16 ...]\n"
      "       upcycle bench --lora [--lora-shape PRESET --lora-rank R --lora-precision f32|bf16|both\n"
      "                            --lora-experts E --lora-top-k K --recompute]";
  spec.summary =
      "Measures, in one run: the sgemm ceiling (an n^3 product through the model's matmul, all\n"
      "cores, on what sgemm_impl names: oneDNN or OpenBLAS) and the bf16 one (the same product\n"
      "in bf16 with f32 sums, oneDNN), then forward and training steps (forward, backward,\n"
      "clipping, AdamW) of a dense model (both also in --precision bf16: tune's bf16 engine, f32\n"
      "masters and moments)\n"
      "with SmolLM2-135M's shape and an MoE of the same shape with 4 experts top-2, random weights.\n"
      "GFLOP/s count 6 x active matmul parameters + causal attention per token (trainer/flops.hpp).\n"
      "Then decoding's matrix-vector product (8192 x 4096) on weights stored as f32, bf16, f16 and\n"
      "Q8_0, against the f32 matmul the model runs.\n"
      "--device cuda: the bf16 GEMM ceiling (cuBLAS), then bf16 training (fp32 master weights and\n"
      "gradients, AdamW) of the shapes smollm2, smollm2-moe (8 experts top-2), llama-1b and moe-1b\n"
      "(about 1 B active parameters, 8 experts top-2), with tokens/s and MFU against the ceiling;\n"
      "defaults there: --batch 4 --seq-len 2048 --steps 10 --warmup 3.\n"
      "--router-stage: UpIT's router stage alone (convert's, on the CPU): an MoE of --router-shape\n"
      "(default llama-1b) with --experts (8) top-2 stored as --dtype (bf16), from two random dense models and\n"
      "their DARE children, written to a scratch folder under --scratch, its experts scoring\n"
      "--seed-samples random samples of --sample-tokens, then one epoch of router pre-optimisation in\n"
      "micro-batches of --batch-tokens: seconds and tokens/s of each part and the peak RSS.\n"
      "--lora: tune --lora-rank's training steps instead, on a dense model of --lora-shape (a preset\n"
      "of upcycle init, default smollm2-135m; llama2-7b is UpIT's LoRA setting, bf16 only, with\n"
      "--batch 1) with every module adapted at --lora-rank (16), in --lora-precision f32, bf16 or\n"
      "both (default): tokens/s and the peak RSS; with --lora-experts E, tune --lora-experts' LoRA-MoE\n"
      "(E experts, top --lora-top-k) instead.";
  spec.options.add_options()
      ("json", "one JSON object on stdout")
      ("device", cli::po::value<std::string>()->default_value("cpu"), "cpu or cuda")
      ("seq-len", cli::po::value<int64_t>(), "tokens per sequence (cpu 256, cuda 2048)")
      ("batch", cli::po::value<int64_t>()->default_value(4), "sequences per step")
      ("steps", cli::po::value<int64_t>(), "timed steps (cpu 3, cuda 10)")
      ("warmup", cli::po::value<int64_t>(), "untimed steps first (cpu 1, cuda 3)")
      ("sgemm-size", cli::po::value<int64_t>(), "n of the ceiling's n^3 product (cpu 2048, cuda 8192)")
      ("only", cli::po::value<std::string>(), "cpu: dense, moe or matvec")
      ("router-stage", "the router stage's benchmark instead (see above)")
      ("lora", "LoRA training's benchmark instead (see above)")
      ("lora-shape", cli::po::value<std::string>()->default_value("smollm2-135m"), "LoRA: a preset of upcycle init")
      ("lora-rank", cli::po::value<int64_t>()->default_value(16), "LoRA: the adapters' rank")
      ("lora-precision", cli::po::value<std::string>()->default_value("both"), "LoRA: f32, bf16 or both")
      ("lora-experts", cli::po::value<int64_t>()->default_value(0), "LoRA: a LoRA-MoE of this many experts (0: none)")
      ("lora-top-k", cli::po::value<int64_t>()->default_value(2), "LoRA-MoE: experts per token")
      ("recompute", "LoRA: tune --recompute's steps (one layer's activations held, one more forward pass)")
      ("router-shape", cli::po::value<std::string>()->default_value("llama-1b"), "router stage: a preset of upcycle init")
      ("experts", cli::po::value<int>()->default_value(8), "router stage: experts")
      ("seed-samples", cli::po::value<int64_t>()->default_value(16), "router stage: seed samples")
      ("sample-tokens", cli::po::value<int64_t>()->default_value(128), "router stage: tokens per seed sample")
      ("batch-tokens", cli::po::value<int64_t>()->default_value(2048), "router stage: tokens per micro-batch")
      ("precision", cli::po::value<std::string>()->default_value("f32"), "router stage: f32 or bf16 (see upcycle forward --help)")
      ("dtype", cli::po::value<std::string>()->default_value("bf16"), "router stage: the checkpoints' and the MoE's dtype, f32, bf16 or f16")
      ("scratch", cli::po::value<std::string>(), "router stage: a path in the folder that gets the scratch MoE (default: the temporary folder)")
      ("shape", cli::po::value<std::vector<std::string>>()->multitoken(),
       "cuda: shapes to run (smollm2 smollm2-moe llama-1b moe-1b; default all)");
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  const std::string device = (*vm)["device"].as<std::string>();
  if (device != "cpu" && device != "cuda") throw UsageError("--device: cpu or cuda");
  const bool gpu = device == "cuda";
  auto number = [&](const char* key, int64_t cpu_default, int64_t cuda_default) {
    return vm->count(key) ? (*vm)[key].as<int64_t>() : gpu ? cuda_default : cpu_default;
  };
  BenchOptions o;
  o.seq_len = number("seq-len", 256, 2048);
  o.batch = (*vm)["batch"].as<int64_t>();
  o.steps = number("steps", 3, 10);
  o.warmup = number("warmup", 1, 3);
  const int64_t n = number("sgemm-size", 2048, 8192);
  if (o.seq_len < 2 || o.batch < 1 || o.steps < 1 || o.warmup < 0 || n < 64 || n > 16384)
    throw UsageError("--seq-len >= 2, --batch >= 1, --steps >= 1, --warmup >= 0, --sgemm-size in [64, 16384]");
  const std::string only = vm->count("only") ? (*vm)["only"].as<std::string>() : "";
  if (!only.empty() && only != "dense" && only != "moe" && only != "matvec") throw UsageError("--only: dense, moe or matvec");
  if (gpu) return print_json_or_table(run_cuda_bench(o, n, *vm), vm->count("json") > 0);
  if (vm->count("lora")) {
    const std::string p = (*vm)["lora-precision"].as<std::string>();
    if (p != "both" && p != "f32" && p != "bf16") throw UsageError("--lora-precision: f32, bf16 or both");
    const std::vector<Precision> precisions =
        p == "both" ? std::vector{Precision::F32, Precision::BF16} : std::vector{parse_precision(p)};
    LoraConfig asked;
    asked.rank = (*vm)["lora-rank"].as<int64_t>();
    if (asked.rank < 1 || asked.rank > kMaxLoraRank) throw UsageError("--lora-rank: 1 to " + std::to_string(kMaxLoraRank));
    asked.experts = (*vm)["lora-experts"].as<int64_t>();
    asked.top_k = (*vm)["lora-top-k"].as<int64_t>();
    if (asked.experts < 0 || asked.experts > kMaxLoraExperts)
      throw UsageError("--lora-experts: 0 (a plain LoRA) to " + std::to_string(kMaxLoraExperts));
    if (asked.experts == 0) asked.top_k = 0;
    else if (asked.top_k < 1 || asked.top_k > asked.experts) throw UsageError("--lora-top-k: 1 to --lora-experts");
    return print_json_or_table(
        bench_lora(o, (*vm)["lora-shape"].as<std::string>(), asked, precisions, vm->count("recompute") > 0),
        vm->count("json") > 0);
  }
  if (vm->count("router-stage")) {
    RouterStageBench r;
    r.shape = (*vm)["router-shape"].as<std::string>();
    r.experts = (*vm)["experts"].as<int>();
    r.samples = (*vm)["seed-samples"].as<int64_t>();
    r.sample_tokens = (*vm)["sample-tokens"].as<int64_t>();
    r.batch_tokens = (*vm)["batch-tokens"].as<int64_t>();
    r.precision = parse_precision((*vm)["precision"].as<std::string>());
    r.dtype = cli::parse_output_dtype((*vm)["dtype"].as<std::string>(), "--dtype");
    if (vm->count("scratch")) r.scratch = (*vm)["scratch"].as<std::string>();
    return print_json_or_table(bench_router_stage(r), vm->count("json") > 0);
  }

  nlohmann::ordered_json j;
  j["sgemm_gflops"] = sgemm_gflops(n);
  j["sgemm_impl"] = ops::f32_product_impl();
  spdlog::info("sgemm {}^3 ({}): {:.1f} GFLOP/s", n, ops::f32_product_impl(), j["sgemm_gflops"].get<double>());
  j["bf16_gemm_gflops"] = bf16_gemm_gflops(n);
  j["bf16_gemm_isa"] = ops::bf16_matmul_isa();
  spdlog::info("bf16 GEMM {}^3 ({}): {:.1f} GFLOP/s, {:.2f}x sgemm", n, ops::bf16_matmul_isa(),
               j["bf16_gemm_gflops"].get<double>(), j["bf16_gemm_gflops"].get<double>() / j["sgemm_gflops"].get<double>());
  j["seq_len"] = o.seq_len;
  j["batch"] = o.batch;
  for (const bool moe : {false, true}) {
    if (!only.empty() && only != (moe ? "moe" : "dense")) continue;
    const std::string p = moe ? "moe_" : "";
    const ModelFigures f = bench_model(moe ? "moe" : "dense", bench_config(moe), o);
    j[p + "forward_tokens_per_s"] = f.forward_tokens_per_s;
    j[p + "forward_peak_rss_mb"] = f.forward_peak_rss_mb;
    j[p + "bf16_forward_tokens_per_s"] = f.bf16_forward_tokens_per_s;
    j[p + "train_tokens_per_s"] = f.train_tokens_per_s;
    j[p + "bf16_train_tokens_per_s"] = f.bf16_train_tokens_per_s;
    j[p + "train_gflops"] = f.train_gflops;
    j[p + "train_fraction_of_sgemm"] = f.train_gflops / j["sgemm_gflops"].get<double>();
  }
  if (only.empty() || only == "matvec") j.update(bench_matvec(o));
  j["peak_rss_mb"] = peak_rss_mb();
  return print_json_or_table(j, vm->count("json") > 0);
}

}  // namespace upcycle
