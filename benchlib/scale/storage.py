"""Outputs on any fsspec URL (``s3://bucket/prefix``, ...) as well as local folders.

Runs and reports are made in a local folder and then copied to the URL; the report
copies the runs of a URL down first. Credentials and endpoints are fsspec's and the
cloud SDK's own (for S3: the usual AWS variables, including AWS_ENDPOINT_URL).
"""
from __future__ import annotations

from pathlib import Path

import fsspec


def is_url(location: str | Path) -> bool:
    return "://" in str(location)


def write_files(location: str, relative_dir: str, files: dict[str, bytes]) -> str:
    """Write `files` into `location/relative_dir/`; return where they went."""
    fs, root = fsspec.core.url_to_fs(str(location))
    relative_dir = relative_dir.strip("/.")
    target = "/".join(part for part in (root.rstrip("/"), relative_dir) if part)
    fs.makedirs(target, exist_ok=True)
    for name, data in files.items():
        fs.pipe_file(f"{target}/{name}", data)
    return "/".join(part for part in (str(location).rstrip("/"), relative_dir) if part)


def upload_tree(local: Path, location: str) -> None:
    """Copy every file under `local` to the same relative paths under `location`."""
    for path in sorted(p for p in local.rglob("*") if p.is_file() and not p.name.startswith(".")):
        relative = path.relative_to(local)
        write_files(location, str(relative.parent).replace("\\", "/"), {path.name: path.read_bytes()})


def download_runs(location: str, local: Path) -> None:
    """Copy the run folders (``<instance>/<run_id>/*``) under `location` into `local`."""
    fs, root = fsspec.core.url_to_fs(str(location))
    root = root.rstrip("/")
    for remote in fs.glob(f"{root}/*/*/*"):
        relative = remote[len(root) + 1:]
        if relative.count("/") != 2 or relative.rsplit("/", 1)[1].startswith("."):
            continue
        target = local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fs.cat_file(remote))
