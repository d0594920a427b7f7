"""Where artifacts live: a local path or an fsspec URL (`file://`, `s3://`, `gs://`, ...).

A process on any node of a cluster reads the catalog and the registry through a URL; what it
loads (weights, Parquet, images) is copied once into a local cache and read from there, because
torch, faiss and PIL want local files. Credentials and endpoints come from the store's own
settings (for S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, ...), never
from our configs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

LOCAL_SCHEMES = ("", "file", "local")
MIRRORED = ".mirrored.json"


def is_url(location: str | Path) -> bool:
    """Whether `location` names a non-local store (`s3://...`); plain paths and `file://` are local."""
    text = str(location)
    return "://" in text and text.split("://", 1)[0] not in LOCAL_SCHEMES


def local_path(location: str | Path) -> Path:
    """A local location as a Path (`file:///x` -> `/x`)."""
    text = str(location)
    return Path(text.split("://", 1)[1]) if text.startswith(("file://", "local://")) else Path(text)


def filesystem(url: str):
    """(fsspec filesystem, path inside it) for a URL."""
    import fsspec

    return fsspec.core.url_to_fs(url)


def cache_root() -> Path:
    """The node-local cache for copies of remote artifacts: `$ONEVISION_CACHE` or ~/.cache/onevision."""
    return Path(os.environ.get("ONEVISION_CACHE", "~/.cache/onevision")).expanduser()


def url_key(url: str) -> str:
    return hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def mirror_tree(url: str, dest: Path) -> Path:
    """A local copy of the directory at `url`, made once per content: under `dest/<digest>/<name>`,
    where the digest is of the store's listing (names, sizes, ETags or mtimes) and `<name>` is the
    URL's last part (a catalog's name names its models). A copy is never replaced, so processes
    reading an older one keep it; one process copies while the others on the node wait on a lock,
    under a temporary name renamed when complete. Each call lists the store again: a process that
    starts after the content changed gets the new copy."""
    import fcntl

    fs, root = filesystem(url)
    listing = {}
    for path, info in sorted(fs.find(root, detail=True).items()):
        rel = os.path.relpath(path, root)
        listing[rel] = [info.get("size"), str(info.get("ETag") or info.get("etag") or info.get("mtime") or "")]
    if not listing:
        raise FileNotFoundError(f"{url}: nothing there")
    digest = hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()[:16]
    name = url.rstrip("/").rsplit("/", 1)[-1] or "root"
    final = dest / digest / name
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / MIRRORED).is_file():
            return final
        tmp = dest / digest / f".{name}.{os.getpid()}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for rel in listing:
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{root.rstrip('/')}/{rel}", str(target))
        (tmp / MIRRORED).write_text(json.dumps({"url": url, "digest": digest, "files": len(listing)}) + "\n")
        os.replace(tmp, final)
    return final


def localize(location: str | Path, kind: str = "tree") -> Path:
    """A local directory holding what `location` holds: the path itself when it is local, else a
    mirror under `cache_root()/<kind>/<url hash>/<content digest>/<name>` (see `mirror_tree`)."""
    if not is_url(location):
        return local_path(location)
    return mirror_tree(str(location), cache_root() / kind / url_key(str(location)))
