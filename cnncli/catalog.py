"""The named datasets: where they come from, their pinned checksums, and where they are kept.

``data.name: mnist`` in a config (or ``cnncli data info mnist``) is looked up as the folder
``ROOT/mnist`` under each data root in turn (:func:`data_roots`):

1. ``data.root`` of the config (or ``--root``), when given;
2. the folder named by the environment variable ``CNNCLI_DATA_DIR``, when set;
3. ``./data`` (the current directory's ``data`` folder);
4. the ``data/`` folder of the cnncli checkout (which ships MNIST).

``cnncli data download NAME`` writes to ``$CNNCLI_DATA_DIR`` or ``./data`` unless given
``--to DIR``, so a downloaded dataset is found by name afterwards.

Checksums are SHA-256 of the files as their sources serve them, each with the place it
was published; where we hold the data (MNIST in ``data/mnist``, Fashion-MNIST in
``data/fashion-mnist``), the SHA-256 of the *unpacked* IDX content was computed here
too, which also accepts mirrors that re-compressed the files (ours did: see
``data/README.md``). This module is plain data: no network, no numpy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cnncli.errors import DataError, did_you_mean

__all__ = ["DATASETS", "NAMES", "Archive", "DatasetInfo", "RemoteFile", "data_roots", "default_download_dir",
           "find_named", "lookup"]

#: Environment variable naming a data root (searched for names, and the default of ``--to``).
DATA_DIR_ENV = "CNNCLI_DATA_DIR"
#: Environment variable giving a mirror base URL for ``cnncli data download`` (as ``--mirror``).
MIRROR_ENV = "CNNCLI_MIRROR"

REPO_DATA = Path(__file__).resolve().parents[1] / "data"


@dataclass(frozen=True)
class RemoteFile:
    """One file as served: its name (also the name it is saved under), size in bytes, SHA-256,
    and, for gzip files whose content we hold, the SHA-256 of the gunzipped bytes."""

    name: str
    size: int
    sha256: str
    unpacked_sha256: str | None = None


@dataclass(frozen=True)
class Archive:
    """A download shared by several named datasets (EMNIST's one zip holds all six splits).

    ``folder`` is where the archive is kept under the download directory; ``members``
    maps a file name inside the dataset folder to its path inside the archive, with
    ``{split}`` standing for the dataset's split name."""

    folder: str
    base_url: str
    file: RemoteFile
    members: tuple[tuple[str, str], ...]
    checksum_source: str


@dataclass(frozen=True)
class DatasetInfo:
    """A named dataset: description, licence, where to download it and what to verify."""

    name: str
    description: str
    homepage: str
    licence: str
    base_url: str = ""
    files: tuple[RemoteFile, ...] = ()
    checksum_source: str = ""
    classes: tuple[str, ...] | None = None
    archive: Archive | None = None
    split: str | None = None          # the archive's split name (emnist-letters: "letters")


# ---------------------------------------------------------------- MNIST
# Source: the ossci-datasets S3 mirror used by torchvision (the original yann.lecun.com files).
# SHA-256 of the served .gz files: tensorflow/datasets tensorflow_datasets/url_checksums/mnist.txt
# (same files from the cvdf-datasets mirror). SHA-256 unpacked: data/README.md, recomputed here
# from data/mnist with `gzip -dc FILE | sha256sum`.
_MNIST = DatasetInfo(
    name="mnist",
    description="handwritten digits: 60,000 + 10,000 images 28x28 grayscale, 10 classes",
    homepage="http://yann.lecun.com/exdb/mnist/",
    licence="CC BY-SA 3.0",
    base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", 9912422,
                   "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                   "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        RemoteFile("train-labels-idx1-ubyte.gz", 28881,
                   "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                   "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        RemoteFile("t10k-images-idx3-ubyte.gz", 1648877,
                   "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                   "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", 4542,
                   "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                   "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    ),
    checksum_source="tensorflow/datasets url_checksums/mnist.txt; unpacked: data/README.md",
    classes=tuple(str(d) for d in range(10)),
)

# ---------------------------------------------------------------- Fashion-MNIST
# Source: Zalando Research's S3 bucket (github.com/zalandoresearch/fashion-mnist README).
# SHA-256 of the served .gz files: tensorflow/datasets url_checksums/fashion_mnist.txt.
# SHA-256 unpacked: computed here from the copy shipped in data/fashion-mnist
# (`gzip -dc FILE | sha256sum`; that copy was re-compressed, its .gz sizes differ).
_FASHION = DatasetInfo(
    name="fashion-mnist",
    description="Zalando clothing: 60,000 + 10,000 images 28x28 grayscale, 10 classes",
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    licence="MIT",
    base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", 26421880,
                   "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                   "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        RemoteFile("train-labels-idx1-ubyte.gz", 29515,
                   "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                   "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        RemoteFile("t10k-images-idx3-ubyte.gz", 4422102,
                   "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                   "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", 5148,
                   "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                   "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    ),
    checksum_source="tensorflow/datasets url_checksums/fashion_mnist.txt; unpacked: data/README.md",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"),
)

# ---------------------------------------------------------------- Kuzushiji-MNIST
# Source: ROIS-DS Center for Open Data in the Humanities (github.com/rois-codh/kmnist README).
# SHA-256: tensorflow/datasets url_checksums/kmnist.txt (we hold no copy: no unpacked sums).
_KMNIST = DatasetInfo(
    name="kmnist",
    description="cursive Japanese (Kuzushiji): 60,000 + 10,000 images 28x28 grayscale, 10 classes",
    homepage="https://github.com/rois-codh/kmnist",
    licence="CC BY-SA 4.0",
    base_url="http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", 18165135,
                   "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4"),
        RemoteFile("train-labels-idx1-ubyte.gz", 29497,
                   "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17"),
        RemoteFile("t10k-images-idx3-ubyte.gz", 3041136,
                   "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", 5120,
                   "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"),
    ),
    checksum_source="tensorflow/datasets url_checksums/kmnist.txt",
    # kmnist_classmap.csv of the source: お き す つ な は ま や れ を
    classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
)

# ---------------------------------------------------------------- EMNIST
# Source: NIST (https://www.nist.gov/itl/products-and-services/emnist-dataset): one zip of all
# six splits as MNIST-style gzip IDX files. SHA-256 and size: tensorflow/datasets
# url_checksums/emnist.txt (published for the same file under its older address
# www.itl.nist.gov/iaui/vip/cs_links/EMNIST/gzip.zip; torchvision pins the same file by MD5).
EMNIST_SPLITS = ("balanced", "byclass", "bymerge", "digits", "letters", "mnist")
_EMNIST_ARCHIVE = Archive(
    folder="emnist",
    base_url="https://biometrics.nist.gov/cs_links/EMNIST/",
    file=RemoteFile("gzip.zip", 561753746, "fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e"),
    members=(
        ("train-images-idx3-ubyte.gz", "gzip/emnist-{split}-train-images-idx3-ubyte.gz"),
        ("train-labels-idx1-ubyte.gz", "gzip/emnist-{split}-train-labels-idx1-ubyte.gz"),
        ("t10k-images-idx3-ubyte.gz", "gzip/emnist-{split}-test-images-idx3-ubyte.gz"),
        ("t10k-labels-idx1-ubyte.gz", "gzip/emnist-{split}-test-labels-idx1-ubyte.gz"),
        ("mapping.txt", "gzip/emnist-{split}-mapping.txt"),
    ),
    checksum_source="tensorflow/datasets url_checksums/emnist.txt",
)
_EMNIST_SIZES = {"balanced": "131,600 images, 47 classes", "byclass": "814,255 images, 62 classes",
                 "bymerge": "814,255 images, 47 classes", "digits": "280,000 images, 10 classes",
                 "letters": "145,600 images, 26 classes labelled 1-26 (0 unused)",
                 "mnist": "70,000 images, 10 classes"}


def _emnist(split: str) -> DatasetInfo:
    return DatasetInfo(
        name=f"emnist-{split}",
        description=f"EMNIST {split}: {_EMNIST_SIZES[split]}, 28x28 grayscale (stored transposed, as "
                    f"the original)",
        homepage="https://www.nist.gov/itl/products-and-services/emnist-dataset",
        licence="public domain (NIST)",
        archive=_EMNIST_ARCHIVE,
        split=split,
        checksum_source=_EMNIST_ARCHIVE.checksum_source,
    )


DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (_MNIST, _FASHION, _KMNIST,
                                                         *(_emnist(s) for s in EMNIST_SPLITS))}
NAMES: tuple[str, ...] = tuple(DATASETS)


def lookup(name: str) -> DatasetInfo:
    """The catalog entry of ``name``.

    Raises:
        DataError: For an unknown name, with the closest known one and the list.
    """
    info = DATASETS.get(name)
    if info is None:
        raise DataError(f"unknown dataset name '{name}'.{did_you_mean(name, NAMES)} "
                        f"Known names: {', '.join(NAMES)}.")
    return info


def data_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for named datasets, in order (see the module docstring)."""
    roots: list[Path] = []
    if root is not None:
        roots.append(Path(root).expanduser())
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env:
        roots.append(Path(env).expanduser())
    roots.append(Path("data"))
    roots.append(REPO_DATA)
    out: list[Path] = []
    for r in roots:
        resolved = r.resolve()
        if resolved not in out:
            out.append(resolved)
    return out


def default_download_dir() -> Path:
    """Where ``cnncli data download`` writes without ``--to``: ``$CNNCLI_DATA_DIR`` or ``./data``."""
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else Path("data")


def find_named(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder holding the named dataset: the first ``ROOT/NAME`` that exists.

    Raises:
        DataError: Unknown name, or not found under any root (with the download command).
    """
    lookup(name)
    roots = data_roots(root)
    for r in roots:
        candidate = r / name
        try:
            if not candidate.is_dir():
                continue
            partial = sorted(p.name for p in candidate.glob("*.part"))
        except OSError:
            continue
        if partial:
            raise DataError(f"dataset '{name}' in {candidate} is incomplete: {', '.join(partial)} is an interrupted "
                            f"download. Finish it with: cnncli data download {name} --to {r}")
        return candidate
    to = f" --to {root}" if root is not None else ""
    raise DataError(f"dataset '{name}' not found: looked for a folder '{name}' in {', '.join(map(str, roots))}. "
                    f"Download it with: cnncli data download {name}{to}  (or set data.root / "
                    f"{DATA_DIR_ENV} to the folder that holds it, or give data.path).")
