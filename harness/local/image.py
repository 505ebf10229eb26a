"""The stand-in's container image, assembled without a Docker engine as an OCI layout: a base layer of
Debian's busybox-static (a shell and the commands testinfra runs: id, cat, test, uname) with the `node`
user (uid 1000, as the official Node.js images have it), and an app layer holding the stand-in's own
application source with a package.json, configured as the plan's Dockerfile would (USER node, EXPOSE 3000,
NODE_ENV=production, a HEALTHCHECK on /api/health).

The same recipe builds the self-tests' images: `base_layer` with another /etc/os-release, more layers,
another config, one violation at a time.

The stand-in's image is honest about its base: its /etc/os-release says busybox, not Alpine (no Alpine
package is reachable here), so IMG-03 is not judged on it.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from harness.image.oci import Image, LayerSpec, write_layout

APP_DIR = "/app"
APP_USER = "node"
APP_UID = 1000
STAND_IN_RELEASE = 'ID=busybox\nNAME="Dougust stand-in (busybox)"\nPRETTY_NAME="Dougust stand-in on busybox"\n'
ALPINE_RELEASE = 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME="Alpine Linux v3.20"\n'


def busybox() -> Path:
    found = shutil.which("busybox")
    if found is None:
        raise RuntimeError("busybox is not installed; install Debian's busybox-static package (make setup does)")
    return Path(found)


def base_layer(os_release: str = STAND_IN_RELEASE) -> LayerSpec:
    binary = busybox()
    applets = subprocess.run([str(binary), "--list"], capture_output=True, text=True, check=True).stdout.split()
    return LayerSpec(
        files={"/bin/busybox": binary.read_bytes(), "/etc/os-release": os_release,
               "/etc/passwd": f"root:x:0:0:root:/root:/bin/sh\n{APP_USER}:x:{APP_UID}:{APP_UID}::/home/node:/bin/sh\n",
               "/etc/group": f"root:x:0:\n{APP_USER}:x:{APP_UID}:\n"},
        modes={"/bin/busybox": 0o755, "/tmp": 0o1777},
        symlinks={f"/bin/{name}": "busybox" for name in applets if name != "busybox"},
        dirs=("/tmp", "/home/node", APP_DIR), created_by="busybox base: /bin/busybox, /etc/passwd (node 1000)")


def package_json(version: str, dev: tuple[str, ...] = ("@nestjs/cli", "jest", "typescript")) -> dict[str, Any]:
    return {"name": "dougust-be", "version": version, "private": True,
            "scripts": {"start": "node dist/main.js"},
            "dependencies": {}, "devDependencies": {name: "*" for name in dev}}


def app_layer(files: dict[str, bytes | str], version: str) -> LayerSpec:
    import json

    return LayerSpec(files={f"{APP_DIR}/package.json": json.dumps(package_json(version), indent=2), **files},
                     created_by=f"COPY app {APP_DIR}")


def app_config(port: int = 3000, health_path: str = "/api/health", **extra: Any) -> dict[str, Any]:
    return {
        "User": APP_USER, "WorkingDir": APP_DIR, "ExposedPorts": {f"{port}/tcp": {}},
        "Env": ["PATH=/bin", "NODE_ENV=production", f"PORT={port}"],
        "Cmd": ["python3", "-m", "harness.local.app"],
        "Healthcheck": {"Test": ["CMD-SHELL", f"wget -q -O- http://127.0.0.1:{port}{health_path} || exit 1"],
                        "Interval": 30_000_000_000, "Timeout": 5_000_000_000, "Retries": 3},
        **extra,
    }


def stand_in_image(dest: Path, version: str, port: int) -> Image:
    """The stand-in's own image: busybox, then the stand-in application's source as the app."""
    source = Path(__file__).with_name("app.py")
    return write_layout(dest, [base_layer(), app_layer({f"{APP_DIR}/app.py": source.read_bytes()}, version)],
                        app_config(port), tag=version)
