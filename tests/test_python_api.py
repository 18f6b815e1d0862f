"""The README's "From Python" example runs verbatim, and its figures are real."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    """The first ```python block under the README's "### From Python" heading."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### From Python"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: no python block under 'From Python'"
    return match.group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """Run the example in a folder laid out like the repository (its configs and data), so
    its run folder lands in tmp_path; check what it printed and the values it computed."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.yaml").write_text((REPO / "configs" / "tiny.yaml").read_text())
    (tmp_path / "data").mkdir()
    os.symlink(REPO / "data" / "mnist", tmp_path / "data" / "mnist")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(readme_example(), "README.md (From Python)", "exec"), namespace)  # noqa: S102
    printed = out.getvalue()
    end, result, probs, checks = (namespace[k] for k in ("end", "result", "probs", "checks"))
    assert end.run_dir.resolve() == tmp_path / "runs" / "from-python"
    assert (end.run_dir / "metrics.jsonl").is_file()
    assert [line.startswith(f"epoch {k}:") for k, line in enumerate(
        (x for x in printed.splitlines() if x.startswith("epoch ")), 1)] == [True, True]
    # 2 epochs on 2,700 images of MNIST: far above chance (10 %); eval reproduces fit's figure
    assert end.test.accuracy > 0.6, printed
    assert result.accuracy == end.test.accuracy and result.labels.size == 10_000
    assert probs.shape == (8, 10) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    assert len(checks) > 5 and all(c.passed(1e-6) for c in checks)
    assert f"{len(checks)} of {len(checks)} gradients pass" in printed


def test_import_cnncli_is_lazy():
    """``import cnncli`` loads no numpy, yaml or rich (the CLI's start-up depends on it), and
    every exported name resolves."""
    code = ("import sys, cnncli; heavy = [m for m in ('numpy', 'yaml', 'rich') if m in sys.modules]; "
            "print(heavy); [getattr(cnncli, n) for n in cnncli.__all__]; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[]", "ok"]
