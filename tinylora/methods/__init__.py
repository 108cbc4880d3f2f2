"""The LoRA family and the LoRA paper's baselines: one small file per method, each readable alone.

Each file opens with its paper's equation, the shapes, the |Θ| formula and the reference implementation it
is checked against, and has an `apply_<method>(model, ...)` function in the style of
`tinylora.lora.apply_lora`. Plain LoRA itself lives in `tinylora/lora/`, which every method here builds on.
"""
