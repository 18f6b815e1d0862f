"""The command line end to end on a slice of the real MNIST (typer's CliRunner and a real subprocess)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncli.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
ANSI = re.compile(r"\x1b\[")


def tiny_config(write_config, data: Path, **extra) -> Path:
    text = (REPO / "configs" / "tiny.yaml").read_text().replace("path: data/mnist", f"path: {data}")
    return write_config(text)


@pytest.fixture(scope="module")
def trained(mnist_slice, tmp_path_factory):
    """Train configs/tiny.yaml for one epoch on the slice; return (run dir, output)."""
    tmp = tmp_path_factory.mktemp("run")
    cfg = tmp / "tiny.yaml"
    cfg.write_text((REPO / "configs" / "tiny.yaml").read_text().replace("path: data/mnist", f"path: {mnist_slice}"))
    out = tmp / "run"
    result = runner.invoke(app, ["train", str(cfg), "--out", str(out), "--epochs", "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train_writes_the_run_folder(trained):
    out, output = trained
    assert sorted(p.name for p in out.iterdir()) == ["best.npz", "config.yaml", "last.npz", "metrics.jsonl",
                                                     "timing.jsonl"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"} <= rows[0].keys()
    assert not any("seconds" in k or k == "images_per_s" for k in rows[0])    # timings live in timing.jsonl
    timing = [json.loads(line) for line in (out / "timing.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in timing] == [1, 2] and {"seconds", "images_per_s"} <= timing[0].keys()
    assert not ANSI.search(output)                      # CliRunner is not a terminal: plain lines
    assert len(re.findall(r"^epoch \d/2 ", output, re.M)) == 2
    assert f"cnncli eval {out / 'best.npz'}" in output
    saved = (out / "config.yaml").read_text()
    assert "epochs: 2" in saved and "seed: 3" in saved   # overrides are recorded


def test_eval_prints_the_accuracy_training_printed(trained):
    out, output = trained
    acc = re.search(r"test accuracy (\d+\.\d+)%", output).group(1)
    result = runner.invoke(app, ["eval", str(out / "best.npz")])
    assert result.exit_code == 0, result.output
    assert f"test accuracy {acc}%" in result.output
    assert "confusion matrix" in result.output and "precision" in result.output
    js = runner.invoke(app, ["eval", str(out / "best.npz"), "--json"])
    data = json.loads(js.output)
    assert f"{data['accuracy'] * 100:.2f}" == acc
    cm = np.array(data["confusion_matrix"])
    assert cm.sum() == 200 and np.trace(cm) == round(data["accuracy"] * 200)


def test_checkpoint_holds_everything_eval_needs(trained, tmp_path):
    out, _ = trained
    moved = tmp_path / "elsewhere.npz"
    moved.write_bytes((out / "best.npz").read_bytes())
    assert runner.invoke(app, ["eval", str(moved)]).exit_code == 0


def test_a_taken_run_folder_is_never_overwritten(trained, write_config, mnist_slice):
    out, _ = trained
    before = (out / "best.npz").read_bytes()
    cfg = tiny_config(write_config, mnist_slice)
    result = runner.invoke(app, ["train", str(cfg), "--out", str(out), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert (out / "best.npz").read_bytes() == before
    assert (out.parent / f"{out.name}-2" / "best.npz").is_file()


def test_same_seed_same_metrics(write_config, mnist_slice, tmp_path):
    cfg = tiny_config(write_config, mnist_slice)
    for name in ("a", "b"):
        assert runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / name), "-q", "--epochs", "2"]).exit_code == 0
    # byte for byte: metrics.jsonl holds no wall-clock figures
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() == (tmp_path / "b" / "metrics.jsonl").read_bytes()


def test_gradcheck_passes_on_tiny():
    result = runner.invoke(app, ["gradcheck", str(REPO / "configs" / "tiny.yaml")])
    assert result.exit_code == 0, result.output
    assert "all passed" in result.output


def test_gradcheck_fails_on_a_broken_backward(monkeypatch):
    from cnncli.layers.activation import ReLU

    monkeypatch.setattr(ReLU, "backward", lambda self, dy: dy)    # forgets the mask
    result = runner.invoke(app, ["gradcheck", str(REPO / "configs" / "tiny.yaml")])
    assert result.exit_code == 1
    assert "FAIL" in result.output


def test_layers_lists_the_registry():
    result = runner.invoke(app, ["layers"])
    assert result.exit_code == 0
    for name in ("conv2d", "maxpool2d", "avgpool2d", "batchnorm", "dropout", "linear", "flatten", "relu"):
        assert name in result.output
    one = runner.invoke(app, ["layers", "conv2d"])
    assert "kernel_size" in one.output and "References" in one.output
    assert runner.invoke(app, ["layers", "convv2d"]).exit_code == 2


BROKEN = [
    ("unknown layer", "    - rleu\n", "model.layers[1]", "Did you mean 'relu'"),
    ("missing option", "    - conv2d: {kernel_size: 3}\n", "model.layers[1]", "needs the option 'out_channels'"),
]


@pytest.mark.parametrize("what,layer,path,hint", BROKEN, ids=[b[0] for b in BROKEN])
def test_bad_config_exits_2_with_one_located_line(write_config, what, layer, path, hint):
    cfg = write_config("data: {path: data/mnist}\nmodel:\n  layers:\n    - flatten\n" + layer +
                       "    - linear: {out_features: 10}\n")
    result = subprocess.run([sys.executable, "-m", "cnncli", "train", str(cfg)], capture_output=True,
                            text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{cfg}:5 {path}" in lines[0] and hint in lines[0]


def test_debug_shows_the_traceback(write_config):
    cfg = write_config("data: {path: data/mnist}\nmodel:\n  layers: [rleu]\n")
    result = subprocess.run([sys.executable, "-m", "cnncli", "--debug", "train", str(cfg)],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_missing_data_folder_exits_2(write_config, tmp_path):
    cfg = write_config(f"data: {{path: {tmp_path / 'nowhere'}}}\nmodel:\n  layers: [flatten, {{linear: {{out_features: 10}}}}]\n")
    result = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "nowhere" in result.output


def test_eval_of_a_non_checkpoint_exits_2(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    result = runner.invoke(app, ["eval", str(bad)])
    assert result.exit_code == 2 and "x.npz" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("cnncli ")


def test_readme_layer_reference_is_generated_from_the_code():
    from cnncli.layers.registry import reference_markdown

    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- layers:start")
    block = readme[readme.index("\n", start) + 1:readme.index("<!-- layers:end -->")]
    assert block == reference_markdown(), "README layer table is stale: paste `cnncli layers --markdown`"


def test_every_layer_documents_its_shape_and_summary():
    from cnncli.layers import LAYERS, describe

    for name, cls in LAYERS.items():
        d = describe(cls)
        assert d["shape"] and d["summary"].endswith("."), name


def test_divergence_stops_with_a_message_and_exit_1(write_config, mnist_slice, tmp_path):
    text = (f"data: {{path: {mnist_slice}}}\nmodel:\n  layers: [flatten, {{linear: {{out_features: 32}}}}, relu,"
            " {linear: {out_features: 10}}]\ntrain: {epochs: 3, optimizer: {type: sgd, lr: 1.0e+30}}\n")
    out = tmp_path / "nan"
    result = runner.invoke(app, ["train", str(write_config(text)), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "the loss became nan" in result.output and "lower train.optimizer.lr" in result.output
    assert "Traceback" not in result.output


def test_a_last_batch_of_one_is_dropped_not_fatal(write_config, mnist_slice, tmp_path):
    # 600 images, 99 for validation -> 501 = 5 * 100 + 1; batchnorm after flatten sees (N, F)
    text = (f"data: {{path: {mnist_slice}, val_split: 99}}\nmodel:\n  layers: [flatten, "
            "{linear: {out_features: 16}}, batchnorm, relu, {linear: {out_features: 10}}]\n"
            "train: {epochs: 1, batch_size: 100}\n")
    result = runner.invoke(app, ["train", str(write_config(text)), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output


def test_summary_counts_match_hand_computation():
    result = runner.invoke(app, ["summary", str(REPO / "configs" / "mnist-small.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    params = [r["params"] for r in data["layers"]]
    # conv 32*1*3*3+32, bn 2*32, conv 64*32*3*3+64, bn 2*64, linear 3136*128+128, linear 128*10+10
    assert [p for p in params if p] == [320, 64, 18496, 128, 401536, 1290]
    assert data["params"] == 421834
    shapes = [tuple(r["output_shape"]) for r in data["layers"]]
    assert shapes[3] == (32, 14, 14) and shapes[9] == (3136,) and shapes[-1] == (10,)
    assert data["layers"][0]["flops"] == 32 * 28 * 28 * (2 * 9 + 1)
    table = runner.invoke(app, ["summary", str(REPO / "configs" / "mnist-small.yaml")])
    assert "trainable parameters: 421,834" in table.output


def test_summary_matches_torch_parameter_count():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Dropout(0.25), nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Dropout(0.5),
                        nn.Linear(128, 10))
    data = json.loads(runner.invoke(app, ["summary", str(REPO / "configs" / "mnist-small.yaml"), "--json"]).output)
    assert data["params"] == sum(p.numel() for p in net.parameters())


def test_predict_reads_npy_pgm_and_idx(trained, tmp_path, mnist_slice):
    from cnncli.datasets import load_split

    out, _ = trained
    test = load_split(mnist_slice, "test")
    np.save(tmp_path / "three.npy", test.images[:3, 0])
    np.save(tmp_path / "float.npy", test.images[0, 0] / 255.0)
    (tmp_path / "one.pgm").write_bytes(b"P5\n# MNIST test image 0\n28 28\n255\n" + test.images[0, 0].tobytes())
    files = [tmp_path / "three.npy", tmp_path / "float.npy", tmp_path / "one.pgm",
             mnist_slice / "t10k-images-idx3-ubyte.gz"]
    result = runner.invoke(app, ["predict", str(out / "best.npz"), *map(str, files), "--json", "-k", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 3 + 1 + 1 + 200
    for r in rows:
        assert len(r["top"]) == 2 and r["top"][0]["probability"] >= r["top"][1]["probability"]
    # the same image through three readers gets the same answer
    for r in (rows[3], rows[4], rows[5]):       # float32 sums depend on the batch: approx
        assert [t["class"] for t in r["top"]] == [t["class"] for t in rows[0]["top"]]
        assert r["top"][0]["probability"] == pytest.approx(rows[0]["top"][0]["probability"], rel=1e-5)
    # and the IDX batch agrees with eval's predictions: accuracy from predict == eval's
    acc = np.mean([r["top"][0]["class"] == y for r, y in zip(rows[5:], test.labels)])
    js = json.loads(runner.invoke(app, ["eval", str(out / "best.npz"), "--json"]).output)
    assert acc == pytest.approx(js["accuracy"])


def test_predict_refuses_wrong_sizes_and_bad_files(trained, tmp_path):
    out, _ = trained
    np.save(tmp_path / "big.npy", np.zeros((32, 32), dtype=np.uint8))
    (tmp_path / "bad.pgm").write_bytes(b"P5\n28 28\n255\n" + b"\0" * 10)
    for f, msg in (("big.npy", "model takes (1, 28, 28)"), ("bad.pgm", "truncated PGM"), ("none.npy", "not found")):
        result = runner.invoke(app, ["predict", str(out / "best.npz"), str(tmp_path / f)])
        assert result.exit_code == 2 and msg in result.output, result.output


def test_eval_draws_misclassified_images_and_training_draws_curves(trained):
    out, output = trained
    assert "accuracy (%)" in output and "best epoch:" in output
    result = runner.invoke(app, ["eval", str(out / "best.npz"), "--show-errors", "2"])
    assert re.search(r"#\d+: true \d, predicted \d", result.output)


def test_train_json_and_quiet_modes(write_config, mnist_slice, tmp_path):
    cfg = tiny_config(write_config, mnist_slice)
    result = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "j"), "--epochs", "2", "--json"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    assert [e["event"] for e in events] == ["epoch", "epoch", "end"]
    assert 0 <= events[-1]["test"]["accuracy"] <= 1 and events[-1]["test"]["n"] == 200
    quiet = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "q"), "--quiet"])
    assert quiet.output.strip().splitlines()[0].startswith("test accuracy") and len(quiet.output.splitlines()) == 1


def test_class_count_must_match_the_model(write_config, mnist_slice, tmp_path):
    cfg = tiny_config(write_config, mnist_slice)
    wide = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "a"),
                               "--set", "model.layers[7].linear.out_features=12"])
    assert wide.exit_code == 2 and "12 outputs but the data has 10 classes" in wide.output
    narrow = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "b"), "--set", "data.num_classes=5"])
    assert narrow.exit_code == 2 and "label 9 is outside [0, 5)" in narrow.output
    declared = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "c"), "-q",
                                   "--set", "model.layers[7].linear.out_features=12", "--set", "data.num_classes=12"])
    assert declared.exit_code == 0, declared.output


def test_ctrl_c_saves_state_beside_the_last_finished_epoch(write_config, mnist_slice, tmp_path):
    import signal
    import time

    from cnncli import checkpoint

    cfg = tiny_config(write_config, mnist_slice)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "cnncli", "train", str(cfg), "--out", str(out),
                             "--epochs", "100000"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted.npz" in stderr
    last = checkpoint.load(out / "last.npz")
    stopped = checkpoint.load(out / "interrupted.npz")
    assert stopped.meta["interrupted"] is True
    assert stopped.meta["epoch"] == last.meta["epoch"]      # epochs finished when the signal came
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    # the exact command that continues the run is printed; it works (with a reachable total)
    import shlex

    line = next(l for l in stderr.splitlines() if l.startswith("resume with: "))
    args = shlex.split(line[len("resume with: "):])
    # mid-epoch the interrupted state itself resumes (issue 16); at an epoch's end, last.npz
    stopped_at = out / ("interrupted.npz" if stopped.meta.get("batch") else "last.npz")
    assert args == ["cnncli", "train", str(cfg), "--set", "train.epochs=100000", "--resume", str(stopped_at)]
    finished = last.meta["epoch"]
    resumed = runner.invoke(app, [*args[1:], "--epochs", str(finished + 1), "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == finished + 1


def test_overwrite_starts_from_an_empty_run_folder(trained, write_config, mnist_slice, tmp_path):
    cfg = tiny_config(write_config, mnist_slice)
    out = tmp_path / "o"
    assert runner.invoke(app, ["train", str(cfg), "--out", str(out), "--epochs", "2", "-q"]).exit_code == 0
    assert runner.invoke(app, ["train", str(cfg), "--out", str(out), "--epochs", "1", "-q",
                               "--overwrite"]).exit_code == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (out.parent / "o-2").exists()


def test_output_and_normalization_mistakes_are_refused(write_config, mnist_slice, tmp_path):
    cfg = tiny_config(write_config, mnist_slice)
    a_file = tmp_path / "afile"
    a_file.write_text("keep me")
    result = runner.invoke(app, ["train", str(cfg), "--out", str(a_file)])
    assert result.exit_code == 2 and "is not a folder" in result.output and a_file.read_text() == "keep me"
    result = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "s"), "--set", "data.std=1e-300"])
    assert result.exit_code == 2 and "data.std" in result.output and not (tmp_path / "s").exists()


def test_lenet5_summary_against_hand_computation():
    data = json.loads(runner.invoke(app, ["summary", str(REPO / "configs" / "lenet5.yaml"), "--json"]).output)
    rows = data["layers"]
    # C1 6*1*5*5+6, C3 16*6*5*5+16, C5 400*120+120, F6 120*84+84, out 84*10+10
    assert [r["params"] for r in rows if r["params"]] == [156, 2416, 48120, 10164, 850]
    assert data["params"] == 61706
    assert [tuple(r["output_shape"]) for r in rows[:7]] == [(6, 28, 28), (6, 28, 28), (6, 14, 14), (16, 10, 10),
                                                            (16, 10, 10), (16, 5, 5), (400,)]


def test_fashion_mnist_config_trains_with_only_the_path_changed(mnist_slice, tmp_path):
    result = runner.invoke(app, ["train", str(REPO / "configs" / "fashion-mnist.yaml"), "--out", str(tmp_path / "f"),
                                 "--set", f"data.path={mnist_slice}", "--set", "data.val_split=100",
                                 "--epochs", "1", "-q"])
    assert result.exit_code == 0, result.output


def test_predict_reads_png_with_pillow(trained, tmp_path, mnist_slice):
    Image = pytest.importorskip("PIL.Image")
    from cnncli.datasets import load_split

    out, _ = trained
    img = load_split(mnist_slice, "test").images[0, 0]
    Image.fromarray(img).save(tmp_path / "d.png")
    np.save(tmp_path / "d.npy", img)
    png = runner.invoke(app, ["predict", str(out / "best.npz"), str(tmp_path / "d.png"), "--json"])
    npy = runner.invoke(app, ["predict", str(out / "best.npz"), str(tmp_path / "d.npy"), "--json"])
    assert png.exit_code == 0, png.output
    assert json.loads(png.output)["top"] == json.loads(npy.output)["top"]


def test_eval_macro_average_skips_classes_absent_from_the_slice():
    from rich.console import Console

    from cnncli.metrics import confusion_matrix
    from cnncli.render import render_eval
    from cnncli.loop import EvalResult

    labels = np.array([7, 2, 1, 0, 4])
    result = EvalResult(0.01, 1.0, labels, labels, 10, confusion_matrix(labels, labels, 10))
    console = Console(record=True, width=200, no_color=True)
    render_eval(result, "best.npz", console)
    text = console.export_text()
    macro = next(line for line in text.splitlines() if "macro avg" in line and "%" in line)
    assert re.findall(r"\d+\.\d+%", macro) == ["100.00%"] * 3, text
    assert re.search(r"│\s+3 │\s+- │\s+- │\s+- │\s+0 │", text), text
    assert "5 classes with no test images and no predictions (-) left out" in " ".join(text.split())


def test_plot_lines_labels_the_real_epochs():
    from cnncli.report import plot_lines

    lines = plot_lines({"train": [1.0, 0.5]}, epochs=[5, 6])
    assert lines[-2].split() == ["epoch", "5", "epoch", "6"]
    assert len(lines[-2]) == len(lines[-3])        # "epoch 6" ends under the axis' last column
    assert plot_lines({"train": [1.0, 0.5, 0.2]})[-2].split() == ["epoch", "1", "epoch", "3"]


def test_resumed_run_plots_its_real_epoch_numbers(write_config, mnist_slice, tmp_path):
    cfg = tiny_config(write_config, mnist_slice)
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", str(cfg), "--out", str(out), "--epochs", "2", "-q"]).exit_code == 0
    result = runner.invoke(app, ["train", str(cfg), "--resume", str(out / "last.npz"), "--epochs", "4"])
    assert result.exit_code == 0, result.output
    axes = [line.split() for line in result.output.splitlines() if line.strip().startswith("epoch ")
            and "/" not in line]
    assert axes == [["epoch", "3", "epoch", "4"]] * 2, result.output      # loss and accuracy plots


def test_gradcheck_strict_tol_cannot_fail_what_rounding_noise_hides():
    """A relative error above --tol passes only when the absolute difference is within the
    central difference's rounding noise, and is labelled so; the zero conv bias stays apart."""
    result = runner.invoke(app, ["gradcheck", str(REPO / "configs" / "tiny.yaml"), "--tol", "1e-15"])
    assert result.exit_code == 0, result.output
    assert len(re.findall(r"PASS \(zero\) +│", result.output)) == 1, result.output
    assert len(re.findall(r"PASS \(noise\) +│", result.output)) == 20, result.output
    summary = result.output.strip().splitlines()[-1]
    assert summary.startswith("21 tensors checked, all passed; worst relative error ")
    assert "(model input) over the 20 non-zero gradients; 1 zero gradient" in summary
    assert summary.endswith("20 passed within rounding noise (PASS (noise))")


def test_gradcheck_worst_is_over_the_non_zero_gradients():
    from rich.console import Console

    from cnncli.gradcheck import CheckResult
    from cnncli.render import render_gradcheck

    results = [CheckResult("1 conv2d", "weight", 5.0e-11, 3.2e-9, 36, 36, max_abs_grad=32.0, noise=6e-9),
               CheckResult("model", "input", 1.65e-8, 5.0e-10, 256, 3136, max_abs_grad=0.016, noise=5.7e-10),
               CheckResult("model: 1 conv2d", "bias", 1.0, 5.6e-16, 4, 4, max_abs_grad=5.6e-16, noise=5.7e-10),
               CheckResult("2 relu", "input", 3.0e-2, 4.0e-3, 64, 64, max_abs_grad=0.5, noise=1e-8)]
    assert [r.vanishing for r in results] == [False, False, True, False]
    assert [r.within_noise for r in results] == [True, True, True, False]
    assert [r.passed(1e-15) for r in results] == [True, True, True, False]
    assert [r.passed(1e-6) for r in results] == [True, True, True, False]   # a real error fails either way
    console = Console(record=True, width=300, no_color=True)
    render_gradcheck(results, 1e-15, console)
    text = console.export_text()
    assert len(re.findall(r"PASS \(zero\) +│", text)) == 1 and len(re.findall(r"PASS \(noise\) +│", text)) == 2
    assert text.count("│ FAIL") == 1
    assert text.strip().splitlines()[-1] == ("4 tensors checked, 1 FAILED; worst relative error 3.00e-02 (2 relu input) "
                                             "over the 3 non-zero gradients; 1 zero gradient (PASS (zero)) not "
                                             "counted; 2 passed within rounding noise (PASS (noise))")
