"""Podman for the container and Kubernetes tests (`tests/test_container.py`, `tests/test_deploy.py`).

These machines have no registry and no Docker daemon (see the recipe the project was given): podman
runs with the `runc` runtime and a `containers.conf` without default ulimits, on the host network;
the base image is Debian bookworm made with mmdebstrap; `pip install` inside a build uses this
machine's pip configuration, found at test time and mounted read-only (never written into the
repository). Images are built once per test session.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
BASE_IMAGE = "localhost/otel-s3-bridge-base:bookworm"
BRIDGE_IMAGE = "localhost/otel-s3-bridge:test"
PIP_BUILD_ARGS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT", "PIP_TRUSTED_HOST",
                  "PIP_DEFAULT_TIMEOUT")


def missing_tools() -> list[str]:
    return [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]


class Podman:
    def __init__(self, work: pathlib.Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        conf = work / "containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n")
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        self.work = work

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["podman", "--runtime", "runc", *args], env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args[:3])} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(["podman", "--runtime", "runc", *args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def image_exists(self, name: str) -> bool:
        return self("image", "exists", name, check=False).returncode == 0

    def base_image(self) -> str:
        """Debian bookworm with python3 and venv, from Debian's packages (kept between sessions)."""
        if not self.image_exists(BASE_IMAGE):
            tar = self.work / "base.tar"
            subprocess.run(["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                            "bookworm", str(tar)], check=True, capture_output=True, timeout=900)
            self("import", str(tar), BASE_IMAGE)
            tar.unlink()
        return BASE_IMAGE

    def build_bridge_image(self) -> str:
        """deploy/Dockerfile on the mmdebstrap base, from the repository root, in Docker format
        (which keeps HEALTHCHECK)."""
        mounts, build_args = pip_configuration()
        self("build", "--format", "docker", "--network", "host", "-f", "deploy/Dockerfile",
             "--build-arg", f"BASE_IMAGE={self.base_image()}", *build_args,
             *[arg for path in mounts for arg in ("-v", f"{path}:{path}:ro")],
             "-t", BRIDGE_IMAGE, str(ROOT), timeout=1200)
        return BRIDGE_IMAGE


def pip_configuration() -> tuple[list[str], list[str]]:
    """What `pip install` inside a build needs from this machine: its pip configuration files and
    every local path they or the PIP_* variables name (wheel directories, file:// indexes, the CA
    bundle, constraints), to be mounted read-only at the same paths; and PIP_* build arguments."""
    debug = subprocess.run([sys.executable, "-m", "pip", "config", "debug"], capture_output=True, text=True).stdout
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    files = [match for match in re.findall(r"^\s+(/\S+), exists: True", debug, re.MULTILINE)]
    values = re.findall(r"='([^']*)'", listed) + [os.environ[name] for name in PIP_BUILD_ARGS if name in os.environ]
    paths = set(files)
    for value in values:
        for token in value.split():
            # A file:// index's pages link to files beside it (…/simple -> …/files): its parent.
            path = os.path.dirname(token[len("file://"):].rstrip("/")) if token.startswith("file://") else token
            if path.startswith("/") and path != "/" and os.path.exists(path):
                paths.add(path)
    mounts = sorted(path for path in paths if not any(path.startswith(other + "/") for other in paths))
    build_args = [arg for name in PIP_BUILD_ARGS if name in os.environ
                  for arg in ("--build-arg", f"{name}={os.environ[name]}")]
    return mounts, build_args
