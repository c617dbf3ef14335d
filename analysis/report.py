"""``report.md`` of ``awp demo``: every number and every claim computed from ``summary.json``.

Each comparison is a paired difference over seeds (:mod:`analysis.seeds`): its mean and 95%
t-interval are printed, and the words follow the interval: an effect "holds beyond the seed
spread" only when the interval excludes 0, and the report says so when it does not.
"""
from __future__ import annotations

from typing import Any

SHOWN = "{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"
SHARP = "{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def _diff(d: dict[str, Any], fmt: str = SHOWN) -> str:
    """'+0.012 [-0.004, +0.028]': mean and 95% interval of a paired difference."""
    return fmt.format(mean=d["mean"], lo=d["lo"], hi=d["hi"]) if d["n"] > 1 else f"{d['mean']:+.3f} (one seed)"


def _verdict(d: dict[str, Any], up: str, down: str) -> str:
    """The words for a paired difference: ``up`` / ``down`` beyond the seed spread, or neither."""
    if d["sign"] > 0:
        return f"{up}, beyond the seed spread"
    if d["sign"] < 0:
        return f"{down}, beyond the seed spread"
    return "not beyond the seed spread" + (" (one seed: no interval)" if d["n"] < 2 else "")


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def _names(methods: list[str]) -> str:
    return ", ".join(m.upper() for m in methods) or "none"


def _setup_paragraph(summary: dict[str, Any]) -> list[str]:
    setup, s = summary["setup"], summary["settings"]
    model = setup["model"] + (f" ({'-'.join(map(str, setup['channels']))} channels)" if setup.get("channels") else "")
    decays = ", ".join(f"{d:g}" for d in setup.get("decay_epochs", [])) or "none"
    seeds = ", ".join(map(str, summary["seeds"]))
    land = summary["landscape"]
    return ["# What the demo shows", "",
            f"Offline run on scikit-learn's 8x8 digits ({setup['train_images']} training images, {model}, "
            f"{setup['norm'].capitalize()} eps {setup['eps']:g}, PGD-{setup['attack_steps']} training attack, "
            f"{setup['epochs']} epochs, batch {setup['batch_size']}, lr {setup['lr']:g} decayed x{setup['lr_decay']:g} "
            f"at epoch {decays}), seeds {seeds}, {'quick version, ' if summary['quick'] else ''}"
            f"{summary['duration_s']:.0f} s in all. "
            "Sharpness = mean rise of the adversarial loss (PGD re-run at every perturbed weight) at "
            f"|alpha| = {s['radius']} along {s['directions']} filter-normalized random directions "
            f"({', '.join(map(str, land.get('attack', [])))}, {', '.join(map(str, land.get('samples', [])))} "
            f"{'/'.join(map(str, land.get('split', [])))} images); gap = train robust accuracy - test robust accuracy "
            f"({', '.join(summary['gap_attack'])}, unperturbed weights, {setup['test_images']} test images).", "",
            f"Every comparison is a paired difference over seeds (AWP minus base, or later minus earlier, "
            f"seed by seed), shown as mean [{summary['confidence']:.0%} interval] ({summary['interval']}); "
            "it holds beyond the seed spread when the interval excludes 0.", ""]


def _overfitting_section(summary: dict[str, Any]) -> list[str]:
    """The headline: does plain AT robust-overfit, and does AWP keep its test robustness up?"""
    o = summary.get("overfitting") or {}
    if "at_fall" not in o:
        return []
    lines = ["## Robust overfitting and AWP (fig_robust_overfitting; paper Fig. 1, Rice et al. 2020)", ""]
    at = o["at"]
    w = at[0]["window"]
    lines.append(
        f"AT's test robust accuracy from the early-stopping epoch (best validation robust accuracy: epochs "
        f"{', '.join(str(r['best_epoch']) for r in at)}) to the last epoch: "
        f"{' / '.join('{:.3f} -> {:.3f}'.format(r['test_best'], r['test_last']) for r in at)} (per seed), change "
        f"{_diff(o['at_fall'])}: {_verdict(o['at_fall'], 'it rose', 'it fell')}. Its robust test loss, mean of "
        f"{_epochs(w)} just after the first decay against the last {_epochs(w)}: change {_diff(o['at_loss_rise'])}: "
        f"{_verdict(o['at_loss_rise'], 'it rose', 'it fell')}.")
    if "awp_minus_at_test_last" in o:
        last, best = o["awp_minus_at_test_last"], o["awp_minus_at_test_best"]
        lines.append(
            f"AT-AWP minus AT, last checkpoint's test robust accuracy: {_diff(last)}: "
            f"{_verdict(last, 'AWP raised it', 'AWP lowered it')}; at each run's early-stopping epoch: {_diff(best)}: "
            f"{_verdict(best, 'AWP higher', 'AWP lower')}. AT-AWP's own change from its early-stopping epoch to "
            f"the last: {_diff(o['awp_fall'])}: {_verdict(o['awp_fall'], 'it rose', 'it fell')}.")
    collapse = o["at_fall"]["sign"] < 0 and o["at_loss_rise"]["sign"] > 0
    raised = o.get("awp_minus_at_test_last", {}).get("sign", 0) > 0
    if collapse and raised:
        verdict = ("The paper's headline shows here: plain AT robust-overfits after the decay, and AWP ends with "
                   "higher test robust accuracy, beyond the seed spread.")
    elif collapse:
        verdict = ("Plain AT robust-overfits here, but AWP does NOT end with higher test robust accuracy beyond the "
                   "seed spread: the paper's headline does not show in this setting.")
    else:
        verdict = ("Plain AT does NOT robust-overfit beyond the seed spread here (its test robust accuracy does not "
                   "fall and its robust test loss does not rise, both beyond the seed spread), so AWP has no "
                   "collapse to prevent: the paper's headline does not show in this setting"
                   + (", although AWP still ends higher." if raised else "."))
    return lines + [verdict, ""]


def _trend_section(summary: dict[str, Any]) -> list[str]:
    at, es = summary.get("at_epochs") or {}, summary.get("early_stopping") or {}
    if not at:
        return []
    first = next(m for m in at["mean"] if m["epoch"] == at["first_epoch"])
    last = next(m for m in at["mean"] if m["epoch"] == at["last_epoch"])
    grows = at["gap_change"]["sign"] > 0 and at["sharpness_change"]["sign"] > 0
    lines = ["## The landscape over AT's training (fig_gap_over_epochs, fig_at_epochs; paper Fig. 1a)", "",
             f"AT's gap (mean over seeds) went from {first['gap']:.3f} at epoch {first['epoch']} to {last['gap']:.3f} "
             f"at epoch {last['epoch']} (change {_diff(at['gap_change'])}), its sharpness from "
             f"{first['sharpness']:.2f} to {last['sharpness']:.2f} (change {_diff(at['sharpness_change'], SHARP)})"
             + (": the landscape sharpened as the gap grew, beyond the seed spread." if grows else
                ": this does NOT show the landscape sharpening with the gap beyond the seed spread.")]
    if es:
        gap, sharp = es["gap"], es["sharpness"]
        both = gap["sign"] > 0 and sharp["sign"] > 0
        lines.append(
            f"The early-stopping checkpoints (epochs {', '.join(str(p['epoch']) for p in es['per_seed'])}) against "
            f"the last: gap last minus early stop {_diff(gap)}, sharpness {_diff(sharp)}"
            + (": the early-stopping checkpoint is flatter with a smaller gap, beyond the seed spread, as in the paper."
               if both else ": the early-stopping checkpoint is NOT both flatter and smaller in gap beyond the seed "
                            "spread here."))
    return lines + [""]


def _pairs_section(summary: dict[str, Any]) -> list[str]:
    pairs = summary["awp_vs_base"]
    lines = ["## AWP against its base method (fig_methods_awp; paper Fig. 1b and Sec. 5)", "",
             "Last checkpoints, mean over seeds; AWP minus base per seed with its 95% interval.", "",
             "| method | gamma | seeds | sharpness | with AWP | difference | gap | with AWP | difference | "
             "test robust acc | with AWP | difference |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in pairs:
        lines.append(f"| {p['method'].upper()} | {p['awp_gamma']} | {len(p['seeds'])} | {p['sharpness_mean']:.3f} | "
                     f"{p['sharpness_awp_mean']:.3f} | {_diff(p['sharpness'])} | {p['gap_mean']:.3f} | "
                     f"{p['gap_awp_mean']:.3f} | {_diff(p['gap'])} | {p['test_robust_acc_mean']:.3f} | "
                     f"{p['test_robust_acc_awp_mean']:.3f} | {_diff(p['test_robust_acc'])} |")

    def which(q: str, sign: int) -> list[str]:
        return [p["method"] for p in pairs if p[q]["sign"] == sign]

    flat, smaller = which("sharpness", -1), which("gap", -1)
    lines += ["", f"Beyond the seed spread, AWP ended flatter for: {_names(flat)}; with a smaller gap for: "
              f"{_names(smaller)}. Not beyond the seed spread: flatness for "
              f"{_names([p['method'] for p in pairs if p['method'] not in flat])}, gap for "
              f"{_names([p['method'] for p in pairs if p['method'] not in smaller])}.",
              _robustness_sentence(pairs), ""]
    return lines


def _robustness_sentence(pairs: list[dict[str, Any]]) -> str:
    """Whether AWP raised the last checkpoint's test robust accuracy beyond the seed spread, per method."""
    raised = [p["method"] for p in pairs if p["test_robust_acc"]["sign"] > 0]
    lowered = [p["method"] for p in pairs if p["test_robust_acc"]["sign"] < 0]
    neither = [p["method"] for p in pairs if p["test_robust_acc"]["sign"] == 0]
    text = (f"AWP raised the last checkpoint's test robust accuracy beyond the seed spread for: {_names(raised)}"
            if raised else "AWP did NOT raise the last checkpoint's test robust accuracy beyond the seed spread for "
                           "any method")
    if lowered:
        text += f"; it lowered it beyond the seed spread for: {_names(lowered)}"
    if neither:
        text += f"; no difference beyond the seed spread for: {_names(neither)}"
    return text + "."


def _sweep_section(summary: dict[str, Any]) -> list[str]:
    sweep = sorted(summary["gamma_sweep"], key=lambda r: (r["awp_kind"], r["awp_gamma"]))
    if not sweep:
        return []
    lines = ["## The size of the perturbation (fig_gamma; paper Fig. 4)", "",
             "| run | kind | gamma | seeds | gap | test robust acc | sharpness |", "|---|---|---|---|---|---|---|"]
    for r in sweep:
        sd = (lambda q, f: f" ± {r[q + '_sd']:{f}}") if len(r["seeds"]) > 1 else (lambda q, f: "")
        lines.append(f"| {r['run']} | {r['awp_kind']} | {r['awp_gamma']} | {len(r['seeds'])} | {r['gap']:.3f}"
                     f"{sd('gap', '.3f')} | {r['test_robust_acc']:.3f}{sd('test_robust_acc', '.3f')} | "
                     f"{r['sharpness']:.2f}{sd('sharpness', '.2f')} |")
    adversarial = [r for r in sweep if r["awp_kind"] == "adversarial"]
    ordered = all(a["sharpness"] > b["sharpness"] for a, b in zip(adversarial, adversarial[1:]))
    lines += ["", "Mean (± sd where a row has several seeds) over each row's seeds. Sharpness "
              + ("falls with every step up in gamma." if ordered else "does NOT fall with every step up in gamma.")]
    rwp = [r for r in sweep if r["awp_kind"] == "random"]
    same = [a for a in adversarial if rwp and a["awp_gamma"] == rwp[0]["awp_gamma"]]
    if rwp and same:
        r, a = rwp[0], same[0]
        lines.append(f"Random weight perturbation of AT-AWP's relative size (gamma {r['awp_gamma']}) but a "
                     f"random direction: gap {r['gap']:.3f} against AWP's {a['gap']:.3f}, "
                     f"sharpness {r['sharpness']:.2f} "
                     f"against {a['sharpness']:.2f}"
                     + (": the direction matters, not only the size." if r["sharpness"] > a["sharpness"]
                        and r["gap"] > a["gap"] else ": here RWP is not both sharper and larger in gap than AWP."))
    return lines + [""]


def report_markdown(summary: dict[str, Any]) -> str:
    """report.md, every number and every claim computed from ``summary`` (nothing hard-coded)."""
    lines = _setup_paragraph(summary) + _overfitting_section(summary) + _trend_section(summary)
    lines += _pairs_section(summary)
    lo, hi = summary["spearman_ci"]
    lines += ["## Flatness and the gap over every checkpoint (fig_flatness_vs_gap)", "",
              f"Over {summary['n_checkpoints']} checkpoints (every checkpoint of every seed of {summary['n_runs']} "
              f"runs; AT and AT-AWP at every saved epoch): Spearman {summary['spearman']:.2f} (95% bootstrap CI "
              f"{lo:.2f} to {hi:.2f}, p = {summary['spearman_p']:.2g}), Kendall {summary['kendall']:.2f} "
              f"(p = {summary['kendall_p']:.2g})"
              + (": sharper checkpoints have larger gaps." if lo > 0 else
                 ": sharper checkpoints have smaller gaps." if hi < 0 else
                 ": the interval includes 0, so flatness does NOT rank the gaps here."), ""]
    lines += _measures_section(summary)
    lines += _sweep_section(summary)
    return "\n".join(lines)


def _measures_section(summary: dict[str, Any]) -> list[str]:
    """Which measure ranks best against the gap on these checkpoints, and how sure that is."""
    rows = [r for r in summary.get("measure_ranking") or [] if r.get("kendall") == r.get("kendall")]  # not NaN
    if not rows:
        return []
    best, rest = rows[0], rows[1:]
    lines = ["## Which measure predicts the gap? (fig_measures, measure_ranking.csv)", "",
             "| measure | Kendall tau [95% bootstrap CI] | Spearman | Pearson | granulated tau |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['measure']} | {r['kendall']:+.2f} [{r['kendall_lo']:+.2f}, {r['kendall_hi']:+.2f}] | "
              f"{r['spearman']:+.2f} | {r['pearson']:+.2f} | {r.get('granulated_tau', float('nan')):+.2f} |"
              for r in rows]
    text = (f"Over {best['n']} checkpoints, {best['measure']} ranks best (Kendall tau {best['kendall']:+.2f}, "
            f"95% bootstrap interval {best['kendall_lo']:+.2f} to {best['kendall_hi']:+.2f}")
    text += ("; the interval excludes 0" if best["kendall_lo"] > 0 or best["kendall_hi"] < 0
             else "; the interval includes 0, so even the best is not a reliable predictor here") + ")."
    if rest:
        second = rest[0]
        overlap = abs(second["kendall"]) >= (best["kendall_lo"] if best["kendall"] > 0 else -best["kendall_hi"])
        text += (f" The runner-up, {second['measure']} ({second['kendall']:+.2f}), lies inside that interval: the "
                 "order of the top two is not settled by these checkpoints." if overlap else
                 f" The runner-up, {second['measure']} ({second['kendall']:+.2f}), lies outside that interval: "
                 f"{best['measure']} ranks first beyond the bootstrap uncertainty.")
    return lines + ["", text, ""]
