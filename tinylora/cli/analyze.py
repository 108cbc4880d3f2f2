"""`tinylora analyze`: the LoRA paper's §7 analyses, at laptop scale, over several seeds, in one command.

From the shipped base ("base-mini", 4 layers, d = 128) on the embedded E2E-style task
(the demo's data), train LoRA on W_q and W_v of every layer with each rank of --ranks
(default r = 1, 2, 4, 8, 16, 64; α fixed at 8, one learning rate), once per seed of --seeds
(default 0, 1, 2). Every adapter is saved (OUT/adapters/seed<s>_r<r>.safetensors) so each number
can be recomputed. Then, for each seed, and as mean ± standard deviation over seeds:

  Figure 3   φ(A_{r=small}, A_{r=large}, i, j) for ΔW_q and ΔW_v of the middle layer: large is the
             largest rank of --ranks, small the smallest rank >= 8 below it (else the largest below it)
             (the paper's 8 and 64); an adapter is never compared with itself
  Figure 4   φ(A_{r=large, seed a}, A_{r=large, seed b}, i, i) for every pair of seeds
  Table 7    ‖Uᵀ W_q Vᵀ‖_F for ΔW_q's, W_q's and random top-r directions, r = 4 (else small) and large;
             ‖ΔW_q‖_F, ‖W_q‖_F and the amplification factor
  spectrum   the effective rank of every ΔW
  Table 6    validation loss against r (the rank sweep)

Everything goes to OUT (results.json with the run's provenance, RESULTS.md, and PNGs if matplotlib
is installed). The random baseline of φ matters at this width: for random subspaces
E φ(i, j) = max(i, j)/d, which at d = 128 and j = 64 is already 0.5 (the paper's d = 12288 makes it 0.005).
"""

from __future__ import annotations

import json
import os
import time
from itertools import combinations

import numpy as np

from tinylora.analysis import effective_rank, phi_grid, random_phi_expectation, singular_values, table7
from tinylora.analysis.provenance import provenance
from tinylora.analysis.sweep import save_updates, train_adapter

PAPER_TABLE7 = {4: {"proj_dW": 0.32, "proj_W": 21.67, "proj_random": 0.02, "norm_dW": 6.91, "amplification": 21.5},
                64: {"proj_dW": 1.90, "proj_W": 37.71, "proj_random": 0.33, "norm_dW": 3.57, "amplification": 1.9}}
PAPER_NORM_W = 61.95
TABLE7_KEYS = ("proj_dW", "proj_W", "proj_random", "norm_dW", "norm_W", "amplification")


def figure3_ranks(ranks) -> tuple[int, int]:
    """(small, large): the two different ranks Figure 3 compares (the paper's 8 and 64)."""
    ranks = sorted(set(ranks))
    if len(ranks) < 2:
        raise ValueError(f"--ranks needs at least two different ranks (Figure 3 compares a smaller adapter with a "
                         f"larger one), got {','.join(map(str, ranks))}")
    below = ranks[:-1]
    return min((r for r in below if r >= 8), default=below[-1]), ranks[-1]


def check_seeds(seeds) -> list[int]:
    """The seeds as a list of at least two different integers (Figure 4 compares two seeds)."""
    seeds = list(dict.fromkeys(seeds))
    if len(seeds) < 2:
        raise ValueError(f"--seeds needs at least two different seeds (Figure 4 compares adapters of two seeds), "
                         f"got {','.join(map(str, seeds))}")
    return seeds


def spread(values) -> dict:
    """{"mean", "sd", "values"}: the sample standard deviation over seeds (or seed pairs)."""
    values = [float(v) for v in values]
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "sd": sd, "values": values}


def run_analysis(out_dir: str = "runs/analyze", ranks=(1, 2, 4, 8, 16, 64), steps: int = 40, batch_size: int = 8,
                 lr: float = 3e-2, alpha: float = 8, seeds=(0, 1, 2), device=None, command: str | None = None) -> dict:
    """Train the adapters, compute every analysis per seed and over seeds, write OUT/results.json, RESULTS.md,
    the adapters and the PNGs; return the results."""
    from tinylora.cli.demo import _datasets
    from tinylora.model.load import load_model

    small, large = figure3_ranks(ranks)
    seeds = check_seeds(seeds)
    ranks = sorted(set(ranks))
    began = provenance(command, device or "cpu")
    started = time.perf_counter()
    os.makedirs(os.path.join(out_dir, "adapters"), exist_ok=True)
    base, tokenizer = load_model("base-mini", device=device)
    train_set, val_set = _datasets(tokenizer, base.config.block_size)
    load_base = lambda: load_model("base-mini", device=device)[0]  # noqa: E731: a fresh base per adapter
    settings = {"steps": steps, "batch_size": batch_size, "lr": lr, "alpha": alpha, "targets": ["q", "v"],
                "ranks": ranks, "seeds": seeds}
    layer, d = base.config.n_layer // 2, base.config.n_embd
    runs = {}  # seed -> r -> train_adapter result
    for seed in seeds:
        for r in ranks:
            run = train_adapter(load_base, train_set, val_set, r, alpha=alpha, targets=("q", "v"), steps=steps,
                                lr=lr, batch_size=batch_size, seed=seed)
            save_updates(run, os.path.join(out_dir, "adapters", f"seed{seed}_r{r}.safetensors"))
            runs.setdefault(seed, {})[r] = run
            print(f"seed {seed}, r={r:3d}: validation loss {run['val_loss_before']:.4f} -> {run['val_loss']:.4f}",
                  flush=True)
    results = analyse(runs, layer, d, small, large)
    results.update({"settings": settings, "provenance": began, "seconds": time.perf_counter() - started,
                    "adapters": "adapters/seed<s>_r<r>.safetensors (tinylora.analysis.sweep.load_updates)"})
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_report(results, out_dir)
    plot(results, out_dir)
    return results


def analyse(runs: dict, layer: int, d: int, small: int, large: int) -> dict:
    """Every analysis of trained adapters runs[seed][r] (their "updates"), per seed and as spreads over seeds."""
    seeds, ranks = list(runs), list(runs[next(iter(runs))])
    table7_ranks = sorted({4 if 4 in ranks else small, large})
    results = {"layer": layer, "d": d, "figure3_ranks": [small, large], "table7_ranks": table7_ranks,
               "rank_sweep": [], "figure3": {}, "figure4": {}, "table7": {}, "effective_rank": {}}
    for r in ranks:
        results["rank_sweep"].append({"r": r, "trainable": runs[seeds[0]][r]["trainable"],
                                      "val_loss_before": runs[seeds[0]][r]["val_loss_before"],
                                      "val_loss": spread(runs[s][r]["val_loss"] for s in seeds)})
    pairs = list(combinations(seeds, 2))
    for target in ("q", "v"):
        name = f"blocks.{layer}.attn.{target}"
        g3 = [phi_grid(runs[s][small]["updates"][name]["A"], runs[s][large]["updates"][name]["A"]) for s in seeds]
        g4 = [phi_grid(runs[a][large]["updates"][name]["A"], runs[b][large]["updates"][name]["A"]) for a, b in pairs]
        results["figure3"][target] = {
            "ranks": [small, large], "phi": np.mean(g3, axis=0).tolist(),
            "phi_1_1": spread(g[0, 0] for g in g3), "random_1_1": random_phi_expectation(1, 1, d),
            "phi_1_large": spread(g[0, -1] for g in g3), "random_1_large": random_phi_expectation(1, large, d)}
        results["figure4"][target] = {
            "seed_pairs": [list(p) for p in pairs], "phi": np.mean(g4, axis=0).tolist(),
            "phi_diag": [spread(g[i, i] for g in g4) for i in range(large)],
            "random_diag": [random_phi_expectation(i + 1, i + 1, d) for i in range(large)]}
    for r in table7_ranks:
        per_seed = [table7(runs[s][r]["updates"][f"blocks.{layer}.attn.q"]["W0"],
                           runs[s][r]["updates"][f"blocks.{layer}.attn.q"]["delta"], r, seed=s) for s in seeds]
        results["table7"][str(r)] = {key: spread(row[key] for row in per_seed) for key in TABLE7_KEYS}
    for r in ranks:
        results["effective_rank"][str(r)] = {
            name.replace("blocks.", "").replace(".attn", ""):
                float(np.mean([effective_rank(singular_values(runs[s][r]["updates"][name]["delta"])) for s in seeds]))
            for name in runs[seeds[0]][r]["updates"]}
    return results


def _ms(entry: dict, digits: int = 3) -> str:
    """'mean ± sd' of a spread()."""
    return f"{entry['mean']:.{digits}f} ± {entry['sd']:.{digits}f}"


def write_report(results: dict, out_dir: str) -> None:
    """RESULTS.md: every number, as mean ± sd over seeds, beside the paper's."""
    d, layer, st = results["d"], results["layer"], results["settings"]
    small, large = results["figure3_ranks"]
    seeds = ", ".join(map(str, st["seeds"]))
    prov = results.get("provenance", {})
    lines = [f"# The LoRA paper's §7 analyses on base-mini (d = {d}, layer {layer}, W_q and W_v), seeds {seeds}", "",
             f"Settings: {st['steps']} steps of batch {st['batch_size']}, lr {st['lr']}, α = {st['alpha']}, "
             f"ranks {st['ranks']}; {results['seconds']:.0f} s. Command: `{prov.get('command')}` "
             f"(git {prov.get('git', {}).get('commit')}, {prov.get('machine', {}).get('cpu_model')}).", "",
             "Every number is the mean ± sample standard deviation over the seeds (Figure 4: over seed pairs).", "",
             "## Rank sweep (validation loss; paper's Table 6 / App. H.2 in miniature)", "",
             "| r | trainable | val loss before | val loss after | per seed |", "|---:|---:|---:|---:|---|"]
    lines += [f"| {row['r']} | {row['trainable']:,} | {row['val_loss_before']:.4f} | {_ms(row['val_loss'], 4)} | "
              f"{' / '.join(f'{v:.4f}' for v in row['val_loss']['values'])} |" for row in results["rank_sweep"]]
    lines += ["", f"## Figure 3: φ(A_{{r={small}}}, A_{{r={large}}}, i, j)", "",
              f"| target | φ(1, 1) | random E φ(1, 1) | φ(1, {large}) | random E φ(1, {large}) | paper |",
              "|---|---:|---:|---:|---:|---|"]
    for t, f3 in results["figure3"].items():
        lines.append(f"| {t} | {_ms(f3['phi_1_1'])} | {f3['random_1_1']:.4f} | {_ms(f3['phi_1_large'])} | "
                     f"{f3['random_1_large']:.3f} | top direction shared, φ > 0.5 |")
    shown = [i for i in (1, 2, 4, 8, 16, 32, 64) if i <= large]
    lines += ["", f"## Figure 4: φ(A_{{r={large}, seed a}}, A_{{r={large}, seed b}}, i, i) over seed pairs", "",
              "| target | " + " | ".join(f"i = {i}" for i in shown) + f" | random at i = {shown[-1]} |",
              "|---|" + "---:|" * (len(shown) + 1)]
    for t, f4 in results["figure4"].items():
        cells = " | ".join(_ms(f4["phi_diag"][i - 1]) for i in shown)
        lines.append(f"| {t} | {cells} | {f4['random_diag'][shown[-1] - 1]:.3f} |")
    lines += ["", "## Table 7: ‖Uᵀ W_q Vᵀ‖_F (paper: GPT-3, layer 48, ‖W_q‖_F = 61.95)", "",
              "| r | ΔW_q dirs | W_q dirs | random dirs | ‖ΔW_q‖_F | ‖W_q‖_F | amplification | amplification per seed "
              "| paper (ΔW / W / random, ‖ΔW‖, factor) |", "|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r, row in results["table7"].items():
        p = PAPER_TABLE7.get(int(r))
        paper = (f"{p['proj_dW']} / {p['proj_W']} / {p['proj_random']}, {p['norm_dW']}, {p['amplification']}"
                 if p else "n/a")
        lines.append(f"| {r} | {_ms(row['proj_dW'])} | {_ms(row['proj_W'])} | {_ms(row['proj_random'])} | "
                     f"{_ms(row['norm_dW'])} | {row['norm_W']['mean']:.3f} | {_ms(row['amplification'], 1)} | "
                     f"{' / '.join(f'{v:.1f}' for v in row['amplification']['values'])} | {paper} |")
    first = next(iter(results["effective_rank"].values()))
    lines += ["", "## Effective rank of ΔW (exp of the entropy of its normalised singular values; mean over seeds)", "",
              "| r | " + " | ".join(first) + " |", "|---:|" + "---:|" * len(first)]
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
            ax.set_title(f"ΔW_{target}, layer {results['layer']}, mean over seeds")
            ax.set_xlabel("j")
            ax.set_ylabel("i")
        fig.colorbar(image, ax=axes, label="φ(i, j)")
        fig.savefig(os.path.join(out_dir, f"{fig_name}.png"), dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    sweep = results["rank_sweep"]
    ax.errorbar([row["r"] for row in sweep], [row["val_loss"]["mean"] for row in sweep],
                yerr=[row["val_loss"]["sd"] for row in sweep], fmt="o-", capsize=3)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank r (W_q, W_v, every layer)")
    ax.set_ylabel("validation loss")
    ax.set_title(f"rank sweep on base-mini, seeds {', '.join(map(str, results['settings']['seeds']))}")
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
    p.add_argument("--seeds", type=flags.checked_int_list(0), default="0,1,2",
                   help="one adapter per rank and seed (comma list, at least two; default 0,1,2)")
    p.add_argument("--device", default=None)


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(part) for part in str(text).split(",")]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated integers such as 1,4,8; got {text!r}") from None


def run(args) -> None:
    import shlex

    ranks, seeds = _int_list(args.ranks, "--ranks"), _int_list(args.seeds, "--seeds")
    if min(ranks) < 1:
        raise ValueError(f"--ranks must be positive integers, got {args.ranks}")
    run_analysis(args.out, ranks=ranks, steps=args.steps, batch_size=args.batch_size, lr=args.lr, alpha=args.alpha,
                 seeds=seeds, device=args.device, command=shlex.join(["tinylora", *map(str, getattr(args, "argv", ["analyze"]))]))
    print(f"wrote {args.out}/results.json and {args.out}/RESULTS.md")
