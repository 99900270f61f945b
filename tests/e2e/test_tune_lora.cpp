// `upcycle tune --lora-rank` end to end on tiny models: PEFT adapter folders out with the base
// untouched, the first loss the base model's, a stopped and resumed run (with dropout) equal to a
// straight one byte for byte, --adapter continuing an adapter, and misuse named; the same for a
// LoRA-MoE (--lora-experts: MixLoRA folders), and its export as a Mixtral.
#include <doctest/doctest.h>

#include <cstring>

#include <nlohmann/json.hpp>

#include "formats/checkpoint_writer.hpp"
#include "formats/peft_adapter.hpp"
#include "formats/safetensors.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

// A model folder dir/type with the tiny config of `type`, random weights.
fs::path tiny_model(const ScratchDir& dir, const std::string& type, uint64_t seed, DType dtype = DType::F32) {
  return write_model(dir, type, tiny_config(type), seed, dtype);
}

// forward --out's raw float32 logits.
std::vector<float> read_floats(const fs::path& file) {
  const std::string bytes = read_file(file);
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
  return out;
}

}  // namespace

TEST_CASE("tune --lora-rank: the adapter is a PEFT folder, the base stays, the first loss is the base's") {
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "llama", 1), data = write_sequences(dir / "data.jsonl", 8);
  const std::string common = " --model " + q(model) + " --data " + q(data) + " --lr 1e-2 --batch-tokens 64 --seed 3";
  auto r = run_upcycle("tune --out " + q(dir / "lora") + common + " --steps 30 --lora-rank 4 --lora-alpha 8 --save-count 2");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK_MESSAGE(r.err.find("LoRA rank 4, alpha 8, dropout 0 on q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
                    != std::string::npos, r.err);
  r = run_upcycle("tune --out " + q(dir / "full") + common + " --steps 1");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto lora = read_losses(dir / "lora" / "metrics.jsonl"), full = read_losses(dir / "full" / "metrics.jsonl");
  CHECK(lora.front() == full.front());  // B = 0: the base model's loss, to the bit
  CHECK(lora.back() < 0.8 * lora.front());
  for (const char* folder : {"step-000015", "final"}) {
    CAPTURE(folder);
    const fs::path saved = dir / "lora" / folder;
    CHECK(fs::exists(saved / "adapter_model.safetensors"));
    CHECK(!fs::exists(saved / "model.safetensors"));  // the base is not copied
    const auto config = nlohmann::json::parse(read_file(saved / "adapter_config.json"));
    CHECK(config["peft_type"] == "LORA");
    CHECK(config["r"] == 4);
    CHECK(config["lora_alpha"] == 8.0);
    CHECK(config["base_model_name_or_path"] == model.string());
    CHECK(read_peft_adapter(saved, tiny_config("llama")).modules.size() == 2 * 7);
  }
  // forward --adapter applies it: its logits differ from the base's.
  auto forward = [&](const std::string& out, const std::string& extra) {
    const auto f = run_upcycle("forward --model " + q(model) + " --tokens 1,5,7,3,2 --out " + q(dir / out) + extra);
    REQUIRE_MESSAGE(f.code == 0, f.err);
    return read_file(dir / out);
  };
  CHECK(forward("adapted.f32", " --adapter " + q(dir / "lora" / "final")) != forward("base.f32", ""));

  // --adapter continues it: the new run's first loss is below the base's.
  r = run_upcycle("tune --out " + q(dir / "more") + common + " --steps 2 --adapter " + q(dir / "lora" / "final"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(read_losses(dir / "more" / "metrics.jsonl").front() < 0.9 * lora.front());
}

TEST_CASE("tune --lora-rank: N steps, stop, resume, N more equals 2N straight, byte for byte (bf16 base, dropout)") {
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "qwen2", 2, DType::BF16), data = write_sequences(dir / "data.jsonl", 24);
  const std::string common = " --model " + q(model) + " --data " + q(data) +
                             " --lr 3e-3 --warmup 2 --batch-tokens 40 --grad-accum 2 --seed 5"
                             " --lora-rank 2 --lora-targets q_proj,v_proj,down_proj --lora-dropout 0.2 --rslora"
                             " --weight-decay 0.1";
  REQUIRE(run_upcycle("tune --out " + q(dir / "a") + common + " --steps 10").code == 0);
  REQUIRE(run_upcycle("tune --out " + q(dir / "b") + common + " --steps 10 --stop-at 4").code == 0);
  auto r = run_upcycle("tune --resume " + q(dir / "b" / "step-000004") + " --out " + q(dir / "b") + common + " --steps 10");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  for (const char* file : {"adapter_model.safetensors", "optimizer.safetensors", "adapter_config.json"})
    CHECK_MESSAGE(read_file(dir / "a" / "final" / file) == read_file(dir / "b" / "final" / file), file);
  CHECK(read_losses(dir / "a" / "metrics.jsonl") == read_losses(dir / "b" / "metrics.jsonl"));
  // Other LoRA settings than the run's are refused on resume, naming its adapter_config.json.
  r = run_upcycle("tune --resume " + q(dir / "b" / "final") + " --out " + q(dir / "b") + common +
                  " --lora-alpha 3 --steps 12");
  CHECK(r.code == 2);
  CHECK_MESSAGE(r.err.find("final/adapter_config.json: was trained with other LoRA settings") != std::string::npos,
                r.err);
  // Without --model the base is unknown.
  r = run_upcycle("tune --resume " + q(dir / "b" / "step-000004") + " --out " + q(dir / "b") + " --data " + q(data) +
                  " --steps 10");
  CHECK(r.code == 1);
  CHECK_MESSAGE(r.err.find("needs --model, its base model") != std::string::npos, r.err);
}

TEST_CASE("tune --lora-rank: misuse is named") {
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "llama", 3), moe = tiny_model(dir, "mixtral", 4),
                 data = write_sequences(dir / "data.jsonl", 4);
  const std::string base = "tune --data " + q(data) + " --steps 1 --out " + q(dir / "run") + " --model ";
  const std::pair<std::string, std::string> usage[] = {
      {q(model) + " --lora-rank 2 --freeze attention", "--freeze does not go with LoRA"},
      {q(model) + " --lora-alpha 4", "the LoRA options need --lora-rank"},
      {q(model) + " --lora-rank 2 --lora-targets q_proj,qkv", "'qkv' is not one of q_proj"},
      {q(model) + " --lora-rank 5000", "--lora-rank 5000 is above 4096"},
      {q(model) + " --lora-rank 2 --lora-dropout 1", "--lora-dropout must lie in [0, 1)"},
      {q(model) + " --lora-rank 2 --adapter " + q(dir / "x"), "adapter_config.json gives the LoRA settings"},
      {q(moe) + " --lora-rank 2 --lora-targets gate_proj", "a mixtral model has no gate_proj (its FFN is its experts)"},
      {q(model) + " --lora-rank 100", "--lora-rank 100 exceeds q_proj's smaller side"},
  };
  for (const auto& [args, message] : usage) {
    CAPTURE(args);
    const auto r = run_upcycle(base + args);
    CHECK(r.code == 1);
    CHECK_MESSAGE(r.err.find(message) != std::string::npos, r.err);
    CHECK(!fs::exists(dir / "run"));
  }
  // An adapter for another model.
  REQUIRE(run_upcycle(base + q(model) + " --lora-rank 2").code == 0);
  const auto r = run_upcycle("tune --data " + q(data) + " --steps 1 --out " + q(dir / "other") + " --model " + q(moe) +
                             " --adapter " + q(dir / "run" / "final"));
  CHECK(r.code == 2);
  CHECK_MESSAGE(r.err.find("adapter_config.json") != std::string::npos, r.err);
}

TEST_CASE("tune --bf16-moments: bf16 moments saved, a stopped run resumed byte for byte, the dtype kept on resume") {
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "llama", 5), data = write_sequences(dir / "data.jsonl", 16);
  const std::string common = " --model " + q(model) + " --data " + q(data) +
                             " --lr 1e-2 --batch-tokens 48 --seed 4 --lora-rank 2 --lora-experts 4";
  auto r = run_upcycle("tune --out " + q(dir / "f32") + common + " --steps 8");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  r = run_upcycle("tune --out " + q(dir / "a") + common + " --steps 8 --bf16-moments");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const SafetensorsFile state = SafetensorsFile::open(dir / "a" / "final" / "optimizer.safetensors");
  for (const auto& e : state.entries()) REQUIRE_MESSAGE(e.info.dtype == DType::BF16, e.info.name);
  // The same run but for the moments' rounding: losses within a few per cent of f32's.
  const auto f32 = read_losses(dir / "f32" / "metrics.jsonl"), bf16 = read_losses(dir / "a" / "metrics.jsonl");
  REQUIRE(f32.size() == bf16.size());
  CHECK(bf16.front() == f32.front());  // nothing updated yet
  CHECK(bf16 != f32);
  for (size_t i = 0; i < f32.size(); ++i) CHECK(std::abs(bf16[i] - f32[i]) < 0.05 * f32[i]);

  REQUIRE(run_upcycle("tune --out " + q(dir / "b") + common + " --steps 8 --bf16-moments --stop-at 3").code == 0);
  r = run_upcycle("tune --resume " + q(dir / "b" / "step-000003") + " --out " + q(dir / "b") + common +
                  " --steps 8 --bf16-moments");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  for (const char* file : {"adapter_model.safetensors", "optimizer.safetensors"})
    CHECK_MESSAGE(read_file(dir / "a" / "final" / file) == read_file(dir / "b" / "final" / file), file);
  r = run_upcycle("tune --resume " + q(dir / "b" / "final") + " --out " + q(dir / "b") + common + " --steps 10");
  CHECK(r.code == 2);
  CHECK_MESSAGE(r.err.find("resume with --bf16-moments") != std::string::npos, r.err);
  r = run_upcycle("tune --out " + q(dir / "c") + " --model " + q(model) + " --data " + q(data) +
                  " --steps 1 --bf16-moments --device cuda");
  CHECK(r.code == 1);
  CHECK_MESSAGE(r.err.find("--bf16-moments runs on the CPU") != std::string::npos, r.err);
}

TEST_CASE("tune --lora-experts: a MixLoRA folder out, the first loss the base's, resumed or recomputed byte for byte, merged to a Mixtral") {
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "llama", 5), data = write_sequences(dir / "data.jsonl", 16);
  const std::string common = " --model " + q(model) + " --data " + q(data) +
                             " --lr 1e-2 --batch-tokens 48 --seed 4 --lora-rank 2 --lora-experts 4 --lora-dropout 0.1";
  auto r = run_upcycle("tune --out " + q(dir / "a") + common + " --steps 12");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK_MESSAGE(r.err.find(", 4 experts top-2; the base frozen") != std::string::npos, r.err);
  REQUIRE(run_upcycle("tune --out " + q(dir / "full") + " --model " + q(model) + " --data " + q(data) +
                      " --batch-tokens 48 --seed 4 --steps 1")
              .code == 0);
  const auto losses = read_losses(dir / "a" / "metrics.jsonl");
  // B = 0: the base's FFN whatever the routing; the routed sum of equal outputs rounds apart.
  CHECK(losses.front() == doctest::Approx(read_losses(dir / "full" / "metrics.jsonl").front()).epsilon(1e-6));
  CHECK(losses.back() < 0.9 * losses.front());
  const auto config = nlohmann::json::parse(read_file(dir / "a" / "final" / "adapter_config.json"));
  CHECK(config["peft_type"] == "MIXLORA");
  CHECK(config["num_experts"] == 4);
  CHECK(config["top_k"] == 2);
  CHECK(config["router_aux_loss_coef"] == 0.01);  // MixLoRA's default
  // --aux-loss-coef reaches the loss (the first step's routing is the same, so its aux is 20x)
  // and the folder, whose coefficient a run from it then takes.
  auto first_aux = [](const fs::path& metrics) {
    return nlohmann::json::parse(read_file(metrics).substr(0, read_file(metrics).find('\n')))["aux_loss"].get<double>();
  };
  r = run_upcycle("tune --out " + q(dir / "k") + common + " --steps 1 --aux-loss-coef 0.2");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(first_aux(dir / "k" / "metrics.jsonl") / first_aux(dir / "a" / "metrics.jsonl") == doctest::Approx(20).epsilon(1e-5));
  CHECK(nlohmann::json::parse(read_file(dir / "k" / "final" / "adapter_config.json"))["router_aux_loss_coef"] == 0.2);
  r = run_upcycle("tune --out " + q(dir / "k2") + " --model " + q(model) + " --data " + q(data) +
                  " --lr 1e-2 --batch-tokens 48 --seed 4 --steps 1 --adapter " + q(dir / "k" / "final"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(nlohmann::json::parse(read_file(dir / "k2" / "final" / "adapter_config.json"))["router_aux_loss_coef"] == 0.2);
  const LoraAdapter read = read_peft_adapter(dir / "a" / "final", tiny_config("llama"));
  CHECK(read.routers.size() == 2);
  CHECK(read.modules.size() == 2 * (4 + 4 * 3));  // per layer: shared q, k, v, o; each expert's gate, up, down
  // inspect describes the folder.
  r = run_upcycle("inspect --json " + q(dir / "a" / "final"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto summary = nlohmann::json::parse(r.out);
  CHECK(summary["format"] == "mixlora adapter");
  CHECK(summary["experts"] == 4);
  CHECK(summary["rank"] == 2);
  CHECK(summary["tensors"] == 2 * 2 * (4 + 4 * 3) + 2);  // A and B of each module, a router per layer

  // Stopped and resumed: the same files.
  REQUIRE(run_upcycle("tune --out " + q(dir / "b") + common + " --steps 12 --stop-at 5").code == 0);
  r = run_upcycle("tune --resume " + q(dir / "b" / "step-000005") + " --out " + q(dir / "b") + common + " --steps 12");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  for (const char* file : {"adapter_model.safetensors", "optimizer.safetensors", "adapter_config.json"})
    CHECK_MESSAGE(read_file(dir / "a" / "final" / file) == read_file(dir / "b" / "final" / file), file);
  // --recompute: each layer computed again for its gradients, the same bits.
  r = run_upcycle("tune --out " + q(dir / "r") + common + " --steps 12 --recompute");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(read_file(dir / "a" / "final" / "adapter_model.safetensors") ==
        read_file(dir / "r" / "final" / "adapter_model.safetensors"));
  std::string three = common;
  three.replace(three.find("--lora-experts 4"), 16, "--lora-experts 3");
  r = run_upcycle("tune --resume " + q(dir / "b" / "final") + " --out " + q(dir / "b") + three + " --steps 14");
  CHECK(r.code == 2);
  CHECK_MESSAGE(r.err.find("other LoRA settings") != std::string::npos, r.err);

  // export --merge-adapter writes the Mixtral, whose logits are the LoRA-MoE's.
  r = run_upcycle("export " + q(model) + " " + q(dir / "mixtral") + " --merge-adapter " + q(dir / "a" / "final"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(nlohmann::json::parse(read_file(dir / "mixtral" / "config.json"))["model_type"] == "mixtral");
  auto forward = [&](const std::string& args, const std::string& out) {
    const auto f = run_upcycle("forward " + args + " --tokens 1,5,7,3,2 --out " + q(dir / out));
    REQUIRE_MESSAGE(f.code == 0, f.err);
    return read_floats(dir / out);
  };
  const auto merged = forward("--model " + q(dir / "mixtral"), "merged.f32");
  const auto unmerged = forward("--model " + q(model) + " --adapter " + q(dir / "a" / "final"), "unmerged.f32");
  REQUIRE(merged.size() == unmerged.size());
  for (size_t i = 0; i < merged.size(); ++i) CHECK(merged[i] == doctest::Approx(unmerged[i]).epsilon(1e-4));

  // A LoRA-MoE is made over a dense llama or mistral, with an FFN target.
  const fs::path qwen = tiny_model(dir, "qwen2", 6);
  r = run_upcycle("tune --out " + q(dir / "c") + " --model " + q(qwen) + " --data " + q(data) +
                  " --steps 1 --lora-rank 2 --lora-experts 2");
  CHECK(r.code == 1);
  CHECK_MESSAGE(r.err.find("a LoRA-MoE is made over a dense llama or mistral") != std::string::npos, r.err);
  r = run_upcycle("tune --out " + q(dir / "c") + " --model " + q(model) + " --data " + q(data) +
                  " --steps 1 --lora-rank 2 --lora-experts 2 --lora-top-k 3");
  CHECK(r.code == 1);
  CHECK_MESSAGE(r.err.find("--lora-top-k must lie in [1, --lora-experts]") != std::string::npos, r.err);
  CHECK(!fs::exists(dir / "c"));
}
