"""The commands end to end: train a standard model, pseudo-label, train RST-AWP on the labels, evaluate.

Bad inputs of every command are tests/test_bad_inputs.py."""

import pytest

import awp_cli


@pytest.mark.slow
def test_train_eval_and_pseudo_label_end_to_end(tmp_path, capsys):
    run = tmp_path / "std"
    assert awp_cli.main(["train", "--preset", "digits-standard", "epochs=3", "eval_steps=1", "--out", str(run), "--quiet"]) == 0
    assert awp_cli.main(["pseudo-label", str(run / "last.pt"), "--out", str(tmp_path / "pl.npz")]) == 0
    out = capsys.readouterr().out
    assert "pseudo-labeled" in out and "agreement" in out
    rst = tmp_path / "rst"
    assert awp_cli.main(["train", "--preset", "digits-rst-awp", f"unlabeled={tmp_path / 'pl.npz'}", "epochs=2",
                         "awp_warmup=1", "eval_steps=1", "--out", str(rst), "--quiet"]) == 0
    assert awp_cli.main(["eval", str(rst / "last.pt"), "--attacks", "natural,fgsm", "--samples", "50"]) == 0
    assert "fgsm" in capsys.readouterr().out

