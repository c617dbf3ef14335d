"""report.md is computed from summary.json: change a number in a summary and the sentence changes,
including the sentences that say an effect is NOT there; the paired intervals equal scipy's."""
import copy
import math

import pytest
import scipy.stats

from analysis.report import report_markdown
from analysis.seeds import paired_difference


def _pair(method, base, awp):
    """A method's summary entry from per-seed (sharpness, gap, test robust acc) of base and AWP."""
    per_seed = [{"seed": k, "sharpness": b[0], "sharpness_awp": a[0], "gap": b[1], "gap_awp": a[1],
                 "test_robust_acc": b[2], "test_robust_acc_awp": a[2]} for k, (b, a) in enumerate(zip(base, awp))]
    pair = {"method": method, "awp_gamma": 0.01, "seeds": list(range(len(base))), "per_seed": per_seed}
    for q in ("sharpness", "gap", "test_robust_acc"):
        pair[q] = paired_difference([p[q] for p in per_seed], [p[f"{q}_awp"] for p in per_seed])
        pair[f"{q}_mean"] = sum(p[q] for p in per_seed) / len(per_seed)
        pair[f"{q}_awp_mean"] = sum(p[f"{q}_awp"] for p in per_seed) / len(per_seed)
    return pair


def _overfitting(at_best, at_last, loss_after, loss_end, awp_best, awp_last):
    at = [{"seed": k, "best_epoch": 20 + k, "test_best": b, "test_last": last, "window": 5}
          for k, (b, last) in enumerate(zip(at_best, at_last))]
    return {"at": at, "at-awp": [{"seed": k, "test_best": b, "test_last": last}
                                 for k, (b, last) in enumerate(zip(awp_best, awp_last))],
            "at_fall": paired_difference(at_best, at_last), "at_loss_rise": paired_difference(loss_after, loss_end),
            "awp_fall": paired_difference(awp_best, awp_last),
            "awp_minus_at_test_last": paired_difference(at_last, awp_last),
            "awp_minus_at_test_best": paired_difference(at_best, awp_best)}


def _at_epochs(first_gaps, last_gaps, first_sharp, last_sharp):
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return {"first_epoch": 5, "last_epoch": 60,
            "mean": [{"epoch": 5, "gap": mean(first_gaps), "sharpness": mean(first_sharp)},
                     {"epoch": 60, "gap": mean(last_gaps), "sharpness": mean(last_sharp)}],
            "gap_change": paired_difference(first_gaps, last_gaps),
            "sharpness_change": paired_difference(first_sharp, last_sharp)}


def _summary():
    pairs = [_pair("at", [(1.4, 0.25, 0.45), (1.3, 0.27, 0.44), (1.5, 0.24, 0.46)],
                   [(0.9, 0.20, 0.50), (0.8, 0.21, 0.49), (0.95, 0.19, 0.52)]),
             _pair("trades", [(0.5, 0.20, 0.48), (0.6, 0.21, 0.49), (0.55, 0.19, 0.47)],
                   [(0.4, 0.17, 0.47), (0.5, 0.18, 0.50), (0.45, 0.16, 0.48)])]
    return {"quick": False, "duration_s": 600.0, "seeds": [0, 1, 2], "confidence": 0.95, "interval": "Student t",
            "settings": {"radius": 0.5, "directions": 3},
            "landscape": {"attack": ["pgd10"], "samples": [256], "split": ["train"]}, "gap_attack": ["pgd10"],
            "setup": {"dataset": "digits", "train_images": 300, "val_images": 200, "test_images": 597,
                      "model": "smallcnn", "channels": [16, 32, 64], "norm": "linf", "eps": 0.2, "attack_steps": 10,
                      "eval_steps": 10, "epochs": 60, "batch_size": 64, "lr": 0.05, "lr_decay": 0.1,
                      "decay_epochs": [30.0, 45.0]},
            "overfitting": _overfitting([0.50, 0.52, 0.51], [0.44, 0.45, 0.45], [1.30, 1.28, 1.31],
                                        [1.45, 1.47, 1.44], [0.51, 0.52, 0.52], [0.50, 0.51, 0.51]),
            "at_epochs": _at_epochs([0.03, 0.02, 0.04], [0.25, 0.27, 0.24], [0.1, 0.12, 0.09], [1.4, 1.3, 1.5]),
            "early_stopping": {}, "awp_vs_base": pairs, "n_checkpoints": 54, "n_runs": 12, "spearman": 0.9,
            "spearman_ci": [0.8, 0.95], "spearman_p": 1e-4, "kendall": 0.7, "kendall_p": 1e-3, "gamma_sweep": []}


def test_paired_difference_equals_scipy_and_the_t_table():
    base, other = [0.45, 0.44, 0.46], [0.50, 0.49, 0.52]
    d = paired_difference(base, other)
    ci = scipy.stats.ttest_rel(other, base).confidence_interval(0.95)
    assert d["lo"] == pytest.approx(ci.low) and d["hi"] == pytest.approx(ci.high)
    diffs = [0.05, 0.05, 0.06]
    sd = math.sqrt(sum((x - sum(diffs) / 3) ** 2 for x in diffs) / 2)
    assert d["hi"] - d["mean"] == pytest.approx(4.302652729911275 * sd / math.sqrt(3))  # t_{0.975, 2}, tables
    assert d["per_seed"] == pytest.approx(diffs) and d["sign"] == 1
    assert paired_difference([0.5, 0.4], [0.4, 0.5])["sign"] == 0
    one = paired_difference([0.5], [0.6])
    assert one["sign"] == 0 and math.isnan(one["lo"])


def test_setup_numbers_come_from_the_summary():
    summary = _summary()
    text = report_markdown(summary)
    assert "300 training images" in text and "597 test images" in text and "60 epochs" in text
    assert "seeds 0, 1, 2" in text and "at epoch 30, 45" in text
    changed = copy.deepcopy(summary)
    changed["setup"].update(train_images=123, test_images=456, epochs=77, eps=0.25, decay_epochs=[12.0])
    changed["seeds"] = [4, 5, 6]
    text = report_markdown(changed)
    assert "123 training images" in text and "456 test images" in text and "77 epochs" in text
    assert "seeds 4, 5, 6" in text and "eps 0.25" in text and "at epoch 12" in text and "300 training" not in text


def test_headline_claims_follow_the_per_seed_numbers():
    summary = _summary()
    text = report_markdown(summary)
    d = summary["overfitting"]["awp_minus_at_test_last"]
    assert f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" in text
    assert "The paper's headline shows here" in text and "AWP raised it, beyond the seed spread" in text
    # AWP's last checkpoints no better than AT's: the headline is said NOT to show.
    summary["overfitting"] = _overfitting([0.50, 0.52, 0.51], [0.44, 0.45, 0.45], [1.30, 1.28, 1.31],
                                          [1.45, 1.47, 1.44], [0.51, 0.52, 0.52], [0.45, 0.44, 0.46])
    text = report_markdown(summary)
    assert "AWP does NOT end with higher test robust accuracy" in text and "headline shows here" not in text
    # AT no longer falls: no robust overfitting, said in words.
    summary["overfitting"] = _overfitting([0.50, 0.52, 0.51], [0.51, 0.50, 0.52], [1.30, 1.28, 1.31],
                                          [1.29, 1.30, 1.31], [0.51, 0.52, 0.52], [0.50, 0.51, 0.51])
    text = report_markdown(summary)
    assert "Plain AT does NOT robust-overfit beyond the seed spread" in text
    assert "change +0.000 [" in text and "not beyond the seed spread" in text


def test_awp_claims_follow_the_per_seed_numbers():
    summary = _summary()
    text = report_markdown(summary)
    assert "AWP ended flatter for: AT, TRADES; with a smaller gap for: AT, TRADES" in text
    assert "raised the last checkpoint's test robust accuracy beyond the seed spread for: AT;" in text
    assert "no difference beyond the seed spread for: TRADES" in text
    # TRADES-AWP as sharp as TRADES on one seed, sharper on another: not flatter beyond the spread.
    summary["awp_vs_base"][1] = _pair("trades", [(0.5, 0.20, 0.48), (0.6, 0.21, 0.49), (0.55, 0.19, 0.47)],
                                      [(0.5, 0.17, 0.47), (0.7, 0.18, 0.50), (0.45, 0.16, 0.48)])
    text = report_markdown(summary)
    assert "AWP ended flatter for: AT; with a smaller gap for: AT, TRADES" in text
    assert "Not beyond the seed spread: flatness for TRADES, gap for none" in text
    # AT-AWP's test robustness equal to AT's: the sentence says it was NOT raised for any method.
    summary["awp_vs_base"][0] = _pair("at", [(1.4, 0.25, 0.45), (1.3, 0.27, 0.44), (1.5, 0.24, 0.46)],
                                      [(0.9, 0.20, 0.46), (0.8, 0.21, 0.43), (0.95, 0.19, 0.46)])
    assert "AWP did NOT raise the last checkpoint's test robust accuracy beyond the seed spread for any method" \
        in report_markdown(summary)


def test_sharpening_claim_follows_the_per_seed_numbers():
    summary = _summary()
    assert "the landscape sharpened as the gap grew, beyond the seed spread" in report_markdown(summary)
    summary["at_epochs"] = _at_epochs([0.03, 0.02, 0.04], [0.25, 0.27, 0.24], [0.1, 0.12, 0.09], [1.4, 0.05, 0.08])
    assert "this does NOT show the landscape sharpening" in report_markdown(summary)


def _ranking(best_lo):
    return [{"measure": "awp_sharpness", "n": 54, "kendall": 0.6, "kendall_lo": best_lo, "kendall_hi": 0.75,
             "spearman": 0.8, "pearson": 0.7, "granulated_tau": 0.4},
            {"measure": "weight_norm", "n": 54, "kendall": 0.3, "kendall_lo": 0.1, "kendall_hi": 0.5,
             "spearman": 0.4, "pearson": 0.3, "granulated_tau": 0.1}]


def test_measure_claims_follow_the_ranking():
    summary = {**_summary(), "measure_ranking": _ranking(0.45)}
    text = report_markdown(summary)
    assert "awp_sharpness ranks best (Kendall tau +0.60, 95% bootstrap interval +0.45 to +0.75" in text
    assert "ranks first beyond the bootstrap uncertainty" in text and "not settled" not in text
    summary["measure_ranking"] = _ranking(0.2)  # the runner-up's 0.3 now lies inside the interval
    text = report_markdown(summary)
    assert "the order of the top two is not settled" in text
    summary["measure_ranking"] = _ranking(-0.1)
    assert "the interval includes 0" in report_markdown(summary)
    summary.pop("measure_ranking")
    assert "Which measure predicts the gap" not in report_markdown(summary)


def test_correlation_sentence_follows_the_interval():
    summary = _summary()
    assert "sharper checkpoints have larger gaps" in report_markdown(summary)
    summary["spearman_ci"] = [-0.1, 0.5]
    assert "flatness does NOT rank the gaps here" in report_markdown(summary)
