"""The GPT-2-style model, its text generation, and the one way to load it.

    gpt.py        GPTConfig and GPT: embeddings, Blocks (attention with separate W_q, W_k, W_v, W_o; MLP), LM head
    generate.py   greedy / temperature / top-k / top-p sampling with a KV cache
    hf_gpt2.py    Hugging Face GPT-2 <-> tinylora conversion (depends on gpt.py, never the reverse)
    load.py       load_model(path_or_name): a tinylora folder, a Hugging Face GPT-2 folder or a shipped name;
                  the one loader (load_gpt for the model alone); checks every file before it allocates
"""

from tinylora.model.gpt import GPT, GPTConfig, KVCache
from tinylora.model.generate import generate
from tinylora.model.load import load_gpt, load_model, save_model

__all__ = ["GPT", "GPTConfig", "KVCache", "generate", "load_gpt", "load_model", "save_model"]
