// --device on the commands that run a model (forward, eval, tune, convert's router stage; with a
// LoRA adapter: tune's LoRA and LoRA-MoE runs, forward --adapter; generate's decoder is checked in
// test_cuda, as it needs a tokenizer here): on a GPU machine the GPU's bf16 results follow the
// CPU's; elsewhere each command says why it cannot run there (no usable GPU, or a build without
// the CUDA backend). Mistakes are refused first.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "formats/checkpoint_writer.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

// A llama over write_sequences' 40 ids with head dim 32 (the GPU attention's smallest), bf16
// weights so that both devices start from the same values.
fs::path gpu_sized_model(const ScratchDir& dir, const std::string& name, uint64_t seed) {
  const nlohmann::json j = {{"model_type", "llama"},      {"vocab_size", 40},          {"hidden_size", 64},
                            {"intermediate_size", 96},    {"num_hidden_layers", 2},    {"num_attention_heads", 2},
                            {"num_key_value_heads", 1},   {"max_position_embeddings", 64}, {"rms_norm_eps", 1e-5},
                            {"rope_theta", 10000.0},      {"tie_word_embeddings", false}};
  WriteOptions opts;
  opts.progress = false;
  write_checkpoint(*random_checkpoint(ModelConfig::from_json(j, "<test>"), seed, DType::BF16), dir / name, opts);
  return dir / name;
}

std::vector<float> read_floats(const fs::path& file) {
  const std::string bytes = read_file(file);
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

// ‖got − want‖ / ‖want‖
double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) err += std::pow(got[i] - want[i], 2), norm += std::pow(want[i], 2);
  return std::sqrt(err / norm);
}

}  // namespace

TEST_CASE("--device: cpu or cuda") {
  ScratchDir dir;
  const fs::path model = gpu_sized_model(dir, "m", 1), data = write_sequences(dir / "d.jsonl", 4);
  auto r = run_upcycle("forward --model " + q(model) + " --tokens 1,2 --out " + q(dir / "o") + " --device tpu");
  CHECK(r.code == 1);
  CHECK(r.err.find("'tpu' is not cpu or cuda") != std::string::npos);
  CHECK(run_upcycle("tune --model " + q(model) + " --data " + q(data) + " --out " + q(dir / "t") + " --steps 1 --device gpu").code == 1);
}

TEST_CASE("--device cuda: forward, eval, tune and the router stage follow the CPU on a GPU, else say why") {
  ScratchDir dir;
  const fs::path model = gpu_sized_model(dir, "m", 2), data = write_sequences(dir / "d.jsonl", 24);
  const std::string forward = "forward --model " + q(model) + " --tokens 1,5,9,3,30,2,7,7,12 --out ";
  REQUIRE(run_upcycle(forward + q(dir / "cpu.bin")).code == 0);
  const auto gpu = run_upcycle(forward + q(dir / "gpu.bin") + " --device cuda");
  if (gpu.code != 0) {
    const bool built = run_upcycle("--version").out.find("cuda") != std::string::npos;
    CHECK(gpu.code == (built ? 2 : 1));
    CHECK(gpu.err.find("--device cuda") != std::string::npos);
    const auto tune = run_upcycle("tune --model " + q(model) + " --data " + q(data) + " --out " + q(dir / "t") +
                                  " --steps 2 --device cuda");
    CHECK(tune.code == gpu.code);
    CHECK_FALSE(fs::exists(dir / "t" / "final"));
    const auto lora = run_upcycle("tune --model " + q(model) + " --data " + q(data) + " --out " + q(dir / "l") +
                                  " --steps 2 --lora-rank 2 --device cuda");
    CHECK(lora.code == gpu.code);
    CHECK(lora.err.find("--device cuda") != std::string::npos);
    CHECK_FALSE(fs::exists(dir / "l"));
    MESSAGE("not run on a GPU: " << gpu.err);
    return;
  }
  // bf16 activations: a few per cent of the logits' scale.
  CHECK(relative_error(read_floats(dir / "gpu.bin"), read_floats(dir / "cpu.bin")) < 5e-2);

  const std::string eval = "eval --json --model " + q(model) + " --data " + q(data);
  const auto eval_cpu = run_upcycle(eval), eval_gpu = run_upcycle(eval + " --device cuda");
  REQUIRE(eval_gpu.code == 0);
  CHECK(nlohmann::json::parse(eval_gpu.out)["loss"].get<double>() ==
        doctest::Approx(nlohmann::json::parse(eval_cpu.out)["loss"].get<double>()).epsilon(2e-2));

  const std::string tune = "tune --model " + q(model) + " --data " + q(data) + " --steps 30 --lr 1e-2 --batch-tokens 64 --out ";
  REQUIRE(run_upcycle(tune + q(dir / "tune-cpu")).code == 0);
  const auto tuned = run_upcycle(tune + q(dir / "tune-gpu") + " --device cuda");
  REQUIRE_MESSAGE(tuned.code == 0, tuned.err);
  const auto l_cpu = read_losses(dir / "tune-cpu" / "metrics.jsonl"), l_gpu = read_losses(dir / "tune-gpu" / "metrics.jsonl");
  REQUIRE(l_gpu.size() == 30);
  MESSAGE("loss on the CPU " << l_cpu.front() << " -> " << l_cpu.back() << ", on the GPU " << l_gpu.front() << " -> " << l_gpu.back());
  for (size_t s = 0; s < l_gpu.size(); s += 5) CHECK(l_gpu[s] == doctest::Approx(l_cpu[s]).epsilon(5e-2));
  CHECK(run_upcycle("eval --model " + q(dir / "tune-gpu" / "final") + " --data " + q(data)).code == 0);

  const fs::path other = gpu_sized_model(dir, "m2", 3);
  const auto convert = run_upcycle("convert --checkpoints " + q(model) + " " + q(other) + " --experts 2 --data " + q(data) +
                                   " --seed-min 8 --seq-len 64 --out " + q(dir / "moe") + " --device cuda");
  REQUIRE_MESSAGE(convert.code == 0, convert.err);
  const auto report = nlohmann::json::parse(read_file(dir / "moe" / "upcycle_convert.json"));
  CHECK(report["router_steps"].get<int64_t>() > 0);
}

TEST_CASE("--device cuda: LoRA and LoRA-MoE tuning and forward --adapter follow the CPU on a GPU, and resume across devices") {
  ScratchDir dir;
  const fs::path model = gpu_sized_model(dir, "m", 4), data = write_sequences(dir / "d.jsonl", 24);
  const std::string probe = "forward --model " + q(model) + " --tokens 1,2 --out " + q(dir / "probe.bin") + " --device cuda";
  if (run_upcycle(probe).code != 0) {
    MESSAGE("not run: no usable GPU");  // the case above checks what each command says then
    return;
  }
  for (const std::string lora : {" --lora-rank 4", " --lora-rank 4 --lora-experts 4 --lora-dropout 0.1"}) {
    CAPTURE(lora);
    const std::string tune = "tune --model " + q(model) + " --data " + q(data) +
                             " --steps 12 --lr 1e-2 --batch-tokens 64 --seed 2 --save-every 6" + lora + " --out ";
    const fs::path cpu = dir / "cpu", gpu = dir / "gpu";
    fs::remove_all(cpu), fs::remove_all(gpu);
    REQUIRE(run_upcycle(tune + q(cpu)).code == 0);
    const auto tuned = run_upcycle(tune + q(gpu) + " --device cuda");
    REQUIRE_MESSAGE(tuned.code == 0, tuned.err);
    const auto l_cpu = read_losses(cpu / "metrics.jsonl"), l_gpu = read_losses(gpu / "metrics.jsonl");
    REQUIRE(l_gpu.size() == l_cpu.size());
    for (size_t s = 0; s < l_gpu.size(); ++s) CHECK(l_gpu[s] == doctest::Approx(l_cpu[s]).epsilon(5e-2));
    CHECK(l_gpu.back() < l_gpu.front());
    CHECK(fs::exists(gpu / "final" / "adapter_config.json"));
    // The GPU's adapter served on either device.
    const std::string forward = "forward --model " + q(model) + " --tokens 1,5,9,3,30,2,7 --adapter " +
                                q(gpu / "final") + " --out ";
    REQUIRE(run_upcycle(forward + q(dir / "a-cpu.bin")).code == 0);
    const auto served = run_upcycle(forward + q(dir / "a-gpu.bin") + " --device cuda");
    REQUIRE_MESSAGE(served.code == 0, served.err);
    CHECK(relative_error(read_floats(dir / "a-gpu.bin"), read_floats(dir / "a-cpu.bin")) < 5e-2);
    // A run stopped on the CPU continues on the GPU from its step folder (the CPU's optimizer state).
    const auto resumed = run_upcycle("tune --resume " + q(cpu / "step-000006") + " --out " + q(cpu) + " --model " +
                                     q(model) + " --data " + q(data) +
                                     " --steps 12 --lr 1e-2 --batch-tokens 64 --seed 2 --save-every 6 --device cuda");
    REQUIRE_MESSAGE(resumed.code == 0, resumed.err);
    const auto l_resumed = read_losses(cpu / "metrics.jsonl");
    REQUIRE(l_resumed.size() == l_cpu.size());
    CHECK(l_resumed.back() == doctest::Approx(l_cpu.back()).epsilon(5e-2));
  }
}
