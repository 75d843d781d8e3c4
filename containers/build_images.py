"""Builds segflow's images from containers/cpu.Dockerfile and gpu.Dockerfile, with podman (or
docker), and says how large each came out and how long it took. `make images` runs it.

    python containers/build_images.py [--kind cpu|gpu ...] [--base IMAGE|debootstrap]
                                      [--engine 'podman ...'] [--mirror URL] [--no-site-pip]

The recipes start from their BASE_IMAGE build argument, by default the public
python:3.11-slim-bookworm that a registry serves. Where no registry can be reached,
``--base debootstrap`` makes an equivalent base first, from Debian's packages alone: a minimal
Debian 12 root file system (``debootstrap --variant=minbase``) from the Debian mirror this
machine's apt uses, imported as an image (``podman import``), then
containers/debian-python.Dockerfile on it (Debian's Python 3.11 in a virtual environment).
debootstrap needs root.

This machine's pip site settings reach the build without entering the recipes (podman only:
``docker build`` cannot mount folders): the CA bundle (``cert``) and the local wheel folders
(``find-links``) that ``pip config list`` shows are bind-mounted read-only into the build and
named to pip by the PIP_CERT and PIP_FIND_LINKS build arguments, and an ``index-url`` on a
server by PIP_INDEX_URL.

Standard library only; the tests (tests/workflow/test_container_images.py) use its functions.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "containers"
KINDS = ("cpu", "gpu")
#: The base the recipes name by default, which users pull from Docker Hub.
PUBLIC_BASE = "python:3.11-slim-bookworm"
#: Tags of the base made with --base debootstrap: Debian alone, and Debian with Python.
LOCAL_DEBIAN = "localhost/segflow-debian:bookworm"
LOCAL_BASE = "localhost/segflow-python:3.11-bookworm"
SUITE = "bookworm"
#: Where the host's CA bundle and wheel folders appear inside a build. podman leaves the
#: mount points in the image, empty: all of them in this one folder.
MOUNTS_IN_BUILD = "/run/segflow-build"
CERT_IN_BUILD = f"{MOUNTS_IN_BUILD}/pip-cert.pem"

Log = Callable[[str], None]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def version() -> str:
    """segflow's version, as pyproject.toml states it (the images' tags carry it)."""
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["version"]


def default_tag(kind: str) -> str:
    """The tag the workflow's config pulls by default (workflow/schemas/config.schema.yaml)."""
    return f"ghcr.io/segflow/segflow-{kind}:{version()}"


# --- pip's site settings ----------------------------------------------------------------------


def pip_site_settings(python: str = sys.executable) -> dict[str, str]:
    """``cert``, ``find-links`` and ``index-url`` from ``python -m pip config list`` (an
    environment variable over a command's own section over ``[global]``, as pip reads them);
    absent ones left out."""
    proc = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True,
                          text=True)  # fmt: skip
    found: dict[str, tuple[int, str]] = {}
    for line in proc.stdout.splitlines():
        key, sep, raw = line.partition("=")
        section, _, name = key.rpartition(".")
        if not sep or name not in ("cert", "find-links", "index-url"):
            continue
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw.strip("'\"")
        rank = 2 if section == ":env:" else 0 if section == "global" else 1
        if name not in found or rank >= found[name][0]:
            found[name] = (rank, str(value))
    return {name: value for name, (_, value) in found.items()}


def site_build_options(settings: dict[str, str]) -> list[str]:
    """podman build options that hand pip's site settings to the build: each local file or
    folder bind-mounted read-only, named by a build argument. Remote find-links and an index
    on a server pass as they are; a cert or folder that does not exist, and an index in a
    local folder, are left out."""
    options: list[str] = []
    cert = settings.get("cert")
    if cert and Path(cert).is_file():
        options += ["--volume", f"{Path(cert).resolve()}:{CERT_IN_BUILD}:ro",
                    "--build-arg", f"PIP_CERT={CERT_IN_BUILD}"]  # fmt: skip
    links = []
    for link in settings.get("find-links", "").split():
        local = link.removeprefix("file://")
        if re.match(r"^[a-z][a-z0-9+.-]*://", local):
            links.append(link)
        elif Path(local).is_dir():
            inside = f"{MOUNTS_IN_BUILD}/find-links-{len(links)}"
            options += ["--volume", f"{Path(local).resolve()}:{inside}:ro"]
            links.append(inside)
    if links:
        options += ["--build-arg", f"PIP_FIND_LINKS={' '.join(links)}"]
    index = settings.get("index-url", "")
    if re.match(r"^https?://", index):
        options += ["--build-arg", f"PIP_INDEX_URL={index}"]
    return options


# --- a base image of one's own ----------------------------------------------------------------


def debian_mirror(apt: Path = Path("/etc/apt")) -> str | None:
    """The first mirror apt's sources name for Debian 12 (``bookworm`` itself, not its
    security or update suites), from sources.list and the deb822 *.sources files."""
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list")),
             *sorted((apt / "sources.list.d").glob("*.sources"))]  # fmt: skip
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([\w-]+):\s*(.*)$", stanza, re.M))
                types, suites = fields.get("Types", "").split(), fields.get("Suites", "").split()
                if "deb" in types and SUITE in suites and fields.get("Enabled", "yes") != "no":
                    return fields.get("URIs", "").split()[0]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1]
    return None


def image_exists(engine: Sequence[str], tag: str) -> bool:
    return subprocess.run([*engine, "image", "exists", tag], capture_output=True).returncode == 0


def _run(command: Sequence[str], log: Log, **kwargs) -> None:
    log("$ " + shlex.join(map(str, command)))
    proc = subprocess.run(list(map(str, command)), capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"`{shlex.join(map(str, command))}` failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")  # fmt: skip


def make_local_base(engine: Sequence[str], mirror: str, *, workdir: Path | None = None,
                    log: Log = _say) -> str:  # fmt: skip
    """Make (once: an existing one is kept) LOCAL_BASE from the Debian mirror; its tag."""
    if image_exists(engine, LOCAL_BASE):
        return LOCAL_BASE
    with tempfile.TemporaryDirectory(dir=workdir, prefix="debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        if not image_exists(engine, LOCAL_DEBIAN):
            debootstrap = shutil.which("debootstrap") or shutil.which(
                "debootstrap", path="/usr/sbin:/sbin") or "debootstrap"  # fmt: skip
            _run([debootstrap, "--variant=minbase", SUITE, rootfs, mirror], log)
            # The downloaded packages and lists are not part of a base image.
            for leftover in [*rootfs.glob("var/cache/apt/archives/*.deb"),
                             *rootfs.glob("var/lib/apt/lists/*_*")]:  # fmt: skip
                leftover.unlink()
            log(f"$ tar -C {rootfs} -c . | {shlex.join(engine)} import - {LOCAL_DEBIAN}")
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            try:
                _run([*engine, "import", "-", LOCAL_DEBIAN], log, stdin=tar.stdout)
            finally:
                tar.stdout.close()
                tar.wait()
            shutil.rmtree(rootfs, ignore_errors=True)
        context = Path(tmp) / "context"  # the recipe copies nothing
        context.mkdir()
        _run([*engine, "build", "--file", CONTAINERS / "debian-python.Dockerfile",
              "--build-arg", f"DEBIAN_IMAGE={LOCAL_DEBIAN}", "--tag", LOCAL_BASE, context],
             log)  # fmt: skip
    return LOCAL_BASE


# --- the images ---------------------------------------------------------------------------


def build_image(engine: Sequence[str], kind: str, tag: str, *, base: str | None = None,
                options: Sequence[str] = (), log: Log = _say) -> float:  # fmt: skip
    """Build containers/<kind>.Dockerfile as ``tag`` from the repository; seconds it took."""
    command = [*engine, "build", "--file", CONTAINERS / f"{kind}.Dockerfile", "--tag", tag]
    if base:
        command += ["--build-arg", f"BASE_IMAGE={base}"]
    start = time.monotonic()
    _run([*command, *options, REPO], log)
    return time.monotonic() - start


def image_size(engine: Sequence[str], tag: str) -> int:
    """Bytes of the image, unpacked (all layers, the base's included)."""
    out = subprocess.run([*engine, "image", "inspect", "--format", "{{.Size}}", tag],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return int(out.split()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", action="append", choices=KINDS,
                        help="the image(s) to build (default: both)")  # fmt: skip
    parser.add_argument("--base", default=PUBLIC_BASE,
                        help=f"BASE_IMAGE of the recipes (default {PUBLIC_BASE}); 'debootstrap' "
                        "makes one from the Debian mirror first")  # fmt: skip
    parser.add_argument(
        "--engine",
        default="podman",
        help="the build command and its global options (default podman)",
    )
    parser.add_argument("--mirror", help="Debian mirror for --base debootstrap (default: apt's)")
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KIND=TAG",
        help="a tag other than the config's default, e.g. cpu=segflow-cpu:dev",
    )
    parser.add_argument(
        "--no-site-pip",
        action="store_true",
        help="do not hand this machine's pip cert and find-links to the build",
    )
    args = parser.parse_args(argv)
    engine = shlex.split(args.engine)
    tags = dict(t.split("=", 1) for t in args.tag)
    options: list[str] = []
    if not args.no_site_pip:
        if Path(engine[0]).name == "docker":
            _say("docker build cannot mount pip's site settings: building without them")
        else:
            options = site_build_options(pip_site_settings())
    base = args.base
    if base == "debootstrap":
        mirror = args.mirror or debian_mirror()
        if mirror is None:
            parser.error("no Debian 12 mirror in /etc/apt: give --mirror")
        start = time.monotonic()
        base = make_local_base(engine, mirror)
        _say(f"{base}: {image_size(engine, base) / 1e6:.0f} MB, "
             f"{time.monotonic() - start:.0f} s")  # fmt: skip
    for kind in args.kind or KINDS:
        tag = tags.get(kind, default_tag(kind))
        seconds = build_image(engine, kind, tag, base=base, options=options)
        _say(f"{tag}: {image_size(engine, tag) / 1e9:.2f} GB, built in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
