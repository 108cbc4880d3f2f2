"""The LoRA family side by side on one task: `python -m benchmarks.lora_family` (a few minutes on 2 cores).

Every method of tinylora.methods, plus plain LoRA, fine-tunes the shipped base-mini (4 layers, C = 128)
on the embedded E2E-style data-to-text task (the demo's data: tinylora.cli.demo), adapting W_q and W_v
at comparable trainable budgets (LoRA r = 4: 8,192 parameters), for each of several seeds. Measured:

    trainable          parameters that train (AdaLoRA: at its initial rank)
    val loss           validation loss per target token after training: mean and spread (max − min) over seeds
    steps to target    first evaluation step whose validation loss is <= --target (mean over seeds; None: never)
    step ms            median training-step time (all runs share this process: compare within one result file)
    peak MiB           peak tracked memory during training (tinylora.engine.backend.memory)
    merged ms          median forward time of one validation batch after merging (and unmerged, for contrast)

Writes benchmarks/results/lora_family.json and lora_family.png (validation-loss curves, mean over seeds).
LoRA-FA and QLoRA change memory, not the method's function: README's training-efficiency section measures them.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.common import RESULTS_DIR, command_line, machine_info, parse_args, write_result

LR = 3e-2  # the demo's LoRA learning rate (the best of its sweep), used for every method
SETTINGS = {  # method -> (settings for apply_method, learning rate)
    "lora": ({"r": 4}, LR),
    "rslora": ({"r": 4, "alpha": 4}, LR),  # LoRA's α = r = 4 with rsLoRA's rule: s = 4/√4 = 2 (LoRA: 1)
    "loraplus": ({"r": 4, "ratio": 16}, LR / 4),  # η_A = lr/4, η_B = 4·lr (the LoRA+ README: lower η_A)
    "dora": ({"r": 4}, LR),
    "pissa": ({"r": 4}, LR),
    "olora": ({"r": 4}, LR),
    "adalora": ({"init_r": 6, "target_r": 4}, LR),  # tinit, tfinal, ΔT: steps/8, steps/4, steps/8 (run_one)
    "glora": ({"r": 2, "config": {"A": "lora", "B": "lora", "C": "lora", "D": "scalar", "E": "scalar"}}, LR),
}

def run_one(method: str, seed: int, steps: int, batch: int, eval_every: int) -> dict:
    import time

    import numpy as np

    from tinylora import manual_seed, no_grad, tensor
    from tinylora.cli.demo import _datasets
    from tinylora.engine.backend import memory
    from tinylora.lora import merge_and_unload, parameter_report
    from tinylora.methods import apply_method, training_hooks
    from tinylora.methods.glora import merge_and_unload_glora
    from tinylora.model.load import load_model
    from tinylora.train.loop import TrainConfig, eval_batches, train

    settings, lr = SETTINGS[method]
    settings = {**settings, "targets": ["q", "v"]}
    if method == "adalora":  # the schedule in proportion to the run: 5, 10, 5 at 40 steps
        settings.update(tinit=steps // 8, tfinal=steps // 4, delta_t=max(1, steps // 8))
    manual_seed(seed)
    model, tokenizer = load_model("base-mini")
    train_set, val_set = _datasets(tokenizer, model.config.block_size)
    apply_method(model, method, settings)
    trainable = parameter_report(model)["trainable"]
    hooks = training_hooks(model, method, settings, lr, steps)
    allocator = hooks.pop("allocator", None)
    memory.reset_peak()
    config = TrainConfig(max_steps=steps, batch_size=batch, lr=lr, eval_every=eval_every, eval_batches=4,
                         warmup_steps=steps // 10, seed=seed, progress=False)
    result = train(model, train_set, val_set, config, **hooks)
    curve = [(0, result.val_loss_before)]
    curve += [(row["step"], row["val_loss"]) for row in result.history if "val_loss" in row]

    x = tensor(eval_batches(val_set, batch, 1, seed)[0][0])
    model.eval()

    def latency():
        times = []
        with no_grad():
            for _ in range(5):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
        return float(np.median(times))

    unmerged_s = latency()
    merge_and_unload_glora(merge_and_unload(model))
    merged_s = latency()
    return {"method": method, "seed": seed, "lr": lr, "settings": settings, "trainable": trainable,
            "val_loss": result.val_loss_after, "curve": curve, "step_s": result.median_step_time,
            "peak_bytes": result.peak_bytes, "unmerged_forward_s": unmerged_s, "merged_forward_s": merged_s,
            "rank_allocation": allocator.rank_allocation() if allocator else None}


def summarise(runs: list, target: float) -> dict:
    import numpy as np

    table = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == method]
        losses = [r["val_loss"] for r in mine]
        reach = [next((s for s, v in r["curve"] if v <= target), None) for r in mine]
        table[method] = {
            "trainable": mine[0]["trainable"], "lr": mine[0]["lr"],
            "val_loss_mean": float(np.mean(losses)), "val_loss_spread": float(np.max(losses) - np.min(losses)),
            "steps_to_target": float(np.mean(reach)) if all(s is not None for s in reach) else None,
            "reached_target": f"{sum(s is not None for s in reach)}/{len(reach)}",
            "step_ms": 1000 * float(np.median([r["step_s"] for r in mine])),
            "peak_mib": max(r["peak_bytes"] for r in mine) / 2**20,
            "merged_ms": 1000 * float(np.median([r["merged_forward_s"] for r in mine])),
            "unmerged_ms": 1000 * float(np.median([r["unmerged_forward_s"] for r in mine])),
        }
    return table


def markdown(table: dict, target: float) -> str:
    lines = ["| method | trainable | lr | val loss (mean ± spread) | steps to val ≤ %.2f | step ms | peak MiB | "
             "merged / unmerged fwd ms |" % target, "|---|---:|---:|---|---:|---:|---:|---|"]
    for method, row in table.items():
        reach = (f"{row['steps_to_target']:.0f}" if row["steps_to_target"] is not None
                 else f"— ({row['reached_target']})")
        lines.append(f"| {method} | {row['trainable']:,} | {row['lr']:g} | {row['val_loss_mean']:.3f} ± "
                     f"{row['val_loss_spread']:.3f} | {reach} | {row['step_ms']:.0f} | {row['peak_mib']:.1f} | "
                     f"{row['merged_ms']:.0f} / {row['unmerged_ms']:.0f} |")
    return "\n".join(lines)


def plot(runs: list, path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r["method"] for r in runs):
        curves = [r["curve"] for r in runs if r["method"] == method]
        steps = [s for s, _ in curves[0]]
        ax.plot(steps, np.mean([[v for _, v in c] for c in curves], axis=0), marker="o", ms=3, label=method)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (mean over seeds)")
    ax.set_title("LoRA family on the E2E-style task (base-mini, q,v)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lora_family", description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(SETTINGS), help="comma list (default: all)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--target", type=float, default=1.8, help="validation loss for 'steps to target' (1.8)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1: a shared 2-core box)")
    parser.add_argument("--out", default=None, help="result JSON (default benchmarks/results/lora_family.json)")
    args = parse_args(parser, argv)
    import os
    import time

    runs = []
    started = time.perf_counter()
    for method in args.methods.split(","):
        for seed in range(args.seeds):
            run = run_one(method, seed, args.steps, args.batch, args.eval_every)
            runs.append(run)
            print(f"{method:<9} seed {seed}: val {run['val_loss']:.3f}, step {run['step_s'] * 1000:.0f} ms", flush=True)
    table = summarise(runs, args.target)
    md = markdown(table, args.target)
    print(md)
    png = os.path.splitext(args.out or str(RESULTS_DIR / "lora_family.json"))[0] + ".png"
    plotted = plot(runs, png)
    write_result({"benchmark": "lora_family", "command": command_line("benchmarks.lora_family", argv),
                            "machine": machine_info("cpu"), "load_average": os.getloadavg(),
                            "seconds": time.perf_counter() - started, "steps": args.steps, "seeds": args.seeds,
                            "batch": args.batch, "target": args.target, "table": table, "markdown": md,
                            "runs": runs, "plot": png if plotted else None}, args.out, "lora_family")
    return 0


if __name__ == "__main__":
    sys.exit(main())
