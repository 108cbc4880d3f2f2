"""Train LoRA adapters of several ranks from one base, and read back what they learned.

    results = rank_sweep(load_base, train_set, val_set, ranks=(1, 2, 4, 8, 16, 64))
    results[i]["val_loss"]                      validation loss after training with rank ranks[i]
    results[i]["updates"][name]                 {"A" (r, k), "B" (d, r), "scaling", "W0" (d, k)} per layer
    save_updates(results[i], "r8.safetensors")  A and B as safetensors; load_updates(path, base) reads them back

α is held fixed while r varies (the paper's practice: α is set to the first r tried and not
tuned), so the update ΔW = (α/r) B A is compared at one learning rate across ranks.
"""

from __future__ import annotations

from tinylora.engine.backend import to_host
from tinylora.engine.random import manual_seed
from tinylora.lora.apply import apply_lora, lora_layers
from tinylora.train.loop import TrainConfig, train


def adapter_updates(model) -> dict:
    """name -> {"A", "B", "scaling", "W0", "delta"} (NumPy) of every LoRA layer of `model` (unmerged)."""
    updates = {}
    for name, layer in lora_layers(model):
        if layer.merged:
            raise ValueError(f"adapter_updates: {name} is merged; W0 would hold ΔW (unmerge_lora first)")
        a, b = to_host(layer.lora_A.data), to_host(layer.lora_B.data)
        updates[name] = {"A": a, "B": b, "scaling": layer.scaling, "W0": to_host(layer.base.weight.data),
                         "delta": layer.scaling * (b.astype("float64") @ a.astype("float64"))}
    return updates


def train_adapter(load_base, train_set, val_set, r: int, alpha: float | None = 8, targets=("q", "v"),
                  layers=None, steps: int = 150, lr: float = 3e-2, batch_size: int = 16, seed: int = 0,
                  eval_batches: int = 8) -> dict:
    """Train one LoRA adapter on a fresh base (`load_base()` returns a GPT); returns its result dict.

    {"r", "alpha", "seed", "val_loss", "val_loss_before", "trainable", "updates"}
    """
    manual_seed(seed)  # A's random init depends on the seed: Figure 4 compares two seeds
    model = load_base()
    apply_lora(model, r=r, alpha=alpha, targets=targets, layers=layers)
    config = TrainConfig(max_steps=steps, batch_size=batch_size, lr=lr, warmup_steps=steps // 10,
                         eval_every=steps, eval_batches=eval_batches, seed=seed, progress=False)
    result = train(model, train_set, val_set, config)
    return {"r": r, "alpha": alpha, "seed": seed, "val_loss": result.val_loss_after,
            "val_loss_before": result.val_loss_before, "trainable": result.trainable,
            "updates": adapter_updates(model)}


def rank_sweep(load_base, train_set, val_set, ranks=(1, 2, 4, 8, 16, 64), **kwargs) -> list:
    """train_adapter for each rank (same seed, α, steps, learning rate); a list of their result dicts."""
    return [train_adapter(load_base, train_set, val_set, r, **kwargs) for r in ranks]


def save_updates(run: dict, path) -> None:
    """Write one trained adapter (a train_adapter result) as safetensors: "<layer>.lora_A" (r, k) and
    "<layer>.lora_B" (d, r) per layer, float32, with r, α, seed and the validation losses as metadata,
    so the analyses of it can be recomputed (load_updates)."""
    from tinylora.io import save_tensors

    tensors = {}
    for name, update in run["updates"].items():
        tensors[f"{name}.lora_A"] = update["A"].astype("float32")
        tensors[f"{name}.lora_B"] = update["B"].astype("float32")
    meta = {k: str(run[k]) for k in ("r", "alpha", "seed", "val_loss", "val_loss_before")}
    meta["scaling"] = repr(float(next(iter(run["updates"].values()))["scaling"]))  # α/r, the same in every layer
    save_tensors(path, tensors, metadata=meta)


def load_updates(path, base_model) -> dict:
    """name -> {"A", "B", "scaling", "W0", "delta"} from a save_updates file and the base it was trained on."""
    from tinylora.io import load_metadata, load_tensors

    tensors, meta = load_tensors(path), load_metadata(path)
    scaling = float(meta["scaling"])
    weights = dict(base_model.named_parameters())
    updates = {}
    for key in tensors:
        if key.endswith(".lora_A"):
            name = key[: -len(".lora_A")]
            a, b = tensors[key], tensors[f"{name}.lora_B"]
            updates[name] = {"A": a, "B": b, "scaling": scaling, "W0": to_host(weights[f"{name}.weight"].data),
                             "delta": scaling * (b.astype("float64") @ a.astype("float64"))}
    return updates
