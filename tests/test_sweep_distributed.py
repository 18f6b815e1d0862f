"""Sweeps shared by processes: two ``cnncli sweep --storage postgresql://...`` commands on one
study (a real PostgreSQL server: ``.ci/run``'s, else one started here), and a worker killed
with SIGKILL mid-trial (its trial is failed by the heartbeat and retried once)."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

import pgserver
from sweeps import cnncli, metrics, start, trials, write

pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def postgres_url():
    """``CNNCLI_TEST_POSTGRES_URL`` (set by .ci/run), else a server started for these tests;
    skipped where neither is possible."""
    pytest.importorskip("psycopg2")
    url = os.environ.get("CNNCLI_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    try:
        url, folder = pgserver.start()
    except (RuntimeError, OSError, KeyError) as e:
        pytest.skip(f"no PostgreSQL server: {e}")
    try:
        yield url
    finally:
        pgserver.stop(folder)


def _check_each_ran_once(ts: list, folder: Path, total: int, epochs: int) -> list:
    """The counted trials are ``total``, all complete, each with its own run folder that holds
    every epoch; no run folder lacks a trial."""
    retried = {t.user_attrs.get("retry_of") for t in ts}
    counted = [t for t in ts if t.number not in retried and not t.user_attrs.get("surplus")]
    assert len(counted) == total
    assert all(t.state.name == "COMPLETE" for t in counted), [(t.number, t.state.name) for t in counted]
    dirs = [t.user_attrs["run_dir"] for t in counted]
    assert len(set(dirs)) == total
    for d in dirs:
        assert [r["epoch"] for r in metrics(d)] == list(range(1, epochs + 1))
    started = {t.user_attrs["run_dir"] for t in ts if "run_dir" in t.user_attrs}
    assert {str(p) for p in (folder / "trials").iterdir()} == started
    return counted


def test_two_machines_share_one_study_in_postgresql(tmp_path, mnist_slice, postgres_url):
    study = f"pg-{uuid.uuid4().hex[:8]}"
    config, sweep = write(tmp_path, mnist_slice, f"study: {study}\ntrials: 6\nsampler: random\npruner: none\n"
                          "heartbeat: 5\nspace:\n  train.optimizer.lr: {low: 0.01, high: 0.1, log: true}\n"
                          "  train.seed: [0, 1, 2, 3]\n", epochs=8)   # ~1 s a trial: both start in time
    folder = tmp_path / "sw"
    a = start("sweep", config, sweep, "--storage", postgres_url, "--out", folder, "--threads", 1, cwd=tmp_path)
    b = start("sweep", config, sweep, "--storage", postgres_url, "--out", folder, "--threads", 1, cwd=tmp_path)
    outs = [p.communicate(timeout=300) for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs
    counted = _check_each_ran_once(trials(postgres_url, study), folder, 6, 8)
    pids = Counter(t.user_attrs["worker"] for t in counted)
    assert len(pids) == 2, pids              # both commands' workers ran trials
    show = cnncli("sweep", "show", postgres_url, "--study", study, "--best", tmp_path / "best.yaml", cwd=tmp_path)
    assert show.returncode == 0 and (tmp_path / "best.yaml").is_file(), show.stderr


EPOCHS = 15


def test_a_killed_worker_s_trial_is_retried_and_the_sweep_completes(tmp_path, mnist_slice):
    config, sweep = write(tmp_path, mnist_slice, "trials: 4\nsampler: random\npruner: none\nheartbeat: 1\n"
                          "space:\n  train.optimizer.lr: {low: 0.01, high: 0.1, log: true}\n", epochs=EPOCHS)
    folder = tmp_path / "sw"
    url = f"sqlite:///{folder / 'study.db'}"
    p = start("sweep", config, sweep, "--out", folder, "--workers", 2, "--threads", 1, cwd=tmp_path)
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.3)
        try:
            # a trial with epochs to go (a tiny trial takes ~0.1 s per epoch): still running at the kill
            running = [t for t in trials(url, "sweep")
                       if t.state.name == "RUNNING" and 1 <= len(t.intermediate_values) <= EPOCHS - 5]
        except Exception:           # the study is not created yet
            continue
        if running:
            victim = running[0]
            os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    assert victim is not None, "no trial was seen running"
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, out + err
    assert "worker" in err and "exited with -9" in err        # the command says a worker was lost
    ts = trials(url, "sweep")
    killed = next(t for t in ts if t.number == victim.number)
    assert killed.state.name == "FAIL"
    retries = [t for t in ts if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1 and retries[0].params == killed.params and retries[0].state.name == "COMPLETE"
    counted = _check_each_ran_once(ts, folder, 4, EPOCHS)
    assert len(Counter(t.number for t in counted)) == 4
    shown = json.loads(cnncli("sweep", "show", folder, "--json", cwd=tmp_path).stdout)
    row = next(t for t in shown["trials"] if t["number"] == victim.number)
    assert row["state"] == "FAIL" and row["message"].startswith(f"retried as trial {retries[0].number}")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_and_replaced(tmp_path, mnist_slice):
    """A worker lost between Optuna's ``ask`` and its heartbeat leaves a RUNNING trial with no
    heartbeat, which ``fail_stale_trials`` skips: the next worker fails it after the grace
    (its own clock), marks it surplus (never ran) and runs the study's trials without it."""
    import optuna

    from cnncli.sweep.space import load_sweep
    from cnncli.sweep.study import counted, fail_unstarted, open_storage, open_study, unstarted_grace

    config, sweep_file = write(tmp_path, mnist_slice, "trials: 2\nsampler: random\npruner: none\nheartbeat: 1\n"
                               "space:\n  train.optimizer.lr: {low: 0.01, high: 0.1, log: true}\n")
    sweep = load_sweep(sweep_file, tmp_path / "sw")
    url = f"sqlite:///{tmp_path / 'sw' / 'study.db'}"
    (tmp_path / "sw").mkdir()
    study = open_study(sweep, open_storage(url, sweep.heartbeat))
    lost = study.ask()                                  # RUNNING, no heartbeat: its worker "died" here
    started = study.ask()
    started.set_user_attr("worker", "elsewhere:1")      # a live worker's trial: never touched here
    seen: dict[int, float] = {}
    assert fail_unstarted(study, seen, 10.0, now=100.0) == [] and seen == {lost.number: 100.0}
    assert fail_unstarted(study, seen, 10.0, now=109.9) == []
    assert fail_unstarted(study, seen, 10.0, now=110.0) == [lost.number]
    assert seen == {} and unstarted_grace(1) == 10.0 and unstarted_grace(30) == 60.0
    ts = {t.number: t for t in study.get_trials()}
    assert ts[lost.number].state.name == "FAIL" and ts[lost.number].user_attrs["surplus"] is True
    assert ts[started.number].state.name == "RUNNING"
    study.tell(started, state=optuna.trial.TrialState.FAIL)
    again = study.ask()                                 # lost too; left for the worker below
    r = cnncli("sweep", config, sweep_file, "--out", tmp_path / "sw", "--threads", 1, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr       # without the reaper it waits for `again` forever
    ts = {t.number: t for t in study.get_trials()}
    assert ts[again.number].state.name == "FAIL" and ts[again.number].user_attrs["surplus"] is True
    # the failed live trial counts, the lost ones do not: one more trial makes the two
    done = counted(study.get_trials())
    assert [(t.number, t.state.name) for t in done] == [(started.number, "FAIL"), (again.number + 1, "COMPLETE")]
