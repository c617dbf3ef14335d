"""report.md is computed from summary.json: change a number in a summary and the sentence changes."""
import copy

from analysis.demo import NOISE, _report


def _summary():
    pair = {"method": "at", "awp_gamma": 0.02, "sharpness": 1.4, "sharpness_awp": 0.9, "gap": 0.25, "gap_awp": 0.2,
            "test_robust_acc": 0.45, "test_robust_acc_awp": 0.46, "awp_flatter": True, "awp_smaller_gap": True}
    return {"quick": False, "duration_s": 250.0, "settings": {"radius": 0.5, "directions": 3},
            "landscape": {"attack": ["pgd10"], "samples": [256], "split": ["train"]}, "gap_attack": ["pgd10"],
            "setup": {"dataset": "digits", "train_images": 300, "val_images": 200, "test_images": 597,
                      "model": "smallcnn", "channels": [16, 32, 64], "norm": "linf", "eps": 0.2, "attack_steps": 10,
                      "eval_steps": 10, "epochs": 60, "seed": 0},
            "at_epochs": [{"epoch": 5, "gap": 0.03, "sharpness": 0.1}, {"epoch": 60, "gap": 0.25, "sharpness": 1.4}],
            "at_best": None, "awp_vs_base": [pair], "n_checkpoints": 12, "spearman": 0.9, "spearman_ci": [0.8, 0.95],
            "spearman_p": 1e-4, "kendall": 0.7, "kendall_p": 1e-3, "gamma_sweep": []}


def test_setup_numbers_come_from_the_summary():
    summary = _summary()
    text = _report(summary)
    assert "300 training images" in text and "597 test images" in text and "60 epochs" in text
    changed = copy.deepcopy(summary)
    changed["setup"].update(train_images=123, test_images=456, epochs=77, seed=9, eps=0.25)
    text = _report(changed)
    assert "123 training images" in text and "456 test images" in text and "77 epochs" in text
    assert "seed 9" in text and "eps 0.25" in text and "300 training" not in text


def test_robustness_claim_follows_the_numbers():
    summary = _summary()
    assert "did not raise the last checkpoint's test robust accuracy" in _report(summary)
    summary["awp_vs_base"][0]["test_robust_acc_awp"] = 0.45 + NOISE + 0.01
    text = _report(summary)
    assert "AWP raised the last checkpoint's test robust accuracy" in text and "did not raise" not in text
    summary["awp_vs_base"][0].update(sharpness_awp=2.0, awp_flatter=False)  # no longer flatter
    assert "AWP ended flatter with a smaller gap for: none" in _report(summary)
