"""``cnncli sweep``: the space is checked before any trial, trials are normal runs recorded in
the study, a failing trial does not stop the sweep, ``show`` and ``best.yaml``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from sweeps import cnncli, env, metrics, trials, write

pytest.importorskip("optuna")


@pytest.mark.parametrize("space,expected", [
    ("  train.optimizer.lrr: [0.1]\n", ["sweep.yaml:3 space.train.optimizer.lrr", "lr"]),
    ("  model.layers[5].p: [0.5, 1.5]\n", ["sweep.yaml:3 space.model.layers[5].p", "p"]),
    ("  model.layers[20].p: [0.5]\n", ["sweep.yaml:3 space.model.layers[20].p", "does not lead to a key"]),
    ("  train.optimizer.lr: {low: 0.1, high: 0.01}\n", ["sweep.yaml:3 space.train.optimizer.lr", "empty range"]),
    ("  train.batch_size: []\n", ["sweep.yaml:3 space.train.batch_size", "empty list"]),
])
def test_bad_space_is_refused_before_any_trial(tmp_path, mnist_slice, space, expected):
    config, sweep = write(tmp_path, mnist_slice, "trials: 2\nspace:\n" + space)
    r = cnncli("sweep", config, sweep, "--out", tmp_path / "sw", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    for text in expected:
        assert text in r.stderr
    assert not (tmp_path / "sw" / "trials").exists() and not (tmp_path / "sw" / "study.db").exists()


def test_sweep_records_trials_goes_on_after_a_failure_and_show_writes_a_trainable_best(tmp_path, mnist_slice):
    # grid over two learning rates: 0.05 trains, 1e30 makes SGD diverge (NaN loss)
    config, sweep = write(tmp_path, mnist_slice, "trials: 5\nsampler: grid\npruner: none\nheartbeat: 5\n"
                          "space:\n  train.optimizer.lr: [0.05, 1.0e+30]\n", epochs=2)
    folder = tmp_path / "sw"
    r = cnncli("sweep", config, sweep, "--out", folder, "--threads", 1, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    ts = {t.params["train.optimizer.lr"]: t for t in trials(f"sqlite:///{folder / 'study.db'}", "sweep")}
    assert sorted(ts) == [0.05, 1e30] and len(trials(f"sqlite:///{folder / 'study.db'}", "sweep")) == 2
    good, bad = ts[0.05], ts[1e30]
    assert good.state.name == "COMPLETE" and bad.state.name == "FAIL"
    # the divergence check's message, with its fix (which value went first depends on the layers)
    assert "became NaN or infinite" in bad.user_attrs["message"] and "Try a lower train.optimizer.lr (now 1e+30)" \
        in bad.user_attrs["message"]
    rows = metrics(good.user_attrs["run_dir"])          # the trial is a normal run folder
    assert [row["epoch"] for row in rows] == [1, 2]
    assert good.intermediate_values == {1: rows[0]["val_accuracy"], 2: rows[1]["val_accuracy"]}
    assert good.value == max(row["val_accuracy"] for row in rows)
    assert (folder / "trials" / f"{good.number:04d}" / "best.npz").is_file()

    show = cnncli("sweep", "show", folder, "--json", cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    out = json.loads(show.stdout)
    assert [t["state"] for t in out["trials"]] == ["COMPLETE", "FAIL"]
    assert out["best"]["number"] == good.number and out["best"]["value"] == good.value
    table = cnncli("sweep", "show", folder, cwd=tmp_path, extra_env={"COLUMNS": "80"})
    assert table.returncode == 0 and f"best: trial {good.number}" in table.stdout
    rows_80 = [line for line in table.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert rows_80 and max(map(len, rows_80)) <= 80, table.stdout      # fits an 80-column terminal
    assert any(" complete " in line and " 0.05 " in line for line in rows_80), table.stdout
    best = folder / "best.yaml"
    assert out["best_yaml"] == str(best)
    trained = cnncli("train", best, "--out", tmp_path / "again", "--quiet", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    again = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())
    assert again["train"]["optimizer"]["lr"] == 0.05
    # same config, same seed: best.yaml's run repeats the best trial's epochs exactly
    assert metrics(tmp_path / "again") == rows

    # running the command again resumes a finished sweep: nothing more to run
    r = cnncli("sweep", config, sweep, "--out", folder, cwd=tmp_path)
    assert r.returncode == 0 and len(trials(f"sqlite:///{folder / 'study.db'}", "sweep")) == 2


def test_a_changed_space_does_not_join_the_study(tmp_path, mnist_slice):
    config, sweep = write(tmp_path, mnist_slice, "trials: 1\npruner: none\nspace:\n  train.seed: [0]\n")
    assert cnncli("sweep", config, sweep, "--out", tmp_path / "sw", cwd=tmp_path).returncode == 0
    sweep.write_text("trials: 1\npruner: none\nspace:\n  train.seed: [1]\n")
    r = cnncli("sweep", config, sweep, "--out", tmp_path / "sw", cwd=tmp_path)
    assert r.returncode == 2 and "another sweep definition" in r.stderr and "space" in r.stderr


def test_without_optuna_it_says_what_to_install(tmp_path, mnist_slice):
    config, sweep = write(tmp_path, mnist_slice, "trials: 1\nspace:\n  train.seed: [0]\n")
    code = ("import sys; sys.modules['optuna'] = None; sys.argv = ['cnncli', 'sweep', sys.argv[1], sys.argv[2]]; "
            "from cnncli.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code, str(config), str(sweep)], cwd=tmp_path, env=env(), text=True,
                       capture_output=True, timeout=60)
    assert r.returncode == 2
    assert '.[sweep]' in r.stderr and "Traceback" not in r.stderr
