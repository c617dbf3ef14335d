"""The shape of gpu.json and the table benchmarks/gpu.py prints.

Every key of gpu.json is there from the first write on, in every run: a measured number, or a
string saying why there is none ("failed: ...", "skipped ...", "pending ...", "n/a ..."). The
ratios (AT-AWP / AT, original / ours, torchattacks / ours) and the sameness line are derived
from the measured leaves each time the file is written.
"""
from __future__ import annotations

import copy
import math
from typing import Any

SETTINGS = {  # name -> (precision, channels_last, torch.compile): the settings awp.runtime makes
    "fp32": ("fp32", False, False),
    "bf16_channels_last": ("bf16", True, False),
    "bf16_channels_last_compile": ("bf16", True, True),
}
FAST = ("bf16_channels_last", "bf16_channels_last_compile")
OURS = ("AT", "AT-AWP")
ORIGINAL = {"AT": "original AT", "AT-AWP": "original AT-AWP"}  # timed in the fp32 setting only
LANDSCAPE = {"fp32": ("fp32", False), "bf16_channels_last": ("bf16", True)}
PENDING = "pending: the run ended before this section"


def variants(setting: str) -> tuple[str, ...]:
    return OURS + tuple(ORIGINAL.values()) if setting == "fp32" else OURS


def variant_keys(variant: str, setting: str) -> list[str]:
    keys = ["images_per_s", "step_ms", "timed_steps", "warmup_s", "peak_memory_mb"]
    if variant in OURS:
        keys.append("first_step_loss")
    if SETTINGS[setting][2]:
        keys.append("compile_s")
    return keys


def skeleton(models: list[str]) -> dict[str, Any]:
    """The measured part of gpu.json, every leaf None (not yet measured)."""
    training = {m: {s: {**{v: dict.fromkeys(variant_keys(v, s)) for v in variants(s)}, "awp_overhead": None}
                    for s in SETTINGS} for m in models}
    return {
        "training": training,
        "original_vs_ours": {m: {k: {"original_over_ours": None, "original_memory_over_ours": None}
                                 for k in ORIGINAL} for m in models},
        "pgd": dict.fromkeys(["ours_ms", "ours_images_per_s", "torchattacks_ms", "torchattacks_over_ours",
                              "ours_in_eps_ball", "torchattacks_in_eps_ball"]),
        "landscape": {k: dict.fromkeys(["points_per_s", "curve_s", "timed_curves", "mean_loss"]) for k in LANDSCAPE},
        "sameness": {m: {s: dict.fromkeys(OURS) for s in FAST} for m in models},
    }


def fill(tree: Any, reason: str) -> Any:
    """Every None leaf of ``tree`` (in place) becomes ``reason``; returns ``tree``."""
    for key, value in (tree.items() if isinstance(tree, dict) else []):
        if value is None:
            tree[key] = reason
        else:
            fill(value, reason)
    return tree


def _why(*values: Any) -> str | None:
    for value in values:
        if isinstance(value, str):
            return value if value.startswith("not available") else f"not available: {value}"
        if value is None:
            return None
    return None


def ratio(a: Any, b: Any) -> float | str | None:
    """a / b for two measured numbers, else the reason one of them carries (None: not yet)."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a / b if b else "not available: division by zero"
    return _why(a, b)


def relative_difference(a: Any, b: Any) -> float | str | None:
    """|a - b| / |b| for two measured numbers, else the reason one of them carries."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) / abs(b) if b else abs(a - b)
    return _why(a, b)


def derive(measured: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``measured`` with the ratios and the sameness line filled in."""
    out = copy.deepcopy(measured)
    for model, settings in out["training"].items():
        for setting, rows in settings.items():
            rows["awp_overhead"] = ratio(rows["AT-AWP"]["step_ms"], rows["AT"]["step_ms"])
        fp32 = settings["fp32"]
        for ours, original in ORIGINAL.items():
            out["original_vs_ours"][model][ours] = {
                "original_over_ours": ratio(fp32[original]["step_ms"], fp32[ours]["step_ms"]),
                "original_memory_over_ours": ratio(fp32[original]["peak_memory_mb"], fp32[ours]["peak_memory_mb"])}
        for setting in FAST:
            out["sameness"][model][setting] = {
                v: relative_difference(settings[setting][v]["first_step_loss"], fp32[v]["first_step_loss"])
                for v in OURS}
    out["pgd"]["torchattacks_over_ours"] = ratio(out["pgd"]["torchattacks_ms"], out["pgd"]["ours_ms"])
    return out


def finite(tree: Any) -> Any:
    """A JSON-safe copy: NaN and infinities become strings saying so (json writes bare NaN)."""
    if isinstance(tree, dict):
        return {k: finite(v) for k, v in tree.items()}
    if isinstance(tree, float) and not math.isfinite(tree):
        return f"non-finite: {tree}"
    return tree


SHORT = {"not available": "n/a", "not installed": "n/a"}


def _cell(value: Any, fmt: str, unit: str = "") -> str:
    """A number in ``fmt`` with its unit; a reason as its first word (the JSON has it whole)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, fmt) + unit
    head = str(value).split(":")[0]
    return SHORT.get(head, head.split(" ")[0])


def compile_total(a: Any, b: Any) -> Any:
    """a + b for two numbers (the compile seconds of a setting), else the first reason."""
    if a is None and b is None:
        return ""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a + b
    return a if isinstance(a, str) else b


def table(report: dict[str, Any]) -> str:
    """The printed summary of a (derived) report."""
    env, lines = report["environment"], []
    lines.append(f"GPU check: {env['device_name']} ({env['device']}), torch {env['torch']}, CUDA {env['cuda']}, "
                 f"cuDNN {env['cudnn']}; {report['settings']['shapes']}")
    lines.append(f"{'training step':48s} {'AT img/s':>9s} {'AT-AWP':>9s} {'AWP/AT':>7s} {'AT MB':>8s} "
                 f"{'AWP MB':>8s} {'compile s':>9s}")
    for model, settings in report["training"].items():
        for setting, rows in settings.items():
            at, awp = rows["AT"], rows["AT-AWP"]
            comp = compile_total(at.get("compile_s"), awp.get("compile_s"))
            lines.append(f"  {model + ' ' + setting:46s} {_cell(at['images_per_s'], '9.0f'):>9s} "
                         f"{_cell(awp['images_per_s'], '9.0f'):>9s} {_cell(rows['awp_overhead'], '7.3f'):>7s} "
                         f"{_cell(at['peak_memory_mb'], '8.0f'):>8s} {_cell(awp['peak_memory_mb'], '8.0f'):>8s} "
                         f"{_cell(comp, '9.1f'):>9s}")
    lines.append("original repositories' code paths / ours, fp32 step time (and peak memory):")
    for model, rows in report["original_vs_ours"].items():
        lines.append(f"  {model:46s} " + "  ".join(
            f"{k} {_cell(r['original_over_ours'], '.3f')} ({_cell(r['original_memory_over_ours'], '.2f')})"
            for k, r in rows.items()))
    pgd = report["pgd"]
    lines.append(f"PGD-10, {report['settings']['pgd']}: ours {_cell(pgd['ours_ms'], '.1f', ' ms')}, torchattacks "
                 f"{_cell(pgd['torchattacks_ms'], '.1f', ' ms')}, torchattacks / ours "
                 f"{_cell(pgd['torchattacks_over_ours'], '.3f')}")
    lines.append(f"landscape, {report['settings']['landscape']}: " + ", ".join(
        f"{k} {_cell(r['points_per_s'], '.2f')} points/s" for k, r in report["landscape"].items()))
    lines.append("sameness, first-step loss of the fast path vs fp32 (relative difference):")
    for model, settings in report["sameness"].items():
        lines.append(f"  {model:46s} " + "  ".join(
            f"{s}: " + " ".join(f"{v} {_cell(d, '.1e')}" for v, d in r.items()) for s, r in settings.items()))
    return "\n".join(lines)

