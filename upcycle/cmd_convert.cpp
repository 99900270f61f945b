// `upcycle convert`: dense checkpoints into an MoE (convert/convert.hpp), by UpIT (expert
// expansion through merging and a genetic search) or by a baseline (sparse upcycling,
// drop-upcycling, BTX).
#include "convert/convert.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"

namespace upcycle {

int cmd_convert(const Args& args) {
  cli::Spec spec;
  spec.usage =
      "upcycle convert --checkpoints P1 P2 ... [--base P0] --experts E --top-k K --out DIR [options]\n"
      "       upcycle convert --base B --adapters A1 A2 ... --experts E --top-k K --out DIR [options]";
  spec.summary =
      "Turns dense checkpoints of one llama or mistral model into a Mixtral MoE, of one qwen2 model into\n"
      "a Qwen2-MoE (its shared expert from --shared-expert, zero by default), or of one qwen3 model into\n"
      "a Qwen3-MoE (both with norm_topk_prob true, Mixtral's routing, unless --unnormalised-topk), as a\n"
      "Hugging Face folder (or HDF5 when DIR ends in .h5; export writes GGUF), streaming one tensor at a\n"
      "time.\n"
      "  upit    (default) the checkpoints' FFNs as experts; when E exceeds their number K, children\n"
      "          grown by a genetic search (parents among the most distant pairs, random weights\n"
      "          a + b = 1, a DARE merge of their deltas from the base, the candidate that makes the\n"
      "          most diverse pool kept each round); when E <= K, the E checkpoints farthest apart.\n"
      "  sparse  every expert a copy of checkpoint --from (sparse upcycling).\n"
      "  drop    copies with --drop-ratio of each expert's neurons re-drawn (drop-upcycling).\n"
      "  btx     one expert per checkpoint (Branch-Train-MiX).\n"
      "Shared weights (embeddings, attention, norms, head): the mean of the checkpoints by default\n"
      "(--shared-merge, --shared-from); sparse and drop take them from --from.\n"
      "Routers: upit (the default for upit) scores seed data (--seed-data, or a share of --data)\n"
      "under every expert's own dense model, gives each sample to the expert with the lowest loss\n"
      "on its response, then trains the routers alone on 0.5 x LM loss + 0.5 x BCE toward those\n"
      "experts; hidden sets expert e's row to the unit-length mean router input of its seed samples\n"
      "under its own dense model (mergekit's hidden gate mode); random is normal(0, 0.02).\n"
      "With --adapters (PEFT LoRA folders of the dense LoRA run of --base: a llama, mistral or qwen3) it\n"
      "makes a LoRA-MoE, written as a MixLoRA folder that --adapter reads: each expert the frozen FFN with its own terms, the\n"
      "attention terms shared (the adapters' mean, or --shared-from's); upit grows the pool on the\n"
      "deltas s x B x A (distances from r x r products; DARE children refactored to the rank, or\n"
      "--lora-child concat), scores the seed under each expert's dense LoRA model and trains the\n"
      "routers alone; sparse copies adapter --from, btx one expert per adapter, scratch new experts\n"
      "(B = 0) with random routers (LoRAMoE).\n"
      "DIR also gets upcycle_convert.json: the pool's recipes,\n"
      "distances and the router stage's figures.\n"
      "A fixed --seed gives byte-identical files.";
  cli::add_options(spec, convert_option_table());
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  ConvertOptions o;
  cli::read_options(*vm, convert_option_table(), o, check_convert_options);
  convert(o);
  return 0;
}

}  // namespace upcycle
