"""The OCI image layout on disk: read one (what skopeo writes), and write one (the stand-in's image and the
self-tests' images are assembled this way, from files, without a Docker engine).

A layout is a directory with `oci-layout`, `index.json` and `blobs/sha256/<hex>`. The index names a
manifest (or, for a multi-platform image, an index of manifests); the manifest names the config blob and
the layer blobs in the order they are applied. See the OCI image spec, image-layout.md and manifest.md.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class LayoutError(Exception):
    """The directory is not a readable OCI layout; the message says what is wrong with it."""


@dataclass(frozen=True)
class Layer:
    digest: str
    media_type: str
    path: Path
    created_by: str = ""


@dataclass(frozen=True)
class Image:
    """One platform's image in a layout: its manifest, its config, its layers in order."""

    digest: str  # the manifest's digest: what a registry and ECR call the image
    manifest: dict[str, Any]
    config: dict[str, Any]
    layers: tuple[Layer, ...]


DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
JSON_CAP = 8 << 20  # an index, a manifest or a config is a few KiB; a larger one is not read


def _hex(digest: Any) -> str:
    """The hex part of a well-formed digest; anything else is refused before a path is made of it."""
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise LayoutError(f"{str(digest)[:100]!r} is not a sha256 digest (sha256: and 64 hex digits)")
    return digest.split(":", 1)[1]


def _blob(root: Path, digest: str) -> Path:
    path = root / "blobs" / "sha256" / _hex(digest)
    if not path.is_file():
        raise LayoutError(f"{root} lacks blob {digest}")
    return path


def _json(path: Path, digest: str | None = None) -> dict[str, Any]:
    """A JSON object from `path`; with `digest`, only if the bytes are that blob's."""
    try:
        if path.stat().st_size > JSON_CAP:
            raise LayoutError(f"{path} is over {JSON_CAP >> 20} MiB, too large for an image's JSON")
        raw = path.read_bytes()
    except OSError as exc:
        raise LayoutError(f"{path} cannot be read: {exc}") from None
    if digest is not None and "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
        raise LayoutError(f"blob {digest} does not match its digest: it was changed")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise LayoutError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise LayoutError(f"{path} is not a JSON object")
    return data


def _image(root: Path, digest: str, manifest: dict[str, Any], blob: Callable[[str], Path]) -> Image:
    try:
        config_digest = manifest["config"]["digest"]
        config = _json(blob(config_digest), config_digest)
        history = [h for h in config.get("history", []) if not h.get("empty_layer")]
        layers = tuple(Layer(d["digest"], d.get("mediaType", ""), blob(d["digest"]),
                             history[i].get("created_by", "") if i < len(history) else "")
                       for i, d in enumerate(manifest.get("layers", [])))
    except (KeyError, TypeError, AttributeError) as exc:
        raise LayoutError(f"the manifest {digest} in {root} is not an image manifest (schema 2 or OCI): "
                          f"no {exc}") from None
    return Image(digest, manifest, config, layers)


def read_layout(root: Path, platform: tuple[str, str] = ("linux", "amd64"), tag: str | None = None) -> Image:
    """The image of an OCI layout: the one it holds, or the one tagged `tag`; its `platform` image when
    that is a multi-platform index."""
    if not (root / "oci-layout").is_file() or not (root / "index.json").is_file():
        raise LayoutError(f"{root} is not an OCI image layout (no oci-layout or index.json)")
    descriptors = _json(root / "index.json").get("manifests") or []
    if not isinstance(descriptors, list) or not all(isinstance(d, dict) for d in descriptors):
        raise LayoutError(f"{root}/index.json's manifests is not a list of descriptors")
    if tag is not None:
        descriptors = [d for d in descriptors if (d.get("annotations") or {}).get(REF_ANNOTATION) == tag]
        if not descriptors:
            raise LayoutError(f"{root} holds no image tagged {tag!r}")
    if not descriptors:
        raise LayoutError(f"{root}/index.json names no image")
    if len(descriptors) > 1:
        tags = [(d.get("annotations") or {}).get(REF_ANNOTATION, d.get("digest")) for d in descriptors]
        raise LayoutError(f"{root} holds {len(descriptors)} images ({', '.join(map(str, tags))}); name one as "
                          f"oci:{root}:TAG")
    descriptor = descriptors[0]
    content = _json(_blob(root, descriptor.get("digest")), descriptor.get("digest"))
    while "manifests" in content:
        nested = content["manifests"]
        if not isinstance(nested, list) or not all(isinstance(d, dict) and isinstance(d.get("platform", {}), dict)
                                                   for d in nested):
            raise LayoutError(f"the image index in {root} is not a list of descriptors")
        matching = [d for d in nested
                    if (d.get("platform", {}).get("os"), d.get("platform", {}).get("architecture")) == platform]
        if not matching:
            raise LayoutError(f"the image index in {root} has no {platform[0]}/{platform[1]} image")
        descriptor = matching[0]
        content = _json(_blob(root, descriptor.get("digest")), descriptor.get("digest"))
    return _image(root, descriptor["digest"], content, lambda d: _blob(root, d))


def read_dir(root: Path) -> Image:
    """The image `skopeo copy ... dir:ROOT` wrote: manifest.json and its blobs as they were in the source,
    not converted. (Converting a Docker image to OCI drops the fields OCI's config lacks, HEALTHCHECK
    among them, and IMG-05 judges that field.)"""
    path = root / "manifest.json"
    if not path.is_file():
        raise LayoutError(f"{root} holds no manifest.json")

    def blob(digest: str) -> Path:
        found = root / _hex(digest)
        if not found.is_file():
            raise LayoutError(f"{root} lacks blob {digest}")
        return found

    manifest = _json(path)
    return _image(root, "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest(), manifest, blob)


# -- writing ------------------------------------------------------------------------------------------------

@dataclass
class LayerSpec:
    """What one layer adds, changes or deletes, as the tests and the stand-in describe it."""

    files: dict[str, bytes | str] = field(default_factory=dict)  # path -> content
    modes: dict[str, int] = field(default_factory=dict)  # path -> mode, for files and directories
    symlinks: dict[str, str] = field(default_factory=dict)  # path -> target
    hardlinks: dict[str, str] = field(default_factory=dict)  # path -> the path of the file it links
    dirs: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()  # whiteouts: the path is gone from this layer on
    opaque: tuple[str, ...] = ()  # directories whose lower-layer content this layer hides
    created_by: str = ""
    parents: bool = True  # add the parent directories of every path (a runtime-built layer has them)


def layer_tar(spec: LayerSpec) -> bytes:
    """The layer's uncompressed tar, deterministic (fixed times and owners) so equal specs give equal digests."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(info: tarfile.TarInfo, data: bytes | None = None) -> None:
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        paths = [*spec.files, *spec.symlinks, *spec.hardlinks, *spec.deleted]
        parents = {str(Path(p).parent) for p in paths} if spec.parents else set()
        opaque_dirs = spec.opaque if spec.parents else ()
        for d in sorted({*spec.dirs, *opaque_dirs, *(p for p in parents if p not in (".", "/"))}):
            info = tarfile.TarInfo(d.strip("/"))
            info.type, info.mode = tarfile.DIRTYPE, spec.modes.get(d, 0o755)
            add(info)
        for path, content in sorted(spec.files.items()):
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode = len(data), spec.modes.get(path, 0o644)
            add(info, data)
        for path, target in sorted(spec.symlinks.items()):
            info = tarfile.TarInfo(path.strip("/"))
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            add(info)
        for path, target in sorted(spec.hardlinks.items()):
            info = tarfile.TarInfo(path.strip("/"))
            info.type, info.linkname = tarfile.LNKTYPE, target.strip("/")
            add(info)
        # Whiteouts last: a runtime must not let them hide what this same layer adds (unpack.py).
        for d in spec.opaque:
            add(tarfile.TarInfo(f"{d.strip('/')}/{OPAQUE}"), b"")
        for path in spec.deleted:
            p = Path(path.strip("/"))
            add(tarfile.TarInfo(str(p.parent / f"{WHITEOUT}{p.name}")), b"")
    return out.getvalue()


def _put(root: Path, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = root / "blobs" / "sha256" / digest.split(":")[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def _image_config(diff_ids: list[str], layers: list[LayerSpec | bytes], config: dict[str, Any],
                  architecture: str) -> bytes:
    return json.dumps({
        "architecture": architecture, "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": (spec.created_by if isinstance(spec, LayerSpec) else "") or f"layer {i + 1}"}
                    for i, spec in enumerate(layers)],
    }).encode()


def write_layout(root: Path, layers: list[LayerSpec | bytes], config: dict[str, Any], tag: str = "latest",
                 architecture: str = "amd64") -> Image:
    """A one-image OCI layout at `root`: `config` is the image config's `config` object (User, Env,
    ExposedPorts, Healthcheck, WorkingDir, Cmd ...). A layer is a LayerSpec, or the bytes of an uncompressed
    tar made some other way (the tests' crafted layers)."""
    root.mkdir(parents=True, exist_ok=True)
    diff_ids, descriptors = [], []
    for spec in layers:
        raw = spec if isinstance(spec, bytes) else layer_tar(spec)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        descriptors.append({"mediaType": LAYER_GZIP, **_put(root, gzip.compress(raw, mtime=0))})
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                "config": {"mediaType": CONFIG, **_put(root, _image_config(diff_ids, layers, config, architecture))},
                "layers": descriptors}
    manifest_descriptor = {"mediaType": MANIFEST, **_put(root, json.dumps(manifest).encode()),
                           "annotations": {REF_ANNOTATION: tag}}
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_descriptor]}))
    return read_layout(root, ("linux", architecture))


def write_docker_archive(path: Path, layers: list[LayerSpec], config: dict[str, Any], tag: str = "dougust-be:latest",
                         architecture: str = "amd64") -> Path:
    """What `docker save -o path tag` writes for such an image: manifest.json, the config, a tar per layer."""
    raws = [layer_tar(spec) for spec in layers]
    diff_ids = ["sha256:" + hashlib.sha256(raw).hexdigest() for raw in raws]
    config_bytes = _image_config(diff_ids, layers, config, architecture)
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    members = {config_name: config_bytes}
    members.update({f"{d.split(':')[1]}/layer.tar": raw for d, raw in zip(diff_ids, raws)})
    members["manifest.json"] = json.dumps([{"Config": config_name, "RepoTags": [tag],
                                            "Layers": [f"{d.split(':')[1]}/layer.tar" for d in diff_ids]}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
