#!/usr/bin/env python3
"""Wraps one layer tarball into a single-image OCI layout tarball (used by scripts/images.sh).

The output holds oci-layout, index.json and blobs/sha256/{layer,config,manifest}, and is
what `ctr -n k8s.io images import FILE` (containerd 1.6) and `corten images import FILE`
take. The image reference is stored in the index's manifest descriptor as the annotations
io.containerd.image.name (full name) and org.opencontainers.image.ref.name (the tag).
Everything is deterministic: same layer and options, same bytes.

    oci-image.py --layer layer.tar --name docker.io/library/busybox:1.35 --out busybox.tar \
        --cmd '["sh"]' --env PATH=/usr/bin:/bin [--entrypoint JSON] [--workdir /] \
        [--expose 80/tcp] [--stop-signal SIGQUIT] [--user 10001:10001]
"""
import argparse
import hashlib
import io
import json
import os
import tarfile

EPOCH = "1970-01-01T00:00:00Z"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def tag_of(name):
    """The tag of a reference: docker.io/library/nginx:1.22 -> 1.22 (latest when none)."""
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def add_bytes(tar, path, data):
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar, path):
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    tar.addfile(info)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layer", required=True, help="uncompressed layer tarball")
    p.add_argument("--name", required=True, help="full image reference, e.g. registry.k8s.io/pause:3.10")
    p.add_argument("--out", required=True, help="OCI layout tarball to write")
    p.add_argument("--entrypoint", help="JSON list")
    p.add_argument("--cmd", help="JSON list")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE (repeatable)")
    p.add_argument("--workdir", default="/")
    p.add_argument("--expose", action="append", default=[], help="PORT/PROTO (repeatable)")
    p.add_argument("--stop-signal")
    p.add_argument("--user", help="USER[:GROUP] the container runs as")
    a = p.parse_args()

    layer_digest = sha256_file(a.layer)  # uncompressed: the diff_id is the blob digest
    layer_size = os.path.getsize(a.layer)

    cfg = {"Env": a.env, "WorkingDir": a.workdir}
    if a.entrypoint:
        cfg["Entrypoint"] = json.loads(a.entrypoint)
    if a.cmd:
        cfg["Cmd"] = json.loads(a.cmd)
    if a.expose:
        cfg["ExposedPorts"] = {port: {} for port in a.expose}
    if a.stop_signal:
        cfg["StopSignal"] = a.stop_signal
    if a.user:
        cfg["User"] = a.user
    config = dumps({
        "architecture": "amd64",
        "os": "linux",
        "created": EPOCH,
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": EPOCH, "created_by": "corten scripts/images.sh"}],
    })
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()

    manifest = dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    })
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()

    index = dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": a.name,
                "org.opencontainers.image.ref.name": tag_of(a.name),
            },
        }],
    })

    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        add_dir(tar, "blobs")
        add_dir(tar, "blobs/sha256")
        add_bytes(tar, "blobs/sha256/" + config_digest[7:], config)
        layer_info = tarfile.TarInfo("blobs/sha256/" + layer_digest[7:])
        layer_info.size, layer_info.mode, layer_info.mtime = layer_size, 0o644, 0
        with open(a.layer, "rb") as f:
            tar.addfile(layer_info, f)
        add_bytes(tar, "blobs/sha256/" + manifest_digest[7:], manifest)
        add_bytes(tar, "index.json", index)
        add_bytes(tar, "oci-layout", dumps({"imageLayoutVersion": "1.0.0"}))
    os.replace(tmp, a.out)
    print(manifest_digest)


if __name__ == "__main__":
    main()
