"""``cnncli data ...``: download named datasets, describe any dataset, list the named ones.

The commands join :data:`cnncli.cli.data_app` when :mod:`cnncli.cli` is imported; like the
other commands they parse, call one library function and hand the result to the reporting
modules, under :func:`cnncli.cli.user_errors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cnncli.cli import data_app, user_errors
from cnncli.errors import ConfigError, Problem


@data_app.command("download")
def data_download(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="mnist, fashion-mnist, kmnist, or emnist-SPLIT with SPLIT "
                                                          "one of balanced, byclass, bymerge, digits, letters, mnist."),
    to: Optional[Path] = typer.Option(None, "--to", metavar="DIR", help="Data root to write under: files go to "
                                      "DIR/NAME (default: $CNNCLI_DATA_DIR, else ./data)."),
    mirror: Optional[str] = typer.Option(None, "--mirror", metavar="URL", envvar="CNNCLI_MIRROR",
                                         help="Base URL of a mirror serving the same file names: "
                                              "http(s)://... or file:///local/folder/ (or set CNNCLI_MIRROR)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Download a named dataset from its public source, checked against SHA-256 sums pinned in cnncli.

    A broken-off download resumes where it stopped when run again (the bytes so far are kept
    in FILE.part); a file whose checksum does not match is deleted and reported (exit 2).
    Files already in place are verified, not fetched again. EMNIST is one 562 MB zip of all
    six splits, kept in DIR/emnist/; the split asked for is extracted to DIR/emnist-SPLIT/.

    Example: cnncli data download fashion-mnist   then   data: {name: fashion-mnist} in a config
    """
    with user_errors(ctx):
        from cnncli import download as D
        from cnncli import report
        from cnncli.catalog import data_roots

        reporter = report.DownloadReporter("quiet" if quiet else None)
        try:
            folder = D.download(name, to, mirror, reporter)
        finally:
            reporter.close()
        if not quiet:
            report.download_ready(name, folder, folder.parent.resolve() in data_roots())


@data_app.command("info")
def data_info(
    ctx: typer.Context,
    path: str = typer.Argument(..., metavar="DATASET", help="A dataset folder or file (IDX, NPZ, CSV, image folders), "
                                                            "or a dataset name such as mnist."),
    fmt: str = typer.Option("auto", "--format", metavar="FORMAT", help="auto (detect), idx, npz, csv or folder."),
    image_shape: Optional[str] = typer.Option(None, "--image-shape", metavar="HxW",
                                              help="Image shape of CSV rows or flat NPZ arrays: 28x28 or 3x32x32 "
                                                   "(C x H x W); square ones are inferred."),
    root: Optional[Path] = typer.Option(None, "--root", metavar="DIR", help="Also look for named datasets in DIR."),
    samples: int = typer.Option(10, "--samples", metavar="N", min=0, help="Draw this many sample images (0: none)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables and images."),
) -> None:
    """Show a dataset: images per split, image shape, pixel mean/std, class balance, sample images.

    Examples: cnncli data info data/mnist   |   cnncli data info fashion-mnist   |   cnncli data info digits.csv --image-shape 28x28
    """
    with user_errors(ctx):
        from cnncli import datainfo, render, report

        shape = None if image_shape is None else _image_shape(image_shape)
        info = datainfo.data_info(path, fmt, shape, root, 0 if json_out else samples)
        if json_out:
            report.print_json(info.info)
            return
        render.render_data_info(info)


def _image_shape(text: str) -> list[int]:
    """``--image-shape 28x28`` or ``3x32x32`` as a list of ints.

    Raises:
        ConfigError: Text that is not numbers joined by ``x``.
    """
    try:
        return [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise ConfigError([Problem("--image-shape", f"expected HxW or CxHxW such as 28x28, got {text!r}")]) from None


@data_app.command("list")
def data_list(
    root: Optional[Path] = typer.Option(None, "--root", metavar="DIR", help="Also look for datasets in DIR."),
) -> None:
    """List the dataset names 'cnncli data download' and data.name know, and where each is found.

    Example: cnncli data list
    """
    from cnncli import catalog, datainfo, render

    render.render_dataset_list(datainfo.named_datasets(root), catalog.data_roots(root))
