"""Resumable HTTP downloads with a progress bar and md5 verification (standard library + tqdm).

A file is fetched into `<name>.part` beside its destination: an interrupted download resumes there with an
HTTP Range request (a server that ignores Range sends the whole file, which then restarts the part), and
the part is renamed to its final name only once complete and verified. A dataset's archive (zip/tar) is
extracted into a temporary directory and its files are checked against the catalogue's md5s before they
are moved into place: a checksum mismatch leaves nothing behind but the error.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from loopctr.errors import UserError

CHUNK = 1 << 20


def md5sum(path: Path, chunk: int = CHUNK) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str | None = None, progress: bool = True, timeout: float = 60.0,
             log=print) -> Path:
    """Fetch `url` to `dest` (resuming `dest.part`), verify `md5` if given, rename into place."""
    dest = Path(dest)
    if dest.is_file() and (md5 is None or md5sum(dest) == md5):
        log(f"{dest}: already downloaded" + (" (md5 verified)" if md5 else ""))
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part already holds the whole file
            response = None
        else:
            raise UserError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"{url}: cannot connect ({getattr(exc, 'reason', exc)}); re-run to retry") from None
    if response is not None:
        with response:
            resumed = response.status == 206 and have > 0
            if not resumed:
                have = 0  # the server sent the whole file
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            from tqdm import tqdm

            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                       disable=not progress, leave=False)
            try:
                with open(part, "ab" if resumed else "wb") as out:
                    while block := response.read(CHUNK):
                        out.write(block)
                        bar.update(len(block))
            except (OSError, urllib.error.URLError) as exc:
                raise UserError(f"{url}: interrupted after {part.stat().st_size:,} bytes ({exc}); "
                                f"re-run to resume from {part}") from None
            finally:
                bar.close()
            if total is not None and part.stat().st_size < total:
                raise UserError(f"{url}: the connection closed after {part.stat().st_size:,} of {total:,} bytes; "
                                f"re-run to resume from {part}")
    if md5 is not None:
        got = md5sum(part)
        if got != md5:
            part.unlink()
            raise UserError(f"{dest}: checksum mismatch after download: md5 {got}, expected {md5}; "
                            "the download was removed, run again")
    os.replace(part, dest)
    log(f"{dest}: downloaded ({dest.stat().st_size:,} bytes" + (", md5 verified)" if md5 else ")"))
    return dest


def _extract(archive: Path, kind: str, into: Path) -> None:
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    target = (into / member).resolve()
                    if not str(target).startswith(str(into.resolve())):
                        raise UserError(f"{archive}: unsafe path in archive: {member}")
                zf.extractall(into)
        elif kind in ("tar", "tar.gz", "tgz"):
            with tarfile.open(archive) as tf:
                tf.extractall(into, filter="data")
        else:
            raise UserError(f"{archive}: unknown archive kind '{kind}' (zip or tar)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise UserError(f"{archive}: not a valid {kind} archive ({exc}); delete it and download again") from None


def _flat_files(root: Path) -> dict[str, Path]:
    """name -> path of every file under root (an archive's single top-level folder is looked through)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("._") and "__MACOSX" not in p.parts:
            out.setdefault(p.name, p)
    return out


def download_dataset(name_or_path: str, out_dir, mirror: str | None = None, progress: bool = True, log=print) -> Path:
    """Download a catalogue entry's files into `out_dir`, extract archives, verify the catalogue's md5s."""
    from loopctr.data import catalog

    entry = catalog.entry(name_or_path)
    files = entry.download.get("files") or []
    if not files:
        where = entry.about.get("url", "its source")
        raise UserError(f"dataset '{entry.name}' has no public download URL; get the files from {where} "
                        f"and run `loopctr prepare --dataset {entry.name} --source DIR`")
    checks: dict = dict(entry.download.get("md5") or {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if checks and all((out_dir / f).is_file() and md5sum(out_dir / f) == m for f, m in checks.items()):
        log(f"{out_dir}: {', '.join(checks)} already present (md5 verified)")
        return out_dir
    for spec in files:
        url = spec["url"]
        if mirror:
            url = mirror.rstrip("/") + "/" + spec["name"]
        kind = spec.get("extract")
        target = out_dir / spec["name"]
        download(url, target, md5=spec.get("md5") or (None if kind else checks.get(spec["name"])),
                 progress=progress, log=log)
        if kind:
            tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=out_dir))
            try:
                _extract(target, kind, tmp)
                found = _flat_files(tmp)
                for fname, expected in checks.items():
                    if fname not in found:
                        continue
                    got = md5sum(found[fname])
                    if got != expected:
                        raise UserError(f"{target}: checksum mismatch for {fname}: md5 {got}, expected {expected}; "
                                        "nothing was extracted and the archive was removed, download again")
                for fname, path in found.items():
                    os.replace(path, out_dir / fname)
            except UserError as exc:
                if "checksum mismatch" in str(exc):
                    target.unlink(missing_ok=True)
                raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    missing = [f for f in checks if not (out_dir / f).is_file()]
    if missing:
        raise UserError(f"{out_dir}: the download did not contain {missing}")
    log(f"{out_dir}: {entry.name} ready" + (f" ({', '.join(checks)} md5 verified)" if checks else ""))
    return out_dir
