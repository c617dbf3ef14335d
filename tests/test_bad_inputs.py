"""Every bad input of every command gets one clear line on stderr and the right exit status (2 for
bad usage), and leaves nothing behind: no output, no temporary file, the inputs untouched, and a
crafted file's code never run. One table for all commands; the files come from tests/bad_files.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import awp_cli
from awp.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, 0)
            for p in folder.rglob("*")}


L = ["--directions", "1", "--alphas", "-0.5,0,0.5", "--samples", "16", "--steps", "1", "--quiet"]
M = ["--measures", "weight_norm", "--samples", "16", "--steps", "1", "--quiet"]
TINY = ["--preset", "digits-at", "epochs=2", "save_every=1", "eval_steps=1", "val_size=0", "train_subset=100"]
BIG = str(2**64)
CASES = [
    # awp landscape
    ("landscape: empty alpha range", ["landscape", "{d}/good.pt", "--out", "{out}", "--alphas", "1:-1:0"], 2, "--alphas"),
    ("landscape: alphas not numbers", ["landscape", "{d}/good.pt", "--out", "{out}", "--alphas", "a:b:c"], 2, "--alphas"),
    ("landscape: infinite alpha", ["landscape", "{d}/good.pt", "--out", "{out}", "--alphas", "0,inf"], 2, "--alphas"),
    ("landscape: zero directions", ["landscape", "{d}/good.pt", "--out", "{out}", "--directions", "0"], 2, "--directions"),
    ("landscape: split the run lacks", ["landscape", "{d}/good.pt", "--out", "{out}", "--split", "val", *L], 2, "no 'val' split"),
    ("landscape: missing checkpoint", ["landscape", "{d}/missing.pt", "--out", "{out}", *L], 1, "not found"),
    ("landscape: empty checkpoint", ["landscape", "{d}/empty.pt", "--out", "{out}", *L], 1, "is empty"),
    ("landscape: truncated checkpoint", ["landscape", "{d}/truncated.pt", "--out", "{out}", *L], 1, "truncated or corrupt"),
    ("landscape: folder as checkpoint", ["landscape", "{d}/folder.pt", "--out", "{out}", *L], 1, "is a folder"),
    ("landscape: wrong architecture", ["landscape", "{d}/wrong_keys.pt", "--out", "{out}", *L], 1, "do not fit the architecture"),
    ("landscape: not a toolkit checkpoint", ["landscape", "{d}/foreign.pt", "--out", "{out}", *L], 1, "not a checkpoint of this toolkit"),
    ("landscape: non-writable output", ["landscape", "{d}/good.pt", "--out", "{d}/a_file/out", *L], 1, "is a file, not a folder"),
    ("landscape: negative eps", ["landscape", "{d}/good.pt", "--out", "{out}", "--eps", "-0.1", *L], 2, "--eps must be a finite number >= 0"),
    ("landscape: eps not a number", ["landscape", "{d}/good.pt", "--out", "{out}", "--eps", "big", *L], 2, "--eps"),
    ("landscape: unknown loss", ["landscape", "{d}/good.pt", "--out", "{out}", "--loss", "hinge"], 2, "unknown --loss 'hinge'; choose from: adversarial"),
    ("landscape: zero samples", ["landscape", "{d}/good.pt", "--out", "{out}", "--samples", "0"], 2, "--samples"),
    ("landscape: grid2d with one direction", ["landscape", "{d}/good.pt", "--out", "{out}", "--grid2d", "--directions", "1"], 2, "--surface needs --directions >= 2"),
    ("landscape: wrong type", ["landscape", "{d}/good.pt", "--out", "{out}", "--directions", "two"], 2, "--directions='two' is not a valid int"),
    # awp correlate / awp figures
    ("correlate: missing runs folder", ["correlate", "--runs", "{d}/nothere"], 1, "not found"),
    ("correlate: empty runs folder", ["correlate", "--runs", "{d}/emptyruns"], 1, "is empty"),
    ("correlate: runs is a file", ["correlate", "--runs", "{d}/a_file"], 1, "not a folder"),
    ("correlate: runs without landscapes", ["correlate", "--runs", "{d}/runs"], 1, "no landscape found"),
    ("correlate: single checkpoint", ["correlate", "--runs", "{d}/single"], 2, "at least 3 checkpoints"),
    ("figures: missing runs folder", ["figures", "--runs", "{d}/nothere", "--out", "{out}"], 1, "not found"),
    ("figures: empty runs folder", ["figures", "--runs", "{d}/emptyruns", "--out", "{out}"], 1, "is empty"),
    ("figures: no --out", ["figures", "--runs", "{d}/runs"], 2, "--out"),
    # issue 18: damaged inputs of correlate / figures
    ("correlate: landscapes file not a landscape.json", ["correlate", "--runs", "{d}/single", "--landscapes",
                                                         "{d}/a_file"], 1, "a_file is not a landscape.json file"),
    ("figures: landscapes file not a landscape.json", ["figures", "--runs", "{d}/single", "--landscapes",
                                                       "{d}/good.pt", "--out", "{out}"], 1,
     "good.pt is not a landscape.json file"),
    ("correlate: measures file not JSON", ["correlate", "--runs", "{d}/single", "--measures", "{d}/a_file",
                                           "--ranking-dir", "{out}"], 1, "a_file: Expecting value"),
    ("correlate: measures file binary", ["correlate", "--runs", "{d}/single", "--measures", "{d}/good.pt",
                                         "--ranking-dir", "{out}"], 1, "good.pt: 'utf-8' codec can't decode"),
    # awp pseudo-label
    ("pseudo-label: missing checkpoint", ["pseudo-label", "{d}/missing.pt", "--out", "{out}/pl.npz"], 1, "not found"),
    ("pseudo-label: non-writable output", ["pseudo-label", "{d}/good.pt", "--out", "{d}/a_file/pl.npz"], 1, "is a file, not a folder"),
    ("pseudo-label: missing source", ["pseudo-label", "{d}/good.pt", "--source", "{d}/none.npz", "--out", "{out}/pl.npz"], 1, "not found"),
    ("pseudo-label: source not data", ["pseudo-label", "{d}/good.pt", "--source", "{d}/a_file", "--out", "{out}/pl.npz"], 1, "cannot read"),
    # awp demo
    ("demo: zero workers", ["demo", "--workers", "0", "--out", "{out}", "--work", "{out}/work"], 2, "--workers"),
    # awp train: resuming and run folders
    ("train: resume with another config", ["train", "--preset", "digits-at", "epochs=3", "save_every=1", "eval_steps=1",
                                           "val_size=0", "train_subset=100", "--out", "{d}/runs/tiny", "--resume"], 2, "different config"),
    ("train: existing run without --resume", ["train", "--preset", "digits-at", "--out", "{d}/runs/tiny"], 2, "already holds a run"),
    ("train: --out is a file", ["train", "--preset", "digits-at", "epochs=1", "--out", "{d}/a_file"], 2, "is a file"),
    ("train: two bad overrides", ["train", "--preset", "digits-at", "awp_gamma=1.5", "colour=red", "--out", "{out}"], 2, "colour"),
    # awp eval: what tests/test_cli.py leaves out
    ("eval: zero samples", ["eval", "{d}/good.pt", "--samples", "0"], 2, "samples"),
    ("eval: no attack", ["eval", "{d}/good.pt", "--attacks", ""], 2, "no attack"),
    ("eval: non-writable output", ["eval", "{d}/good.pt", "--attacks", "clean", "--samples", "10",
                                   "--out", "{d}/a_file/e.json"], 1, "is a file, not a folder"),
    # awp train: presets, overrides, data and run folders
    ("train: unknown preset", ["train", "--preset", "nope", "--out", "{out}"], 2, "unknown preset"),
    ("train: unknown key", ["train", "--preset", "digits-at", "epoch=3", "--out", "{out}"], 2, "unknown setting"),
    ("train: wrong type", ["train", "--preset", "digits-at", "epochs=three", "--out", "{out}"], 2, "not a valid int"),
    ("train: not key=value", ["train", "--preset", "digits-at", "epochs", "--out", "{out}"], 2, "key=value"),
    ("train: negative eps", ["train", "--preset", "digits-at", "eps=-0.1", "--out", "{out}"], 2, "eps must be a finite number >= 0"),
    ("train: gamma above 1", ["train", "--preset", "digits-at", "awp_gamma=1.5", "--out", "{out}"], 2, "awp_gamma"),
    ("train: unknown method", ["train", "--preset", "digits-at", "method=pgd", "epochs=1", "--out", "{out}"], 2,
     "unknown method"),
    ("train: unknown model", ["train", "--preset", "digits-at", "model=resnet9", "epochs=1", "--out", "{out}"], 2,
     "unknown model"),
    ("train: unknown data set", ["train", "--preset", "digits-at", "dataset=mnist", "--out", "{out}"], 2, "mnist"),
    ("train: missing data", ["train", "--preset", "cifar10-at", "--data-dir", "{d}/nodata", "--out", "{out}"], 1,
     "download"),
    ("train: no --out", ["train", "--preset", "digits-at"], 2, "--out"),
    ("train: out under a file", ["train", "--preset", "digits-at", "epochs=1", "eval_steps=1", "--out",
                                 "{d}/a_file/run"], 1, "a_file is a file, not a folder"),
    # awp eval: checkpoints and options
    ("eval: missing checkpoint", ["eval", "{d}/missing.pt"], 1, "not found"),
    ("eval: empty checkpoint", ["eval", "{d}/empty.pt"], 1, "empty"),
    ("eval: folder as checkpoint", ["eval", "{d}/folder.pt"], 1, "folder"),
    ("eval: garbage checkpoint", ["eval", "{d}/garbage.pt"], 1, "cannot read checkpoint"),
    ("eval: truncated checkpoint", ["eval", "{d}/truncated.pt"], 1, "truncated or corrupt"),
    ("eval: wrong architecture", ["eval", "{d}/wrong_arch.pt"], 1, "features"),
    ("eval: code in checkpoint", ["eval", "{d}/evil.pt"], 1, "refusing to load"),
    ("eval: unknown attack", ["eval", "{d}/good.pt", "--attacks", "pgd7"], 2, "pgd7"),
    ("eval: bad eps", ["eval", "{d}/good.pt", "--eps", "big"], 2, "not a number"),
    # awp landscape: what the table above leaves out
    ("landscape: alphas without a count", ["landscape", "{d}/good.pt", "--out", "{out}", "--alphas", "-1:1"], 2,
     "--alphas"),
    # awp measures
    ("measures: unknown measure", ["measures", "{d}/good.pt", "--out", "{out}", "--measures", "nope"], 2,
     "unknown measure"),
    ("measures: attack-free loss for a measure that needs one", ["measures", "{d}/good.pt", "--out", "{out}",
                                                                 "--measures", "awp_sharpness", "--clean"], 2,
     "needs an attack"),
    ("measures: bad --set", ["measures", "{d}/good.pt", "--out", "{out}", "--set", "weight_norm"], 2,
     "MEASURE.KEY=VALUE"),
    ("measures: no checkpoint", ["measures", "--out", "{out}"], 2, "CKPT"),
    ("correlate: measures folder missing", ["correlate", "--runs", "{d}/runs", "--measures", "{d}/nothere"], 1,
     "not found"),
    ("correlate: not a training run", ["correlate", "--runs", "{d}/junk"], 1, "no training run"),
    ("unknown command", ["fly"], 2, "invalid choice"),
    # issue 19: an unknown name anywhere is one line naming the closest entries
    ("train: a model's typo", ["train", "--preset", "digits-at", "model=smallcnm", "--out", "{out}"], 2,
     "unknown model 'smallcnm'; did you mean smallcnn?"),
    ("train: a preset's typo", ["train", "--preset", "digits-at-awq", "--out", "{out}"], 2,
     "unknown preset 'digits-at-awq'; did you mean digits-at-awp"),
    ("train: a setting's typo", ["train", *TINY, "awp_gama=0.01", "--out", "{out}"], 2,
     "unknown setting 'awp_gama'; did you mean awp_gamma"),
    ("eval: an attack's typo", ["eval", "{d}/good.pt", "--attacks", "pgd2O"], 2, "did you mean pgd20?"),
    ("eval: a split's typo", ["eval", "{d}/good.pt", "--split", "tests"], 2, "did you mean test?"),
    ("measures: a measure's typo", ["measures", "{d}/good.pt", "--out", "{out}", "--measures", "hessian_trac"], 2,
     "did you mean hessian_trace?"),
    ("landscape: a normalization's typo", ["landscape", "{d}/good.pt", "--out", "{out}", "--normalization", "filters"],
     2, "unknown --normalization 'filters'; did you mean filter?"),
    # issue 18: every value checked where a config or a flag enters, before any work
    ("train: infinite lr", ["train", *TINY, "lr=inf", "--out", "{out}"], 2, "lr=inf is not a finite number"),
    ("train: infinite beta", ["train", *TINY, "beta=inf", "--out", "{out}"], 2, "beta=inf is not a finite number"),
    ("train: infinite step", ["train", *TINY, "step_size=inf", "--out", "{out}"], 2, "step_size=inf is not a finite"),
    ("train: zero eval batch", ["train", *TINY, "eval_batch_size=0", "--out", "{out}"], 2, "eval_batch_size must be >= 1"),
    ("train: milestones not numbers", ["train", *TINY, 'lr_milestones=["a"]', "--out", "{out}"], 2,
     "lr_milestones must be a list of fractions"),
    ("train: a model over the size limit", ["train", *TINY, 'model_kwargs={{"channels": [99999, 99999, 99999]}}',
                                            "--out", "{out}"], 1, "over the limit of 1,000,000,000"),
    ("train: seed past 64 bits", ["train", *TINY, "--seed", BIG, "--out", "{out}"], 2, "seed must be <= "),
    ("eval: seed past 64 bits", ["eval", "{d}/good.pt", "--seed", BIG, "--out", "{out}/e.json"], 2, "seed must be <= "),
    ("landscape: seed past 64 bits", ["landscape", "{d}/good.pt", "--out", "{out}", "--seed", BIG, *L], 2,
     "--seed must be <= "),
    ("measures: seed past 64 bits", ["measures", "{d}/good.pt", "--out", "{out}", "--sample-seed", BIG, *M], 2,
     "--sample-seed must be <= "),
    ("measures: --set not a number", ["measures", "{d}/good.pt", "--out", "{out}", "--set", "average_sharpness.xi=abc"],
     2, "average_sharpness.xi='abc' is not a valid float"),
    ("landscape: NaN radius", ["landscape", "{d}/good.pt", "--out", "{out}", "--radius", "nan", *L], 2,
     "--radius=nan is not a finite number"),
    ("landscape: negative radius", ["landscape", "{d}/good.pt", "--out", "{out}", "--radius", "-1", *L], 2,
     "--radius must be a finite number > 0"),
    ("landscape: alphas named once", ["landscape", "{d}/good.pt", "--out", "{out}", "--alphas", "x"], 2, "bad --alphas 'x'"),
    # issue 18: checkpoints that do not fit their data set, archives that unpack to more than they hold
    ("eval: 3-channel model labelled digits", ["eval", "{d}/rgb_digits.pt", "--out", "{out}/e.json"], 1,
     "does not take digits images (1 x 8 x 8"),
    ("landscape: 3-class model labelled digits", ["landscape", "{d}/three_classes.pt", "--out", "{out}", *L], 1,
     "has [3] outputs per image, but digits has 10 classes"),
    ("import-checkpoint: 3-channel model for digits", ["import-checkpoint", "{d}/rgb_foreign.pt", "--format", "mart",
                                                       "--arch", "smallcnn", "--dataset", "digits", "--out",
                                                       "{out}/i.pt"], 1, "wrong shape (features.0.weight"),
    ("import-checkpoint: unknown data set", ["import-checkpoint", "{d}/rgb_foreign.pt", "--format", "mart", "--arch",
                                             "smallcnn", "--dataset", "nonsense", "--out", "{out}/i.pt"], 2,
     "unknown data set 'nonsense'"),
    ("import-checkpoint: a format's typo", ["import-checkpoint", "{d}/rgb_foreign.pt", "--format", "trade", "--arch",
                                            "smallcnn", "--dataset", "cifar10", "--out", "{out}/i.pt"], 2,
     "did you mean trades?"),
    ("eval: compressed archive", ["eval", "{d}/bomb.pt", "--out", "{out}/e.json"], 1, "is compressed"),
    ("import-checkpoint: compressed archive", ["import-checkpoint", "{d}/bomb.pt", "--format", "mart", "--arch",
                                               "smallcnn", "--dataset", "digits", "--out", "{out}/i.pt"], 1,
     "is compressed"),
    # issue 18: output locations refused before any work
    ("landscape: --out a symlink loop", ["landscape", "{d}/good.pt", "--out", "{d}/loop_a", *L], 1, "a symlink loop"),
    ("measures: --out a dangling symlink", ["measures", "{d}/good.pt", "--out", "{d}/dangling", *M], 1,
     "dangling is a symlink to"),
    ("train: --out a dangling symlink", ["train", *TINY, "--out", "{d}/dangling"], 1, "which does not exist"),
    ("eval: --out too long for its temporary file", ["eval", "{d}/good.pt", "--attacks", "clean", "--out",
                                                     "{out}/" + "e" * 240 + ".json"], 1, "over the file system's"),
    # issue 18: run folders that --resume must not continue
    ("train: resume without optimizer state", ["train", *TINY, "--out", "{d}/damaged/no_optimizer", "--resume"], 1,
     "has no 'optimizer'"),
    ("train: resume with an epoch that is text", ["train", *TINY, "--out", "{d}/damaged/text_epoch", "--resume"], 1,
     "its 'epoch' is 'abc', not a int"),
    ("train: resume another lr, config.json deleted", ["train", *TINY, "lr=0.01", "--out", "{d}/damaged/other_lr",
                                                        "--resume"], 2, "last.pt (differs in: lr)"),
    ("train: resume with a corrupt config.json", ["train", *TINY, "--out", "{d}/damaged/bad_json", "--resume"], 1,
     "config.json is not readable JSON"),
]


def _case_id(case) -> str:
    return case.id if hasattr(case, "id") else case[0]


@pytest.mark.parametrize("name, argv, code, text", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_gives_one_line(bad_files, tmp_path, capsys, name, argv, code, text):
    out = tmp_path / "out"
    before = _snapshot(bad_files)
    argv = [a.format(d=bad_files, out=out) for a in argv]
    assert awp_cli.main(argv) == code, capsys.readouterr().err
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("awp: error: ") and "Traceback" not in err and text in err, err
    assert not out.exists()  # nothing written, not even an empty folder
    assert _snapshot(bad_files) == before  # the inputs and existing runs are untouched, no temporaries left
    assert not (bad_files / "MARKER").exists()


def test_table_covers_every_command():
    import awp_cli

    commands = {c[1][0] if not hasattr(c, "values") else c.values[1][0] for c in CASES}
    parser, owners = awp_cli.build_parser()
    untested = set(owners) - commands - {"presets", "import-checkpoint", "export"}  # tests/test_recipes.py,
    assert not untested, untested                                                  # tests/test_convert.py



def test_multi_line_messages_are_joined_into_one(capsys, monkeypatch):
    import awp.cli

    def boom(args):
        raise UserError("first line\nsecond line")

    monkeypatch.setattr(awp.cli, "run", boom)
    assert awp_cli.main(["presets"]) == 1
    assert capsys.readouterr().err.strip() == "awp: error: first line | second line"


def test_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    plain = subprocess.run([sys.executable, "-m", "awp_cli", "eval", str(tmp_path / "missing.pt")],
                           capture_output=True, text=True, env=env)
    debug = subprocess.run([sys.executable, "-m", "awp_cli", "--debug", "eval", str(tmp_path / "missing.pt")],
                           capture_output=True, text=True, env=env)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr and len(plain.stderr.strip().splitlines()) == 1
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "UserError: checkpoint not found" in debug.stderr
