"""Aggregate per-seed records into quality.json, and write RESULTS.md and the plots."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
from collections import Counter
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import numpy as np

# Diagnostics shown as table columns when present (engine names first, then common alternatives).
DIAGNOSTIC_COLUMNS = (
    ("spearman", "Spearman"),
    ("mean_relative_error", "rel. err"),
    ("zero_order_relative_error", "zero-order rel. err"),
    ("closer_than_zero_order", "closer than zero-order"),
    ("paper_metric", "paper metric"),
)


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        torch_version, threads = torch.__version__, torch.get_num_threads()
    except ImportError:  # pragma: no cover
        torch_version, threads = "absent", None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch_version,
        "torch_threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def load_text(machine: dict) -> str:
    """The machine line's load figure, read the same way in every report."""
    return (f"1-minute load average {machine.get('load_average_1m')} when this file was written (a load above the "
            "core count means other processes shared the CPUs and inflated the times)")


def flatten_numeric(value: Any, prefix: str = "") -> dict[str, float]:
    """{"a": {"b": 1.0}, "c": 2} -> {"a.b": 1.0, "c": 2.0}; non-numeric leaves are dropped."""
    flat: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            flat.update(flatten_numeric(item, f"{prefix}{key}."))
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        flat[prefix[:-1]] = float(value)
    return flat


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return mean(values) if values else None


def _std(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return stdev(values) if len(values) >= 2 else None


def summarize(records: list[dict], quick: bool, sizes: dict) -> dict:
    """Per-seed records of one (dataset, method) -> the quality.json entry."""
    records = sorted(records, key=lambda r: r["seed"])
    tokens = [_tokens(r) for r in records]
    accuracy = [r["accuracy"] for r in records]
    macro_f1 = [r["macro_f1"] for r in records]
    entry = {
        "accuracy_mean": _mean(accuracy),
        "accuracy_std": _std(accuracy),
        "macro_f1_mean": _mean(macro_f1),
        "macro_f1_std": _std(macro_f1),
        "passes_mean": _mean([r["passes"] for r in records]),
        "tokens_mean": None if None in tokens else _mean(tokens),
        "seconds_mean": _mean([r["seconds"] for r in records]),
        "eval_passes_mean": _mean([r.get("eval_passes") for r in records]),
        "accuracy_ci95": accuracy_ci(records),
        "n_seeds": len(records),
        "quick": quick,
        "sizes": sizes,
        "seeds": records,
    }
    chosen = {r["seed"]: r["strategy"]["chosen"] + (" (gate)" if r["strategy"].get("by") == "gate" else "")
              for r in records if r.get("strategy")}
    if chosen:  # gradient's params.strategy: which prompt it returned on each seed
        entry["strategy_per_seed"] = chosen
        lost = {r["seed"]: r["searched_set"]["accuracy"] for r in records if r.get("searched_set")}
        if lost:  # where retrieval won: what the searched set would have scored on the test queries
            entry["searched_set_accuracy_per_seed"] = lost
    diagnostics = [flatten_numeric(r.get("diagnostics") or {}) for r in records]
    names = sorted({name for d in diagnostics for name in d})
    if names:
        entry["diagnostics_mean"] = {name: _mean([d.get(name) for d in diagnostics]) for name in names}
    return entry


# methods that need no model search: what the default must beat (per-query retrieval included)
BASELINES = ("random", "bm25-per-query", "topk-embed-per-query", "topk-sentence-per-query", "bm25-set",
             "topk-embed-set")
DEFAULT_METHOD = "gradient"
BOOTSTRAP = 4000  # resamples of the paired bootstrap


def _correct(record: dict) -> list[int] | None:
    """Per test query 1/0 of one record (a random method's draws: their mean per query)."""
    if record.get("correct"):
        return record["correct"]
    draws = [d.get("correct") for d in record.get("draws") or []]
    if draws and all(draws):
        return [sum(column) / len(column) for column in zip(*draws)]
    return None


def _bootstrap_mean(per_seed: list[list[float]], rng) -> list[float]:
    """95% interval of the mean over seeds of each seed's mean, resampling seeds and, within each, test queries."""
    arrays = [np.asarray(values, dtype=float) for values in per_seed]
    means = np.empty(BOOTSTRAP)
    for i in range(BOOTSTRAP):
        picked = rng.integers(0, len(arrays), len(arrays))
        means[i] = np.mean([arrays[j][rng.integers(0, len(arrays[j]), len(arrays[j]))].mean() for j in picked])
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def accuracy_ci(records: list[dict]) -> list[float] | None:
    """95% bootstrap interval of the mean held-out accuracy over ``records`` (seeds and test queries resampled)."""
    per_seed = [_correct(r) for r in records]
    if not per_seed or any(c is None for c in per_seed):
        return None
    return _bootstrap_mean(per_seed, np.random.default_rng(1))


def paired_comparison(by_method: dict[str, list[dict]], method: str = DEFAULT_METHOD) -> dict | None:
    """``method`` against the best baseline on the seeds both ran: per seed the accuracy difference on the same
    test queries; a 95% interval of the mean difference from a paired bootstrap that resamples seeds and, within
    each, test queries (the same queries for both methods); wins/ties/losses over seeds."""
    mine = {r["seed"]: r for r in by_method.get(method, [])}
    candidates = {}
    for name in BASELINES:
        theirs = {r["seed"]: r for r in by_method.get(name, [])}
        seeds = sorted(set(mine) & set(theirs))
        if seeds:
            candidates[name] = (mean(theirs[s]["accuracy"] for s in seeds), theirs)
    if not candidates:
        return None
    best = max(candidates, key=lambda name: candidates[name][0])
    return {"method": method, "best_baseline": best, **_paired_difference(mine, candidates[best][1])}


def _paired_difference(mine: dict[int, dict], theirs: dict[int, dict]) -> dict:
    """seed -> record of two runs -> on the seeds both ran: per seed mine minus theirs on the same test queries,
    wins/ties/losses over seeds and a 95% interval of the mean difference from a paired bootstrap that resamples
    seeds and, within each, test queries (None without per-query records)."""
    seeds = sorted(set(mine) & set(theirs))
    diffs = [mine[s]["accuracy"] - theirs[s]["accuracy"] for s in seeds]
    out = {"seeds": seeds, "diff_mean": mean(diffs) if diffs else None, "diff_per_seed": diffs,
           "wins": sum(d > 0 for d in diffs), "ties": sum(d == 0 for d in diffs),
           "losses": sum(d < 0 for d in diffs), "diff_ci95": None}
    per_query = [(_correct(mine[s]), _correct(theirs[s])) for s in seeds]
    if seeds and all(a is not None and b is not None and len(a) == len(b) for a, b in per_query):
        gaps = [[x - y for x, y in zip(a, b)] for a, b in per_query]  # [seed][query], the same queries paired
        out["diff_ci95"] = _bootstrap_mean(gaps, np.random.default_rng(0))
    return out


def _tokens(record: dict) -> float | None:
    """Tokens a model run computed for the selection and the search's diagnostic checks, forward + 2 x backward
    (what the time goes by: a per-query prompt's row carries its own demos, a shared prefix is computed once); None
    where the record has no pass counter (per-query baselines)."""
    detail = record.get("passes_detail") or {}
    if "tokens_forward" not in detail:
        return None
    return detail["tokens_forward"] + 2 * detail.get("tokens_backward", 0)


def _ratio(entry: dict, exact: dict | None, name: str) -> str:
    """entry's mean ``name`` over exact's, or n/a."""
    if not exact or not exact.get(name) or entry.get(name) is None:
        return "n/a"
    return f"{entry[name] / exact[name]:.2f}"


def comparison_table(quality: dict, dataset: str) -> str | None:
    entry = quality[dataset].get(DEFAULT_METHOD) or {}
    c = entry.get("comparison")
    if not c:
        return None
    ci = "n/a (no per-query records)" if c["diff_ci95"] is None else f"[{c['diff_ci95'][0]:+.3f}, {c['diff_ci95'][1]:+.3f}]"
    exact = quality[dataset].get("exact")
    return "\n".join([
        "| default | best baseline | seeds | mean difference | 95% CI (paired bootstrap: seeds, test queries) "
        "| wins / ties / losses | passes / exact's | tokens / exact's |", "|---|---|---|---|---|---|---|---|",
        f"| `{c['method']}` | `{c['best_baseline']}` | {' '.join(map(str, c['seeds']))} | {c['diff_mean']:+.3f} | {ci} "
        f"| {c['wins']} / {c['ties']} / {c['losses']} | {_ratio(entry, exact, 'passes_mean')} "
        f"| {_ratio(entry, exact, 'tokens_mean')} |"])


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _fmt_mean_std(mean_value: float | None, std_value: float | None) -> str:
    if mean_value is None:
        return "n/a"
    return f"{mean_value:.3f}" + (f" ± {std_value:.3f}" if std_value is not None else "")


def _diagnostic(entry: dict, name: str) -> float | None:
    means = entry.get("diagnostics_mean") or {}
    if name in means:
        return means[name]
    hits = [value for key, value in means.items() if key.split(".")[-1] == name]
    return hits[0] if len(hits) == 1 else None


def _prediction_share(entry: dict) -> str:
    """Mean share of the most frequent predicted label (1.0 = the model answers one label for all)."""
    shares = []
    for record in entry["seeds"]:
        counts = record.get("prediction_counts") or {}
        total = sum(counts.values())
        if total:
            shares.append(max(counts.values()) / total)
    return _fmt(_mean(shares), 2)


def results_table(quality: dict, dataset: str) -> str:
    methods = quality[dataset]
    diag_names = [(name, title) for name, title in DIAGNOSTIC_COLUMNS
                  if any(_diagnostic(entry, name) is not None for entry in methods.values())]
    header = ["method", "accuracy (± std over seeds) [95% CI]", "macro-F1", "selection passes (fwd-eq)", "selection s", "top-label share", "seeds"]
    header += [title for _, title in diag_names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in methods.items():
        ci = entry.get("accuracy_ci95")
        row = [name, _fmt_mean_std(entry["accuracy_mean"], entry["accuracy_std"])
               + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
               _fmt_mean_std(entry["macro_f1_mean"], entry["macro_f1_std"]),
               _fmt(entry["passes_mean"], 0), _fmt(entry["seconds_mean"], 1), _prediction_share(entry),
               str(entry["n_seeds"])]
        row += [_fmt(_diagnostic(entry, diag)) for diag, _ in diag_names]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def diagnostics_table(quality: dict, dataset: str) -> str | None:
    """Every numeric diagnostic the engine reported, averaged over seeds (gradient-based methods)."""
    rows = [(name, entry["diagnostics_mean"]) for name, entry in quality[dataset].items() if entry.get("diagnostics_mean")]
    if not rows:
        return None
    lines = ["| method | diagnostic | mean over seeds |", "|---|---|---|"]
    for name, means in rows:
        for key, value in means.items():
            lines.append(f"| {name} | {key} | {_fmt(value, 4)} |")
    return "\n".join(lines)


def models_table(models: dict[str, dict], dataset: str) -> str | None:
    """Held-out accuracy (mean ± std, seeds) of each method on ``dataset`` under each model: ``models`` maps a
    model's name to its quality.json content. None unless at least two models ran the dataset."""
    ran = {name: quality[dataset] for name, quality in models.items() if quality.get(dataset)}
    if len(ran) < 2:
        return None
    methods = list(dict.fromkeys(m for by_method in ran.values() for m in by_method))
    lines = ["| method | " + " | ".join(ran) + " |", "|---|" + "---|" * len(ran)]
    for method in methods:
        cells = []
        for by_method in ran.values():
            entry = by_method.get(method)
            cells.append("not run" if entry is None else
                         f"{_fmt_mean_std(entry['accuracy_mean'], entry['accuracy_std'])} ({entry['n_seeds']} seeds)")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_comparison(mine: dict, theirs: dict, method: str = DEFAULT_METHOD) -> dict | None:
    """``method`` under another model (``theirs``: its quality.json entry for one dataset) minus under this one
    (``mine``), on the seeds both ran: the same splits and test queries, so the paired bootstrap of
    paired_comparison applies. None unless both ran it with per-query records."""
    by_seed = [{r["seed"]: r for r in (entry.get(method) or {}).get("seeds", [])} for entry in (theirs, mine)]
    out = {"method": method, **_paired_difference(*by_seed)}
    return out if out["diff_ci95"] is not None else None


def write_results_md(path: Path, quality: dict, run: dict, method_notes: dict[str, str], plots: list[str]) -> None:
    machine = run["machine"]
    out = ["# iclsel quality benchmark", ""]
    out.append("This file is regenerated by the benchmark; do not edit by hand.")
    out.append("")
    if run["quick"]:
        out += ["> **QUICK RUN (smoke test), not the full protocol.** Actual sizes: "
                + run["sizes_text"] + ". Figures from a quick run are noisy and must not be quoted as the "
                "benchmark result; run the command without `--quick` for the full protocol ("
                + run.get("full_text", "see bench/quality.py") + ").", ""]
    else:
        out += [f"Sizes: {run['sizes_text']}.", ""]
    out += ["Command:", "", "    " + run["command"], ""]
    out.append(f"Machine: {machine['cpu']}, {machine['cores']} cores (torch {machine['torch']}, "
               f"{machine['torch_threads']} threads), Python {machine['python']}; date {machine['date']}; "
               f"commit {machine['commit']}; {load_text(machine)}.")
    out.append(f"Engine source hash(es) of the records shown: {', '.join(run.get('engine_sources', []))}; "
               f"torch threads used by the records: {', '.join(run.get('threads_used', []))}.")
    if run.get("note"):
        out.append("")
        out.append(f"Note: {run['note']}")
        out.append("")
    out.append(f"Model: {run['model']} (fingerprint {run.get('model_fingerprint')}).")
    if run.get("interrupted") or run.get("incomplete"):
        out.append("")
        out.append("**Incomplete: not every (dataset, seed, method) of the command has finished; the table shows what has.**")
        if run.get("missing"):
            out.append(f"Not run: {', '.join(run['missing'])}.")
    if run.get("report_only"):
        out.append("")
        out.append("(Rebuilt from the journal `results/quality_runs.jsonl` with `--report-only`: nothing was re-run.)")
    out.append("")
    out.append("Protocol per dataset and seed: shuffle, then cut a label-balanced pool, a selection query set "
               "and a held-out test set, disjoint. Selection methods see the pool and the selection queries "
               "(with labels); per-query retrieval, and selection with params.retrieve, see the pool and each "
               "test query's input (never its label); every selection is scored on the held-out test queries only. Nothing is tuned on "
               "test queries. Accuracy and macro-F1 are mean ± sample std over seeds; the bracket is a 95% bootstrap interval of the mean accuracy (seeds and test queries resampled). Selection passes: "
               "model passes spent choosing the demos (forward = 1, backward = 2 forward-equivalents), "
               "as the engine reports them (`selection_forward_equivalent`); scoring on the test set and the "
               "engine's diagnostic checks are not included. Tokens / exact's (the default's comparison): the tokens "
               "the model computed for the selection and the search's diagnostic checks (forward + 2 x backward) over "
               "exact's, what the time goes by: a row after a shared prefix computes the query alone, a per-query "
               "prompt's row its own demos too. Selection s: wall time of the selection call, less "
               "its diagnostic checks (per-query: of the retrieval for all test queries). "
               "Top-label share: fraction of test predictions that are the most frequent predicted "
               "label (1.00 = the model answers one label for everything).")
    out.append("")
    for dataset in quality:
        info = run["datasets"].get(dataset, {})
        out.append(f"## {dataset}")
        out.append("")
        if info:
            out.append(f"Template `{json.dumps(info['template'])[1:-1]}`, k = {info['k']}, options {info['options']}, "
                       f"sizes {info['sizes']}, seeds {info['seeds']}.")
            out.append("")
        out.append(results_table(quality, dataset))
        out.append("")
        comparison = comparison_table(quality, dataset)
        if comparison:
            out += ["The default against the best baseline (the baseline with the highest mean accuracy on the "
                    "seeds both ran; per-query retrieval included), paired on the same test queries:", "",
                    comparison, ""]
        default = quality[dataset].get(DEFAULT_METHOD) or {}
        chosen = default.get("strategy_per_seed")
        if chosen:
            counts = Counter(chosen.values())
            lost = {str(seed): accuracy for seed, accuracy in (default.get("searched_set_accuracy_per_seed") or {}).items()}
            returned = {str(r["seed"]): r["accuracy"] for r in default.get("seeds", [])}

            def shown(seed, name):
                if str(seed) not in lost:
                    return f"{seed}: {name}"
                return f"{seed}: {name} {returned[str(seed)]:.3f}, the set {lost[str(seed)]:.3f}"

            out += ["Prompts the default returned (`params.strategy` auto, decided on held-out pool demos; "
                       "(gate): by the gate before the search, on the selection queries): "
                    + ", ".join(f"{name} on {n} seed{'s' * (n > 1)}" for name, n in counts.most_common())
                    + " (" + "; ".join(shown(seed, name) for seed, name in sorted(chosen.items(), key=lambda x: int(x[0])))
                    + "). Where retrieval was returned, the accuracy after it is the searched set's on the same test "
                      "queries, where the record has it (scored for the diagnosis of the choice only).", ""]
        diag = diagnostics_table(quality, dataset)
        if diag:
            out += ["Diagnostics reported by the engine (estimate against exact inference; mean over seeds):", "", diag, ""]
    other_models = run.get("other_models") or {}
    if other_models:
        models = {run["model"]: quality, **{name: other["quality"] for name, other in other_models.items()}}
        out += ["## Models side by side", "",
                "Held-out accuracy, mean ± std over the seeds each ran. The other models' tables, with their "
                "passes, seconds and commands: " + ", ".join(f"[{name}]({other['results_md']})"
                                                            for name, other in other_models.items()) + ".", ""]
        for dataset in dict.fromkeys(d for q in models.values() for d in q):
            table = models_table(models, dataset)
            if table:
                out += [f"### {dataset}", "", table, ""]
            for name, other in other_models.items():
                c = model_comparison(quality.get(dataset) or {}, other["quality"].get(dataset) or {})
                if c:
                    comparison = other["quality"][dataset].get(DEFAULT_METHOD, {}).get("comparison") or {}
                    against = ("" if not comparison.get("diff_ci95") else
                               f"; against its own best baseline (`{comparison['best_baseline']}`) "
                               f"{comparison['diff_mean']:+.3f} [{comparison['diff_ci95'][0]:+.3f}, "
                               f"{comparison['diff_ci95'][1]:+.3f}]")
                    out += [f"`{c['method']}` with {name} minus with {run['model']}, same test queries, seeds "
                            f"{' '.join(map(str, c['seeds']))}: {c['diff_mean']:+.3f} [{c['diff_ci95'][0]:+.3f}, "
                            f"{c['diff_ci95'][1]:+.3f}] (paired 95% CI), {c['wins']} / {c['ties']} / {c['losses']} "
                            f"wins / ties / losses{against}.", ""]
    if method_notes:
        out += ["## Methods", ""]
        out += [f"- `{name}`: {note}" for name, note in method_notes.items()]
        out.append("")
    if plots:
        out += ["## Plots", ""]
        out += [f"![{Path(p).stem}]({p})" for p in plots]
        out.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(out))
    tmp.replace(path)


def write_plots(quality: dict, out_dir: Path, quick: bool) -> list[Path]:
    """accuracy.png (per method per dataset) and accuracy_vs_passes.png; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in quality if quality[d]]
    if not datasets:
        return []
    suffix = " (QUICK RUN)" if quick else ""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        names = list(quality[dataset])
        means = [quality[dataset][n]["accuracy_mean"] or 0.0 for n in names]
        cis = [quality[dataset][n].get("accuracy_ci95") or [m, m] for n, m in zip(names, means)]
        errors = [[m - ci[0] for m, ci in zip(means, cis)], [ci[1] - m for m, ci in zip(means, cis)]]
        ax.bar(range(len(names)), means, yerr=errors, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("held-out accuracy (95% bootstrap CI)")
        ax.set_title(f"{dataset}{suffix}")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out_dir / "accuracy.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for name, entry in quality[dataset].items():
            x, y = entry["passes_mean"] or 0.0, entry["accuracy_mean"] or 0.0
            ax.errorbar([x], [y], yerr=[entry["accuracy_std"] or 0.0], fmt="o", capsize=3)
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("selection passes (forward-equivalents, symlog)")
        ax.set_ylabel("held-out accuracy")
        ax.set_title(f"{dataset}{suffix}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / "accuracy_vs_passes.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths
