"""``cnncli data download NAME``: fetch a named dataset from its public source.

Standard library only (``urllib``). Each file is written to ``FILE.part`` beside its
destination and renamed into place only after its SHA-256 matches the checksum pinned in
:mod:`cnncli.catalog`; a check that fails deletes the ``.part`` file and says so. A
download that breaks off (network error, server error, Ctrl-C) keeps its ``.part`` file,
and the next run resumes it with an HTTP ``Range`` request (starting over when the server
does not honour it). A file already in place is verified, not fetched again.

``--mirror URL`` (or the environment variable ``CNNCLI_MIRROR``) replaces the source's
base URL: the mirror must serve the same file names (e.g. ``URL/train-images-idx3-ubyte.gz``);
``file:///folder/`` reads them from a local folder. A download that fails leaves no folder
it created empty (``data list`` would report an empty folder as found).
For gzip files whose content we hold (MNIST, Fashion-MNIST), a mirror's re-compressed copy
is accepted when its unpacked content has the pinned unpacked SHA-256.

EMNIST comes as one 562 MB zip of all six splits (``gzip.zip``); it is kept in
``DIR/emnist/`` and the split asked for is extracted to ``DIR/emnist-SPLIT/`` under MNIST's
file names (plus ``mapping.txt``), so other splits need no new download.

The library never prints: progress goes to ``on_event`` as the events below
(``report.DownloadReporter`` draws them).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnncli import __version__, catalog
from cnncli.catalog import RemoteFile
from cnncli.errors import DataError

__all__ = ["DownloadError", "FileFinished", "FileProgress", "FileStarted", "Note", "download", "fetch",
           "sha256_file", "verify"]

CHUNK = 1 << 16
TIMEOUT = 60.0


class DownloadError(DataError):
    """A download failed: network or server error, or a checksum that does not match."""


@dataclass(frozen=True)
class FileStarted:
    name: str
    url: str
    dest: Path
    total: int | None      # bytes of the whole file, when known
    offset: int            # bytes already there (a resumed download)


@dataclass(frozen=True)
class FileProgress:
    name: str
    done: int
    total: int | None


@dataclass(frozen=True)
class FileFinished:
    name: str
    dest: Path
    size: int
    status: str            # "downloaded" or "present" (already there and verified)
    check: str             # "sha256" (the file as served) or "unpacked" (its gunzipped content)


@dataclass(frozen=True)
class Note:
    message: str


EventHandler = Callable[[Any], None]


def _ignore(_event: Any) -> None:
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_gunzipped(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except (OSError, EOFError, zlib.error):
        return None
    return h.hexdigest()


def verify(path: Path, remote: RemoteFile) -> tuple[str | None, str]:
    """(how it matched: ``"sha256"``, ``"unpacked"`` or None; the file's SHA-256)."""
    digest = sha256_file(path)
    if digest == remote.sha256:
        return "sha256", digest
    if remote.unpacked_sha256:
        with open(path, "rb") as f:
            if f.read(2) == b"\x1f\x8b" and _sha256_gunzipped(path) == remote.unpacked_sha256:
                return "unpacked", digest
    return None, digest


def _url(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + urllib.parse.quote(name)


def check_mirror(mirror: str) -> str:
    """``mirror`` if it is an http(s) URL or a ``file:///`` URL of a local folder (urllib reads it;
    a file needs no resume, so it is always read whole).

    Raises:
        DownloadError: Otherwise.
    """
    try:
        parts = urllib.parse.urlsplit(mirror)
        parts.port          # raises ValueError for a port that is not a number (http://host:x/)
    except ValueError as e:
        raise DownloadError(f"invalid --mirror URL {mirror!r} ({e}); give the base URL that serves the dataset's "
                            f"files, e.g. --mirror https://example.org/mnist/ (IPv6: http://[::1]:8000/)") from None
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise DownloadError(f"mirror {mirror!r}: a file:// mirror names a local folder by its absolute path, "
                                f"e.g. --mirror file:///srv/datasets/mnist/ (three slashes)")
        return mirror
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DownloadError(f"mirror {mirror!r} is not an http://, https:// or file:// URL; give the base URL that "
                            f"serves the dataset's files, e.g. --mirror https://example.org/mnist/ or "
                            f"--mirror file:///srv/datasets/mnist/")
    return mirror


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": f"cnncli/{__version__} (Python urllib)", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        return str(e.reason)
    return str(e) or type(e).__name__


def _resume_hint(part: Path) -> str:
    if part.exists() and part.stat().st_size:
        return f" The {part.stat().st_size:,} bytes received are kept in {part}; run the same command again to resume."
    return " Run the same command again, or use --mirror URL."


def fetch(url: str, dest: Path, remote: RemoteFile, on_event: EventHandler = _ignore,
          timeout: float = TIMEOUT) -> str:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming it, and verify it.

    Returns:
        ``"present"`` if ``dest`` was already there and verified, else ``"downloaded"``.

    Raises:
        DownloadError: A network or HTTP error (the .part file is kept for a resume), a
            server that announces or sends more than :func:`max_bytes` (nothing beyond it is
            written; the .part file is deleted), or a SHA-256 that does not match (the .part
            file is deleted).
    """
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"{dest.parent}: cannot create the folder ({e.strerror or e}); choose another with --to.") \
            from None
    if dest.is_file():
        how, _ = verify(dest, remote)
        if how:
            on_event(FileFinished(remote.name, dest, dest.stat().st_size, "present", how))
            return "present"
        on_event(Note(f"{dest} is there but its SHA-256 does not match; downloading it again"))
    offset = part.stat().st_size if part.is_file() else 0
    for _attempt in range(3):
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:           # nothing after offset: the part may be complete already
                if verify(part, remote)[0]:
                    break
                on_event(Note(f"{part}: the server has nothing after byte {offset:,}; starting over"))
                part.unlink()
                offset = 0
                continue
            raise DownloadError(f"{url}: the server answered HTTP {e.code} {e.reason}.{_resume_hint(part)}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            check = "Check the folder" if url.startswith("file:") else "Check the network connection"
            raise DownloadError(f"cannot download {url}: {_reason(e)}. {check}."
                                f"{_resume_hint(part)}") from None
        with response:
            status = getattr(response, "status", 200)
            length = response.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if offset and status == 206:
                start = _range_start(response.headers.get("Content-Range", ""))
                if start != offset:
                    on_event(Note(f"{url}: the server resumed at byte {start} instead of {offset:,}; starting over"))
                    part.unlink()
                    offset = 0
                    continue
            elif offset:
                on_event(Note(f"{url}: the server does not resume downloads; starting over"))
                offset = 0
            total = offset + length if length is not None else None
            if total is not None and total > max_bytes(remote):
                raise _too_long(url, part, remote, f"the server announces {total:,} bytes")
            on_event(FileStarted(remote.name, url, dest, total, offset))
            _stream(response, part, offset, total, url, remote, on_event)
        break
    else:
        raise DownloadError(f"{url}: could not resume the download of {part}; delete it and run the command again.")
    how, digest = verify(part, remote)
    if not how:
        size = part.stat().st_size
        part.unlink()
        raise DownloadError(f"{url}: SHA-256 mismatch: expected {remote.sha256}, got {digest} ({size:,} bytes). "
                            f"The file is corrupt or not the published one; the partial file {part} was deleted. "
                            f"Run the command again (or use another --mirror).")
    try:
        os.replace(part, dest)
    except OSError as e:
        raise DownloadError(f"{dest}: cannot move the verified download into place ({e.strerror or e}).") from None
    on_event(FileFinished(remote.name, dest, dest.stat().st_size, "downloaded", how))
    return "downloaded"


#: Extra bytes accepted beyond the catalog's size for a file whose unpacked content we hold: a
#: mirror's re-compressed copy (accepted by its unpacked SHA-256) may be somewhat larger.
RECOMPRESSED_SLACK = 0.25


def max_bytes(remote: RemoteFile) -> int:
    """The most bytes a download of ``remote`` may hold: the catalog's size (a longer file cannot
    have the pinned SHA-256), or, when a re-compressed copy is accepted (``unpacked_sha256``),
    the size plus :data:`RECOMPRESSED_SLACK` of it and 64 KiB."""
    if remote.unpacked_sha256:
        return remote.size + int(remote.size * RECOMPRESSED_SLACK) + (64 << 10)
    return remote.size


def _too_long(url: str, part: Path, remote: RemoteFile, what: str) -> DownloadError:
    try:
        part.unlink()
    except OSError:
        pass
    return DownloadError(f"{url}: {what}, but {remote.name} is {remote.size:,} bytes (the catalog's size; at most "
                         f"{max_bytes(remote):,} accepted); the server does not serve the published file. "
                         f"Nothing was kept. Use another --mirror, or the source.")


def _range_start(content_range: str) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``."""
    try:
        unit, _, rest = content_range.partition(" ")
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


def _stream(response, part: Path, offset: int, total: int | None, url: str, remote: RemoteFile,
            on_event: EventHandler) -> None:
    """Append the response to ``part``, stopping at :func:`max_bytes` (a server that streams
    forever gets no more written, then a DownloadError)."""
    name, limit = remote.name, max_bytes(remote)
    done = offset
    try:
        out = open(part, "ab" if offset else "wb")
    except OSError as e:
        raise DownloadError(f"{part}: cannot write ({e.strerror or e}); choose another folder with --to.") from None
    with out:
        while True:
            try:
                block = response.read(CHUNK)
            except (http.client.HTTPException, OSError) as e:
                out.flush()
                raise DownloadError(f"the download of {url} broke off after {done:,}"
                                    f"{f' of {total:,}' if total else ''} bytes ({_reason(e)})."
                                    f"{_resume_hint(part)}") from None
            if not block:
                break
            if done + len(block) > limit:
                out.close()
                raise _too_long(url, part, remote, f"the server sent more than {limit:,} bytes")
            try:
                out.write(block)
            except OSError as e:
                raise DownloadError(f"{part}: cannot write ({e.strerror or e}); free some disk space, then run "
                                    f"the same command again to resume.") from None
            done += len(block)
            on_event(FileProgress(name, done, total))
    if total is not None and done < total:
        raise DownloadError(f"the download of {url} ended after {done:,} of {total:,} bytes.{_resume_hint(part)}")


def _extract(archive: Path, members: tuple[tuple[str, str], ...], split: str, folder: Path,
             on_event: EventHandler) -> None:
    on_event(Note(f"extracting the {split} split from {archive} into {folder}"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as z:
            for target, member in members:
                member = member.format(split=split)
                tmp = folder / (target + ".part")
                try:
                    with z.open(member) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except KeyError:
                    raise DownloadError(f"{archive}: has no member {member}; the archive is not the expected one. "
                                        f"Delete it and download again.") from None
                os.replace(tmp, folder / target)
    except DownloadError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise DownloadError(f"{archive}: cannot extract it ({e}); delete it and download again.") from None
    except OSError as e:
        raise DownloadError(f"{folder}: cannot write the extracted files ({e.strerror or e}).") from None


def download(name: str, to: str | os.PathLike | None = None, mirror: str | None = None,
             on_event: EventHandler = _ignore, timeout: float = TIMEOUT) -> Path:
    """Download the named dataset into ``to/NAME`` (default: ``catalog.default_download_dir()``).

    Args:
        name: A name of :data:`cnncli.catalog.NAMES`.
        to: The data root to write under.
        mirror: A base URL serving the same file names, instead of the source.
        on_event: Receives the events of this module.
        timeout: Seconds to wait for the server at each step.

    Returns:
        The dataset folder (``to/NAME``), ready for ``data.name`` or ``data.path``.

    Raises:
        DataError: Unknown name. DownloadError: see :func:`fetch`.
    """
    info = catalog.lookup(name)
    root = Path(to).expanduser() if to is not None else catalog.default_download_dir()
    if mirror is not None:
        check_mirror(mirror)
    folder = root / info.name
    archive_folder = root / info.archive.folder if info.archive is not None else None
    new = [f for f in (folder, archive_folder) if f is not None and not f.exists()]
    try:
        if info.archive is not None:
            a = info.archive
            archive = root / a.folder / a.file.name
            fetch(_url(mirror or a.base_url, a.file.name), archive, a.file, on_event, timeout)
            _extract(archive, a.members, info.split or "", folder, on_event)
            return folder
        for remote in info.files:
            fetch(_url(mirror or info.base_url, remote.name), folder / remote.name, remote, on_event, timeout)
    except BaseException:
        for f in new:                  # a folder this call made and left empty would look like a dataset
            try:
                f.rmdir()              # only if empty: a .part kept for resuming stays
            except OSError:
                pass
        raise
    return folder
