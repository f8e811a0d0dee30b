"""``builtin:tiny-llama``: a tiny, randomly initialised Llama with an in-process tokenizer.

It exists for tests, benchmarks and the local stack, where no weights may be downloaded.
Its text is nonsense (random weights), but it is a real transformers ``LlamaForCausalLM``:
real attention, a real KV cache, real batching and padding, and seeded, so every process
builds the same model. The tokenizer is byte-level (any text round-trips) with a chat
template, so the engine's chat path is the one a real model folder takes. The output rows
of bytes other than printable ASCII are zeroed, so the nonsense is at least printable.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BUILTIN", "BUILTINS", "build_tiny_llama"]

BUILTIN = "builtin:tiny-llama"
BUILTINS: dict[str, dict[str, Any]] = {
    BUILTIN: {},
    # About a billion parameters (Llama 3.2 1B's shape, this tokenizer's 259-token
    # vocabulary): for `switchyard bench gpu`, where no weights may be downloaded.
    "builtin:llama-1b": {"layers": 16, "hidden": 2048, "heads": 32, "kv_heads": 8,
                         "intermediate": 8192, "init": 0.02},
}
"""Random-weight Llamas built from a config, by name."""

_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    fast: Any = PreTrainedTokenizerFast
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = fast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        padding_side="left",
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    return tokenizer


def build_tiny_llama(seed: int = 0, *, layers: int = 2, hidden: int = 64, heads: int = 4,
                     kv_heads: int = 2, intermediate: int = 0, init: float = 0.5,
                     device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer): the same weights for the same arguments, in any process
    (built on ``device``: a billion parameters initialise there in seconds)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden,
        intermediate_size=intermediate or hidden * 2, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        # Wide initial weights give peaked logits, so greedy decoding is not decided by
        # rounding differences between batch shapes (the tiny one's default).
        initializer_range=init,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.device(device):
            model: Any = LlamaForCausalLM(config)
        model.eval()
        with torch.no_grad():
            printable = {tokenizer.convert_tokens_to_ids(t) for t in
                         tokenizer.convert_ids_to_tokens(
                             tokenizer(bytes(range(32, 127)).decode())["input_ids"])}
            quiet = [i for i in range(len(tokenizer)) if i not in printable]
            model.lm_head.weight[quiet] = 0.0
    finally:
        torch.random.set_rng_state(generator_state)
    return model, tokenizer
