"""The short version of tests/chaos.py: SIGKILL training at random moments (half of them
during a save), resume, and compare with an uninterrupted run."""

from __future__ import annotations

import chaos


def test_runs_killed_and_resumed_end_as_the_uninterrupted_run(tmp_path, capsys):
    assert chaos.main(["--trials", "3", "--kills", "3", "--epochs", "3", "--seed", "1",
                       "--folder", str(tmp_path)]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "3 trials" in out and ", 0 runs differing" in out, out
    kills = int(out.split(" kills")[0].rsplit(" ", 1)[1])
    assert kills >= 3, out                      # every trial was killed at least once
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
