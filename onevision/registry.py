"""The model registry: `<root>/<model>/<version>/` with weights, config and a manifest.

A version directory is written under a temporary name and renamed into place, and the
`CURRENT` pointer is replaced atomically, so a reader never sees half an artifact. The
manifest records the parent version, metrics and the sha256 of every file, and `load_version`
checks them, so a corrupt or swapped file is refused with a clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

MANIFEST = "manifest.json"
CURRENT = "CURRENT"
MIRROR = ".mirror"  # marks a node-local copy of a registry on shared storage (`registry_store`)


class RegistryError(ValueError):
    """A registry entry that is missing, incomplete or does not match its manifest."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions(root: str | Path, model: str) -> list[str]:
    base = Path(root) / model
    return sorted(p.name for p in base.glob("v[0-9]*") if (p / MANIFEST).is_file()) if base.is_dir() else []


def current_version(root: str | Path, model: str) -> str | None:
    pointer = Path(root) / model / CURRENT
    return pointer.read_text().strip() if pointer.is_file() else None


def set_current(root: str | Path, model: str, version: str) -> None:
    base = Path(root) / model
    if not (base / version / MANIFEST).is_file():
        raise RegistryError(f"{model} has no version {version!r}")
    tmp = base / f".{CURRENT}.{os.getpid()}"
    tmp.write_text(version + "\n")
    os.replace(tmp, base / CURRENT)


def publish(root: str | Path, model: str, files: dict[str, Path], config: dict, metrics: dict | None = None,
            parent: str | None = None, make_current: bool = True, extra: dict | None = None) -> Path:
    """Copy `files` (name -> path) into a new version with a manifest; return its directory."""
    base = Path(root) / model
    base.mkdir(parents=True, exist_ok=True)
    existing = versions(root, model)
    version = f"v{(int(existing[-1][1:]) + 1) if existing else 1:04d}"
    tmp = base / f".{version}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, src in files.items():
        shutil.copyfile(src, tmp / name)
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    manifest = {
        "model": model, "version": version, "parent": parent, "metrics": metrics or {},
        "files": {name: _sha256(tmp / name) for name in sorted([*files, "config.json"])}, **(extra or {}),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, base / version)
    if make_current:
        set_current(root, model, version)
    return base / version


def current_for_catalog(root: str | Path, model: str, fingerprint: str) -> Path | None:
    """CURRENT of `model` if it was made from the catalog with this content fingerprint
    (`catalog_fingerprint` in its config, `onevision.catalog.format.catalog_fingerprint`), else None:
    a catalog rebuilt under the same name (another split, other photos) never reuses its models."""
    if not current_version(root, model):
        return None
    version = resolve(model, root)
    return version if read_version(version)[1].get("catalog_fingerprint") == fingerprint else None


def resolve(path_or_model: str | Path, root: str | Path | None = None) -> Path:
    """A version directory from a path to one, a path to a model dir (its CURRENT), or a model name."""
    p = Path(path_or_model)
    if (p / MANIFEST).is_file():
        return p
    if (p / CURRENT).is_file():
        return p / (p / CURRENT).read_text().strip()
    current = current_version(root, str(path_or_model)) if root is not None else None
    if root is not None and current:
        return Path(root) / str(path_or_model) / current
    raise RegistryError(f"{path_or_model}: not a registry version or model (no {MANIFEST} or {CURRENT})")


def version_name(version_dir: str | Path) -> str:
    """`model/vNNNN` of a version directory: how records and manifests name a version wherever the
    registry lives."""
    p = Path(version_dir)
    return f"{p.parent.name}/{p.name}"


def load_version(version_dir: str | Path) -> tuple[dict, dict]:
    """(manifest, config) of a version after checking every file against its sha256."""
    d = Path(version_dir)
    if not (d / MANIFEST).is_file():
        raise RegistryError(f"{d}: no {MANIFEST}")
    manifest = json.loads((d / MANIFEST).read_text())
    for name, digest in manifest["files"].items():
        if not (d / name).is_file():
            raise RegistryError(f"{d}: {name} is missing")
        if _sha256(d / name) != digest:
            raise RegistryError(f"{d}: {name} does not match its sha256 in the manifest (corrupt or replaced)")
    return manifest, json.loads((d / "config.json").read_text())


def read_version(version_dir: str | Path) -> tuple[dict, dict]:
    """(manifest, config) as written, without hashing the files: for walking a lineage or reading
    a config; whatever loads the weights goes through `load_version`."""
    d = Path(version_dir)
    if not (d / MANIFEST).is_file():
        raise RegistryError(f"{d}: no {MANIFEST}")
    return json.loads((d / MANIFEST).read_text()), json.loads((d / "config.json").read_text())


def resolve_ref(ref: str | Path, from_version: str | Path) -> Path:
    """A version another version's config names (e.g. a generator's tokenizer): the path as
    written if it exists, else the same `<model>/<version>` under `from_version`'s registry
    root, so a registry copied or moved elsewhere still resolves its own references. In a
    node-local copy of a shared registry (`MIRROR`) the checked copy beside it comes first."""
    p = Path(ref)
    root = Path(from_version).parent.parent
    local = root / p.parent.name / p.name
    if (root / MIRROR).is_file() and (local / MANIFEST).is_file():
        return local
    if (p / MANIFEST).is_file():
        return p
    if (local / MANIFEST).is_file():
        return local
    raise RegistryError(f"{ref}: referenced by {from_version} but not found there or in its registry")


ACCEPTED, REJECTED = "accepted", "rejected"


def version_status(manifest: dict) -> str:
    """accepted (may serve) or rejected (kept with its metrics by an eval gate, never served
    unless forced); versions published before gates existed are accepted."""
    return manifest.get("status", ACCEPTED)


def read_manifest(root: str | Path, model: str, version: str) -> dict:
    path = Path(root) / model / version / MANIFEST
    if not path.is_file():
        raise RegistryError(f"{model} has no version {version!r} "
                            f"(versions: {', '.join(versions(root, model)) or 'none'})")
    return json.loads(path.read_text())


def promote(root: str | Path, model: str, version: str, force: bool = False) -> str:
    """Point CURRENT at `version` after checking its files; a rejected version only with `force`."""
    manifest = read_manifest(root, model, version)
    if version_status(manifest) == REJECTED and not force:
        raise RegistryError(f"{model}/{version} was rejected by its eval gate "
                            f"({manifest.get('gate', {}).get('reasons', '')}); "
                            "promote it with force to serve it anyway")
    load_version(Path(root) / model / version)  # its files must still match before it serves
    set_current(root, model, version)
    return version


def rollback(root: str | Path, model: str) -> str:
    """Point CURRENT back at the version the current one was trained from (its parent) when that
    is an accepted version of this model, else at the newest accepted version before it."""
    current = current_version(root, model)
    if current is None:
        raise RegistryError(f"{model} has no CURRENT version to roll back from")
    parent = read_manifest(root, model, current).get("parent")
    accepted = [v for v in versions(root, model) if v < current
                and version_status(read_manifest(root, model, v)) == ACCEPTED]
    target = parent if parent in accepted else (accepted[-1] if accepted else None)
    if target is None:
        raise RegistryError(f"{model}/{current} has no earlier accepted version to roll back to")
    load_version(Path(root) / model / target)  # its files must still match before it serves
    set_current(root, model, target)
    return target


def history(root: str | Path, model: str) -> list[dict]:
    """One row per version, oldest first: status, whether CURRENT, parent and manifest extras."""
    current = current_version(root, model)
    rows = []
    for v in versions(root, model):
        m = read_manifest(root, model, v)
        rows.append({"version": v, "status": version_status(m), "current": v == current, "parent": m.get("parent"),
                     "metrics": m.get("metrics", {}), "stream": m.get("stream"), "gate": m.get("gate"),
                     "created": (Path(root) / model / v / MANIFEST).stat().st_mtime})
    return rows


def lineage(version_dir: str | Path) -> list[Path]:
    """The version and its ancestors through `parent`, newest first."""
    out = [Path(version_dir)]
    parent = read_version(out[0])[0].get("parent")
    while parent:
        out.append(out[-1].parent / parent)
        parent = read_version(out[-1])[0].get("parent")
    return out


def trained_run(version_dir: str | Path) -> Path:
    """The trained run a version derives from: walks back past versions whose config says
    `trained_by` (the distilled model, the streaming DPO job's updates) to the first that does not."""
    for version in lineage(version_dir):
        if not read_version(version)[1].get("trained_by"):
            return version
    raise RegistryError(f"{version_dir} descends from no trained run (every ancestor is derived)")
