"""What the LoRA interop tests share: the upcycle binary (or a skip), the tokens they score, and
the tiny Llama and Qwen3 that transformers writes for them."""
import os
import sys

TOKENS = [1, 7, 5, 3, 6, 2, 4, 7, 0, 5, 11, 39]


def upcycle_binary():
    """UPCYCLE_BINARY, or exit 77 (skipped) where it is not set to a file."""
    binary = os.environ.get("UPCYCLE_BINARY", "")
    if not binary or not os.path.exists(binary):
        print("skipped: UPCYCLE_BINARY is not set to the built upcycle")
        sys.exit(77)
    return binary


def write_tiny_llama(torch, transformers, folder):
    """A random LlamaForCausalLM (hidden 16, 2 layers, vocab 40) saved to `folder`; the model."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return model


def write_tiny_qwen3(torch, transformers, folder):
    """A random Qwen3ForCausalLM (hidden 16, head_dim 6 apart from 16 / 4, 2 layers, vocab 40), its
    q/k norms random too, saved to `folder`; the model."""
    torch.manual_seed(1)
    config = transformers.Qwen3Config(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=6,
                                      max_position_embeddings=64, tie_word_embeddings=False)
    model = transformers.Qwen3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.3 * torch.randn_like(p))
    model.save_pretrained(folder, safe_serialization=True)
    return model
