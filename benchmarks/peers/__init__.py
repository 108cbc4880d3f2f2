"""Peer implementations the benchmarks compare tinylora with: a hand-written PyTorch GPT-2 and HF GPT-2 + PEFT."""
