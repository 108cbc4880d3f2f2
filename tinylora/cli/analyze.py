"""`tinylora analyze`: the LoRA paper's §7 analyses, at laptop scale, in one command.

From the shipped base ("base-mini", 4 layers, d = 128) on the embedded E2E-style task
(the demo's data), train LoRA on W_q and W_v of every layer with r = 1, 2, 4, 8, 16, 64
(α fixed at 8, one learning rate), plus a second r = 64 adapter from another seed. Then:

  Figure 3   φ(A_{r=8}, A_{r=64}, i, j), i <= 8, j <= 64, for ΔW_q and ΔW_v of the middle layer
  Figure 4   φ(A_{r=64, seed 0}, A_{r=64, seed 1}, i, j), i, j <= 64
  Table 7    ‖Uᵀ W_q Vᵀ‖_F for ΔW_q's, W_q's and random top-r directions, r = 4 and 64;
             ‖ΔW_q‖_F, ‖W_q‖_F and the amplification factor
  spectrum   the effective rank of every ΔW
  Table 6    validation loss against r (the rank sweep)

Everything goes to OUT (results.json, RESULTS.md, and PNGs if matplotlib is installed).
The random baseline of φ matters at this width: for random subspaces E φ(i, j) = max(i, j)/d,
which at d = 128 and j = 64 is already 0.5 (the paper's d = 12288 makes it 0.005).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from tinylora.analysis import effective_rank, phi_grid, random_phi_expectation, singular_values, table7
from tinylora.analysis.sweep import rank_sweep, train_adapter

PAPER_TABLE7 = {4: {"proj_dW": 0.32, "proj_W": 21.67, "proj_random": 0.02, "norm_dW": 6.91, "amplification": 21.5},
                64: {"proj_dW": 1.90, "proj_W": 37.71, "proj_random": 0.33, "norm_dW": 3.57, "amplification": 1.9}}
PAPER_NORM_W = 61.95


def run_analysis(out_dir: str = "runs/analyze", ranks=(1, 2, 4, 8, 16, 64), steps: int = 40, batch_size: int = 8,
                 lr: float = 3e-2, alpha: float = 8, seed: int = 0, device=None) -> dict:
    """Train the adapters, compute every analysis, write OUT/results.json (+ RESULTS.md, PNGs); return the results."""
    from tinylora.cli.demo import _datasets
    from tinylora.model.load import load_model

    started = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    base, tokenizer = load_model("base-mini", device=device)
    train_set, val_set = _datasets(tokenizer, base.config.block_size)
    load_base = lambda: load_model("base-mini", device=device)[0]  # noqa: E731: a fresh base per adapter
    settings = {"steps": steps, "batch_size": batch_size, "lr": lr, "alpha": alpha, "targets": ["q", "v"]}
    kwargs = {"steps": steps, "batch_size": batch_size, "lr": lr, "alpha": alpha, "targets": ("q", "v")}
    runs = {}
    for run in rank_sweep(load_base, train_set, val_set, ranks=ranks, seed=seed, **kwargs):
        runs[run["r"]] = run
        print(f"r={run['r']:3d}: validation loss {run['val_loss_before']:.4f} -> {run['val_loss']:.4f}", flush=True)
    second = train_adapter(load_base, train_set, val_set, max(ranks), seed=seed + 1, **kwargs)
    print(f"r={max(ranks):3d} (seed {seed + 1}): validation loss {second['val_loss']:.4f}", flush=True)

    layer = base.config.n_layer // 2
    results = {"settings": settings, "layer": layer, "d": base.config.n_embd,
               "rank_sweep": [{"r": r, "val_loss": run["val_loss"], "val_loss_before": run["val_loss_before"],
                               "trainable": run["trainable"]} for r, run in runs.items()],
               "figure3": {}, "figure4": {}, "table7": {}, "effective_rank": {}}
    small, big = min((r for r in ranks if r >= 8), default=max(ranks)), max(ranks)
    for target in ("q", "v"):
        name = f"blocks.{layer}.attn.{target}"
        g3 = phi_grid(runs[small]["updates"][name]["A"], runs[big]["updates"][name]["A"])
        g4 = phi_grid(runs[big]["updates"][name]["A"], second["updates"][name]["A"])
        results["figure3"][target] = {"ranks": [small, big], "phi": g3.tolist(),
                                      "phi_1_1": float(g3[0, 0]), "random_1_1": random_phi_expectation(1, 1, base.config.n_embd),
                                      "phi_1_64": float(g3[0, -1]),
                                      "random_1_64": random_phi_expectation(1, big, base.config.n_embd)}
        results["figure4"][target] = {"phi": g4.tolist(), "phi_diag": [float(g4[i, i]) for i in range(g4.shape[0])],
                                      "random_diag": [random_phi_expectation(i + 1, i + 1, base.config.n_embd)
                                                      for i in range(g4.shape[0])]}
    for r in (4, big):
        if r in runs:
            q = runs[r]["updates"][f"blocks.{layer}.attn.q"]
            results["table7"][str(r)] = table7(q["W0"], q["delta"], r, seed=seed)
    for r, run in runs.items():
        results["effective_rank"][str(r)] = {name.replace("blocks.", "").replace(".attn", ""):
                                             effective_rank(singular_values(u["delta"]))
                                             for name, u in run["updates"].items()}
    results["seconds"] = time.perf_counter() - started
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_report(results, out_dir)
    plot(results, out_dir)
    return results


def write_report(results: dict, out_dir: str) -> None:
    """RESULTS.md: every number beside the paper's."""
    d, layer = results["d"], results["layer"]
    lines = [f"# The LoRA paper's §7 analyses on base-mini (d = {d}, layer {layer}, W_q and W_v)", "",
             f"Settings: {results['settings']}; {results['seconds']:.0f} s.", "",
             "## Rank sweep (validation loss; paper's Table 6 / App. H.2 in miniature)", "",
             "| r | trainable | val loss before | val loss after |", "|---:|---:|---:|---:|"]
    lines += [f"| {row['r']} | {row['trainable']:,} | {row['val_loss_before']:.4f} | {row['val_loss']:.4f} |"
              for row in results["rank_sweep"]]
    lines += ["", "## Figure 3: φ(A_small, A_large, i, j)", "",
              "| target | φ(1, 1) | random E φ(1, 1) | φ(1, j_max) | random E φ(1, j_max) | paper |",
              "|---|---:|---:|---:|---:|---|"]
    for t, f3 in results["figure3"].items():
        lines.append(f"| {t} (r = {f3['ranks'][0]} vs {f3['ranks'][1]}) | {f3['phi_1_1']:.3f} | {f3['random_1_1']:.4f} "
                     f"| {f3['phi_1_64']:.3f} | {f3['random_1_64']:.3f} | top direction shared, φ > 0.5 |")
    lines += ["", "## Figure 4: φ(A_{r=64, seed 0}, A_{r=64, seed 1}, i, i)", "",
              "| target | i = 1 | i = 2 | i = 4 | i = 8 | i = 16 | random at i = 16 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for t, f4 in results["figure4"].items():
        diag = f4["phi_diag"]
        cells = " | ".join(f"{diag[i - 1]:.3f}" if i <= len(diag) else "n/a" for i in (1, 2, 4, 8, 16))
        rnd = f4["random_diag"][15] if len(f4["random_diag"]) >= 16 else float("nan")
        lines.append(f"| {t} | {cells} | {rnd:.3f} |")
    lines += ["", "## Table 7: ‖Uᵀ W_q Vᵀ‖_F (paper: GPT-3, layer 48, ‖W_q‖_F = 61.95)", "",
              "| r | ΔW_q dirs | W_q dirs | random dirs | ‖ΔW_q‖_F | ‖W_q‖_F | amplification | paper (ΔW / W / random, ‖ΔW‖, factor) |",
              "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r, row in results["table7"].items():
        p = PAPER_TABLE7.get(int(r))
        paper = (f"{p['proj_dW']} / {p['proj_W']} / {p['proj_random']}, {p['norm_dW']}, {p['amplification']}"
                 if p else "n/a")
        lines.append(f"| {r} | {row['proj_dW']:.3f} | {row['proj_W']:.3f} | {row['proj_random']:.3f} | "
                     f"{row['norm_dW']:.3f} | {row['norm_W']:.3f} | {row['amplification']:.1f} | {paper} |")
    lines += ["", "## Effective rank of ΔW (exp of the entropy of its normalised singular values)", "",
              "| r | " + " | ".join(results["effective_rank"][next(iter(results["effective_rank"]))]) + " |",
              "|---:|" + "---:|" * len(results["effective_rank"][next(iter(results["effective_rank"]))])]
    for r, row in results["effective_rank"].items():
        lines.append(f"| {r} | " + " | ".join(f"{v:.2f}" for v in row.values()) + " |")
    with open(os.path.join(out_dir, "RESULTS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(results: dict, out_dir: str) -> bool:
    """figure3.png, figure4.png, rank_sweep.png (False if matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    for fig_name, key in (("figure3", "figure3"), ("figure4", "figure4")):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5 if key == "figure3" else 5))
        for ax, (target, entry) in zip(axes, results[key].items()):
            grid = np.array(entry["phi"])
            image = ax.imshow(grid, vmin=0, vmax=1, aspect="auto", cmap="viridis", origin="upper",
                              extent=(0.5, grid.shape[1] + 0.5, grid.shape[0] + 0.5, 0.5))
            ax.set_title(f"ΔW_{target}, layer {results['layer']}")
            ax.set_xlabel("j")
            ax.set_ylabel("i")
        fig.colorbar(image, ax=axes, label="φ(i, j)")
        fig.savefig(os.path.join(out_dir, f"{fig_name}.png"), dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    sweep = results["rank_sweep"]
    ax.plot([row["r"] for row in sweep], [row["val_loss"] for row in sweep], "o-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank r (W_q, W_v, every layer)")
    ax.set_ylabel("validation loss")
    ax.set_title("rank sweep on base-mini")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "rank_sweep.png"), dpi=110)
    plt.close(fig)
    return True


def add_parser(sub) -> None:
    """The `tinylora analyze` subcommand's flags."""
    from tinylora.cli import flags

    p = sub.add_parser("analyze", help="the LoRA paper's rank analyses on the shipped base (φ, Table 7, rank sweep)",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--out", default="runs/analyze", help="where results.json, RESULTS.md and plots go")
    p.add_argument("--ranks", type=flags.checked_int_list(1), default="1,2,4,8,16,64",
                   help="ranks of the sweep (comma list; default 1,2,4,8,16,64)")
    p.add_argument("--steps", type=flags.POSITIVE_INT, default=40, help="training steps per adapter (default 40)")
    p.add_argument("--batch-size", type=flags.POSITIVE_INT, default=8, help="sequences per step (default 8)")
    p.add_argument("--lr", type=flags.POSITIVE, default=3e-2, help="peak learning rate")
    p.add_argument("--alpha", type=flags.POSITIVE, default=8, help="α, the same for every rank (default 8)")
    p.add_argument("--seed", type=flags.COUNT, default=0, help="seed of the initialisation and batches")
    p.add_argument("--device", default=None)


def run(args) -> None:
    ranks = tuple(int(r) for r in args.ranks.split(","))
    run_analysis(args.out, ranks=ranks, steps=args.steps, batch_size=args.batch_size, lr=args.lr, alpha=args.alpha,
                 seed=args.seed, device=args.device)
    print(f"wrote {args.out}/results.json and {args.out}/RESULTS.md")
