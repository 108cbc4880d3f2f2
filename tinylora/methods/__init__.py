"""The LoRA family and the LoRA paper's baselines: one small file per method, each readable alone.

Each file opens with its paper's equation, the shapes, the |Θ| formula and the reference implementation it
is checked against, and has an `apply_<method>(model, ...)` function in the style of
`tinylora.lora.apply_lora`. Plain LoRA itself lives in `tinylora/lora/`, which every method here builds on.

    rslora.py       rsLoRA: s = α/√r                                   (PEFT use_rslora: equal in float64)
    loraplus.py     LoRA+: B's learning rate λ·η, optimizer groups     (PEFT's grouping of 1-D tensors)
    dora.py         DoRA: W' = m (W0 + sBA)/‖W0 + sBA‖_c               (PEFT use_dora: equal in float64)
    pissa.py        PiSSA and OLoRA: A, B from the SVD / QR of W0      (PEFT init_lora_weights="pissa"/"olora")
    adalora.py      AdaLoRA: P Λ Q, importance, cubic rank budget      (PEFT AdaLoraConfig: equal in float64)
    glora.py        GLoRA: (W0 + W0⊙A + B)x + CW0 + D⊙b0 + E + b0      (its known answers; PEFT has none)

    wrap.py         wrap_linears: what every apply_<method> shares
    choose.py       apply_method / training_hooks by name, adapter files for every method (used by the CLI)
    peft_export.py  export_method_peft: DoRA and rsLoRA adapters in PEFT's format
"""
