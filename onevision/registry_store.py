"""A model registry on shared storage: the layout of `onevision.registry` at an fsspec URL
(`s3://bucket/registry`, `gs://...`, `file:///mnt/shared/registry`), so every node of a cluster
follows one CURRENT.

Object stores have no rename, so a version becomes visible by its manifest: a publisher claims
`<model>/<version>/` with an exclusive write of a claim object (two publishers never share a
number), uploads the files, checks them, and writes `manifest.json` last; a version without a
manifest does not exist for readers. CURRENT moves by a conditional write: `If-Match` on the
pointer's ETag (`If-None-Match: *` when there is none yet), so a flip based on a stale read fails
with `CurrentMoved` instead of undoing someone else's. Readers copy a version, and every version
its config names (tokenizer, encoder) and its lineage, into a node-local cache, check each file's
sha256 against the manifest, and load from there with the local registry's functions.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from onevision.registry import CURRENT, MANIFEST, MIRROR, RegistryError, current_version, load_version, versions
from onevision.storage import cache_root, filesystem, is_url, local_path, url_key

CLAIM = ".claim"
STALE_CLAIM_S = 900.0  # a claim this old without a manifest is a publisher that died mid-upload
VERSION_RE = re.compile(r"^v\d{4,}$")


def _precondition_failed(exc: BaseException) -> bool:
    """Whether a store error is a failed conditional write (S3's 412, which s3fs raises as
    FileExistsError for If-None-Match and as OSError EINVAL for If-Match), not a network,
    permission or bad-request error (also EINVAL in s3fs) that must propagate."""
    if isinstance(exc, FileExistsError):
        return True
    code = getattr(exc.__cause__, "response", {}).get("Error", {}).get("Code")
    return isinstance(exc, OSError) and exc.errno == errno.EINVAL and code in ("PreconditionFailed", "412")


class CurrentMoved(RegistryError):
    """CURRENT changed between reading it and flipping it: somebody else published or rolled back."""


@dataclass
class StoreRegistry:
    """The registry at `url` (any fsspec URL)."""

    url: str

    def __post_init__(self) -> None:
        self.fs, self.root = filesystem(self.url)
        self.root = self.root.rstrip("/")
        self.s3 = type(self.fs).__name__ == "S3FileSystem"

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _read(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def _names(self, model: str) -> list[str]:
        """Every version name in use: published, or claimed by a publisher still uploading."""
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self._path(model), detail=False,
                                                                           refresh=True)]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if VERSION_RE.match(n))

    def versions(self, model: str) -> list[str]:
        return [n for n in self._names(model) if self.fs.exists(self._path(model, n, MANIFEST))]

    def current(self, model: str) -> tuple[str | None, str | None]:
        """(CURRENT's version, its ETag for a conditional flip; None on stores without one)."""
        path = self._path(model, CURRENT)
        self.fs.invalidate_cache(path)
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return None, None
        data = self._read(path)
        return (data.decode().strip() if data else None), info.get("ETag")

    def current_version(self, model: str) -> str | None:
        """CURRENT's version: one read of the pointer (what replicas poll every few seconds)."""
        data = self._read(self._path(model, CURRENT))
        return (data.decode().strip() or None) if data else None

    def read_manifest(self, model: str, version: str) -> dict:
        data = self._read(self._path(model, version, MANIFEST))
        if data is None:
            raise RegistryError(f"{self.url}/{model} has no version {version!r}")
        return json.loads(data)

    def set_current(self, model: str, version: str, expected: str | None = None,
                    etag: str | None = None) -> None:
        """Point CURRENT at `version`, but only if CURRENT is still `expected` (None: absent).
        On S3 the check and the write are one conditional request; elsewhere they are a read and a
        write (no store-side guarantee between two writers)."""
        if not self.fs.exists(self._path(model, version, MANIFEST)):
            raise RegistryError(f"{self.url}/{model} has no version {version!r}")
        now, now_etag = self.current(model)
        if now != expected:
            raise CurrentMoved(f"{model}: CURRENT is {now}, not {expected}; read it again before moving it")
        data, path = (version + "\n").encode(), self._path(model, CURRENT)
        if not self.s3:
            self.fs.pipe_file(path, data)
            return
        try:
            if now is None:
                self.fs.pipe_file(path, data, mode="create")
            else:
                self.fs.pipe_file(path, data, IfMatch=etag or now_etag)
        except OSError as exc:
            if _precondition_failed(exc):
                raise CurrentMoved(f"{model}: CURRENT moved while it was being set to {version} ({exc})") from exc
            raise  # a network or permission error: the write may or may not have landed; read CURRENT again
        finally:
            self.fs.invalidate_cache(path)

    def _claim(self, model: str, version: str) -> bool:
        """Take `version`'s number: an exclusive create on S3 (elsewhere a check, then a write). A
        claim older than `STALE_CLAIM_S` under no manifest is a dead publisher's: it is replaced by a
        write conditional on its ETag, so of two publishers taking it over one wins."""
        path = self._path(model, version, CLAIM)
        token = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}".encode()
        try:
            if not self.s3:
                if self.fs.exists(path):
                    raise FileExistsError(path)
                self.fs.pipe_file(path, token)
                return True
            self.fs.pipe_file(path, token, mode="create")
            return True
        except OSError as exc:
            if not _precondition_failed(exc):
                raise
        etag = self._stale_claim(model, version)
        if etag is None:
            return False
        try:
            self.fs.pipe_file(path, token, IfMatch=etag)
            return True
        except OSError as exc:
            if not _precondition_failed(exc):
                raise
            return False

    def _stale_claim(self, model: str, version: str) -> str | None:
        """The claim's ETag when it is stale (older than `STALE_CLAIM_S`, no manifest; S3 only), else None."""
        if not self.s3 or self.fs.exists(self._path(model, version, MANIFEST)):
            return None
        try:
            info = self.fs.info(self._path(model, version, CLAIM))
        except FileNotFoundError:
            return None
        modified = info.get("LastModified")
        if modified is None or time.time() - modified.timestamp() <= STALE_CLAIM_S:
            return None
        return info.get("ETag")

    def upload(self, model: str, version_dir: Path, version: str | None = None) -> str:
        """Upload a local version directory (files, config and manifest as `registry.publish` wrote
        them) as `version`, or as the next free version when None; returns the version. The files
        are checked against the manifest before it is written, so a half upload never shows."""
        manifest, _ = load_version(version_dir)
        after = 0
        for _ in range(1000):
            if version is None:  # the next number after every one in use, published or claimed
                after = max([after, *(int(v[1:]) for v in self._names(model))])
                name = f"v{after + 1:04d}"
            else:
                name = version
            if self._claim(model, name):
                break
            if version is not None:
                raise RegistryError(f"{self.url}/{model}/{version} is already claimed by another publisher")
            after += 1  # lost the race for this number: try the next
        else:
            raise RegistryError(f"{self.url}/{model}: no version number could be claimed")
        remote_manifest = {**manifest, "version": name}
        for file in manifest["files"]:
            self.fs.put_file(str(Path(version_dir) / file), self._path(model, name, file))
        for file, digest in manifest["files"].items():
            if self.fs.size(self._path(model, name, file)) != (Path(version_dir) / file).stat().st_size:
                raise RegistryError(f"{self.url}/{model}/{name}/{file}: upload incomplete ({digest[:12]})")
        body = (json.dumps(remote_manifest, indent=2, sort_keys=True) + "\n").encode()
        try:  # exclusive: of two writers on one version (a claim taken over from a slow one) one publishes
            self.fs.pipe_file(self._path(model, name, MANIFEST), body, **({"mode": "create"} if self.s3 else {}))
        except OSError as exc:
            if _precondition_failed(exc):
                raise RegistryError(f"{self.url}/{model}/{name} was published by another writer meanwhile") from exc
            raise
        return name

    def push(self, local_root: str | Path, model: str, force: bool = False) -> dict:
        """Copy a local model's versions that the store lacks (same names, so parents and references
        hold) and move the store's CURRENT to the local one. A version present on both sides must
        have the same files. When the store's CURRENT is a version the local registry does not have
        (someone else published it), the push refuses to move it unless `force`: a stale local
        registry must not roll the cluster back."""
        uploaded, remote = [], set(self.versions(model))
        for v in versions(local_root, model):
            if v in remote:
                theirs = self.read_manifest(model, v)["files"]
                ours = json.loads((Path(local_root) / model / v / MANIFEST).read_text())["files"]
                if theirs != ours:
                    raise RegistryError(f"{model}/{v} differs between {local_root} and {self.url}: refusing to push")
                continue
            self.upload(model, Path(local_root) / model / v, v)
            uploaded.append(v)
        target = current_version(local_root, model)
        before, etag = self.current(model)
        if target is not None and target != before:
            if before is not None and before not in versions(local_root, model) and not force:
                raise RegistryError(f"{self.url}/{model}: CURRENT is {before}, which {local_root} does not have "
                                    f"(published elsewhere); pull it or push with force to point it at {target}")
            self.set_current(model, target, expected=before, etag=etag)
        return {"model": model, "uploaded": uploaded, "current": target or before, "was": before}

    def fetch(self, model: str, version: str, cache: Path) -> Path:
        """A checked local copy of `model/version` under `cache` (same layout as a local registry),
        with the versions its config names (tokenizer, encoder), so `resolve_ref` finds them beside
        it. Not its ancestors: serving never walks a lineage, and a DPO job's chain of versions
        would otherwise come along. A copy already there is reused after `load_version` checks it."""
        dest = cache / model / version
        if not (dest / MANIFEST).is_file():
            manifest = self.read_manifest(model, version)
            tmp = dest.with_name(f".{version}.{os.getpid()}.partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for file in manifest["files"]:
                self.fs.get_file(self._path(model, version, file), str(tmp / file))
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            load_version(tmp)  # every file against its sha256 before it may be used
            try:
                os.replace(tmp, dest)
            except OSError:  # another process on this node finished the same copy first
                shutil.rmtree(tmp, ignore_errors=True)
        (cache / MIRROR).touch()  # `registry.resolve_ref` then prefers the copies beside a version
        _, config = load_version(dest)
        for ref_model, ref_version in _version_refs(config):
            if ref_model == model:
                continue
            if not (cache / ref_model / ref_version / MANIFEST).is_file():
                self.fetch(ref_model, ref_version, cache)
        return dest


def _version_refs(config: dict) -> list[tuple[str, str]]:
    """(model, version) of every string in a config that ends in `<model>/vNNNN` (paths to versions)."""
    out = []
    stack: list = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and "/" in item:
            parts = item.rstrip("/").split("/")
            if len(parts) >= 2 and VERSION_RE.match(parts[-1]) and parts[-2]:
                out.append((parts[-2], parts[-1]))
    return out


class RegistryView:
    """What a server needs from a registry wherever it lives: CURRENT of a model, and a local
    directory of one of its versions (the registry's own for a local path, a checked node-local
    copy for a URL)."""

    def __init__(self, location: str | Path):
        self.location = str(location)
        self.store = StoreRegistry(self.location) if is_url(location) else None
        self.root = (cache_root() / "registry" / url_key(self.location)) if self.store else local_path(location)

    def current_version(self, model: str) -> str | None:
        return self.store.current_version(model) if self.store else current_version(self.root, model)

    def version_dir(self, model: str, version: str) -> Path:
        return self.store.fetch(model, version, self.root) if self.store else self.root / model / version

    def __str__(self) -> str:
        return self.location


def push_models(local_root: str | Path, url: str, models: list[str], force: bool = False) -> list[dict]:
    """Push `models` and every model their versions' configs name (tokenizer, encoder), references
    first, so that no CURRENT on the store points at a version whose references are missing."""
    from onevision.registry import read_version

    order: list[str] = []

    def visit(model: str) -> None:
        if model in order:
            return
        if not versions(local_root, model):
            raise RegistryError(f"{local_root}/{model}: no versions to push")
        for v in versions(local_root, model):
            for ref_model, _ in _version_refs(read_version(Path(local_root) / model / v)[1]):
                if ref_model != model:
                    visit(ref_model)
        order.append(model)

    for model in models:
        visit(model)
    store = StoreRegistry(url)
    return [store.push(local_root, model, force) for model in order]
