"""Outputs on any fsspec URL (``s3://bucket/prefix``, ...) as well as local folders.

Runs and reports are made in a local folder and then copied to the URL; the report
copies the runs of a URL down first. Credentials and endpoints are fsspec's and the
cloud SDK's own (for S3: the usual AWS variables, including AWS_ENDPOINT_URL).
Copying up never replaces a file benchlib did not write (see benchlib.ownership).
"""
from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import fsspec

from benchlib.errors import InputError
from benchlib.ownership import MARK, file_hash, is_ignored


def is_url(location: str | Path) -> bool:
    return "://" in str(location)


def write_files(location: str, relative_dir: str, files: dict[str, bytes]) -> str:
    """Write `files` (names relative to it) into `location/relative_dir/`; return where they went."""
    fs, root = fsspec.core.url_to_fs(str(location))
    relative_dir = relative_dir.strip("/.")
    target = "/".join(part for part in (root.rstrip("/"), relative_dir) if part)
    for name, data in files.items():  # a name may hold a folder: records/part-...
        fs.makedirs(f"{target}/{name}".rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(f"{target}/{name}", data)
    return "/".join(part for part in (str(location).rstrip("/"), relative_dir) if part)


def upload_tree(local: Path, location: str, unchanged: dict[str, str] | None = None,
                replaceable: Collection[str] = ()) -> list[str]:
    """Copy the files under `local` to the same relative paths under `location`; return those copied.

    A file whose hash is its `unchanged` one (as it was copied down) is not copied back. A
    file already at `location` is replaced only where `replaceable` names it (benchlib's,
    checked by the caller) or where it was copied down from there; anything else there is
    refused, before a single file is copied.
    """
    unchanged = unchanged or {}
    fs, root = fsspec.core.url_to_fs(str(location))
    root = root.rstrip("/")
    files = {}
    for path in sorted(p for p in local.rglob("*") if p.is_file() and (p.name == MARK or not is_ignored(p.name))):
        relative = path.relative_to(local).as_posix()
        data = path.read_bytes()
        if unchanged.get(relative) != file_hash(data):
            files[relative] = data
    fs.invalidate_cache(root)
    taken = [r for r in files if r not in unchanged and r not in replaceable and fs.exists(f"{root}/{r}")]
    if taken:
        raise InputError(f"{location}: {', '.join(taken[:8])} already there and not written by benchlib; nothing "
                         "was copied; give another --out, or move those away")
    for relative, data in files.items():
        directory, _, name = relative.rpartition("/")
        write_files(location, directory, {name: data})
    return list(files)


def download_runs(location: str, local: Path) -> dict[str, str]:
    """Copy the run folders (``<instance>/<run_id>/*``) under `location` into `local`; return each copied
    file's relative path and hash (for :func:`upload_tree`'s `unchanged`)."""
    fs, root = fsspec.core.url_to_fs(str(location))
    root = root.rstrip("/")
    copied = {}
    # A run's files, and the parts of its tables a killed run left (records/part-..., see benchlib.files).
    for remote in [*fs.glob(f"{root}/*/*/*"), *fs.glob(f"{root}/*/*/*/part-*.parquet")]:
        relative = remote[len(root) + 1:]
        if relative.count("/") not in (2, 3) or (is_ignored(relative.rsplit("/", 1)[1])
                                                  and not relative.endswith(MARK)):
            continue
        if fs.isdir(remote):
            continue
        data = fs.cat_file(remote)
        target = local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        copied[relative] = file_hash(data)
    return copied
