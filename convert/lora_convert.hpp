// UpIT over LoRA adapters (convert --base B --adapters A1 .. AK): the intermediate adapters of a
// dense LoRA run become a LoRA-MoE over the frozen base, written as a MixLoRA folder (every
// command reads it with --adapter; export --merge-adapter makes it a Mixtral, or a Qwen3-MoE over qwen3).
//   pool     each adapter's terms with its scale folded into B; a module an adapter lacks is a
//            zero term there; ranks may differ (the output's rank is the largest)
//   shared   the attention terms: the adapters' mean, brought back to the rank by a truncated SVD
//            of the sum's factors (merge::truncate_sum; the share of energy dropped is reported),
//            or one adapter's (--shared-from; sparse: --from)
//   experts  upit: the FFN terms, grown by genetic::expand_lora_pool when E > K (DARE children
//            refactored to the rank, or --lora-child concat), the E farthest apart when E <= K;
//            sparse: E copies of adapter --from; btx: one per adapter; scratch: LoRAMoE's new
//            experts (A drawn as PEFT draws it, B = 0)
//   routers  upit: each seed sample scored by every expert's own dense LoRA model (the shared
//            terms and that expert's FFN terms on the base), then the routers alone trained on
//            the LoRA-MoE (router::preoptimise_routers); hidden: mergekit's hidden states; random:
//            MixLoRA's normal(0, 0.02)
#pragma once
#include "convert/convert.hpp"

namespace upcycle {

// Writes the MixLoRA folder o.out (with upcycle_convert.json: the pool, its distances, the
// energy the refactoring dropped, the router stage's figures). o is checked
// (check_convert_options) with o.adapters given. A fixed seed gives byte-identical files.
void convert_adapters(const ConvertOptions& o);

}  // namespace upcycle
