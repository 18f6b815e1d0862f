"""configs/fashion-mnist.yaml finds the shipped data by name from any folder, with class names,
and keeps them when --set data.path points at another copy."""

from __future__ import annotations

from pathlib import Path

from cnncli import catalog
from cnncli import config as C
from cnncli.formats.loading import load

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "fashion-mnist.yaml"
NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def test_found_by_name_from_another_folder_with_class_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(catalog.DATA_DIR_ENV, raising=False)
    cfg = C.load(CONFIG, ["data.train_limit=20", "data.test_limit=10"])
    assert cfg.data.name == "fashion-mnist" and cfg.data.path is None
    loaded = load(cfg.data, train_limit=20, test_limit=10)
    assert loaded.classes == NAMES and loaded.where.startswith("fashion-mnist (" + str(REPO / "data"))
    assert len(loaded.train.labels) == 20 and len(loaded.test.labels) == 10


def test_set_data_path_keeps_the_class_names(tmp_path):
    copy = str(REPO / "data" / "fashion-mnist")
    cfg = C.load(CONFIG, [f"data.path={copy}"])
    assert cfg.data.name is None and cfg.data.path == copy and cfg.data.classes == NAMES
    assert C.from_dict(cfg.to_dict()).data.classes == NAMES               # as a checkpoint stores it
    mine = C.load(CONFIG, [f"data.path={copy}", "data.classes=[a, b, c, d, e, f, g, h, i, j]"])
    assert mine.data.classes[0] == "a"                                     # given classes win
