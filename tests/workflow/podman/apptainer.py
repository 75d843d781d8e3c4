"""`apptainer` for the tests, over `podman run`: the three calls Snakemake's ``--sdm apptainer``
makes, each job run for real in an image of podman's store.

    apptainer --version
    apptainer [--quiet --silent] pull --name <file>.simg docker://<image>
    apptainer [--quiet --silent] exec --home H [--bind SRC[:DST[:ro]][,...]] [--pwd P]
              [--env K=V] <file>.simg <shell> -c <command>

``pull`` pulls nothing (no registry is reachable from the test machines): the image must be
in the store already, and the .simg file names its id. ``exec`` runs ``podman run --rm`` with
Apptainer's behaviour where the jobs could tell the difference: H mounted at itself as the home
folder (HOME=H), each bind mounted, the working directory kept (or --pwd), the caller's user
and group, the host's environment passed in except PATH, HOME and the Python and library
search paths (the Apptainer recipes unset PYTHONPATH and PYTHONHOME themselves), and
APPTAINERENV_/SINGULARITYENV_ variables set without their prefix. Nothing else of the host is
mounted (not even /tmp, which Apptainer's default configuration would), so a bind the
workflow forgets fails the job, and there is no network. ``--nv`` is refused: no GPU here.

Configured through the environment: APPTAINER_PODMAN_ENGINE, the podman command and its
global options as a JSON list (default ["podman"]); APPTAINER_PODMAN_LOG, a file that gets one
JSON line per call (arguments, working directory, and for exec the podman command).
Standard library only; run with any Python 3.11.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

VERSION = "apptainer version 1.3.6"
#: Options of `exec` that take a value, and those that do not (all that Snakemake gives).
VALUED = {"--home", "--bind", "-B", "--pwd", "--env"}
FLAGS = {"--nv", "--quiet", "--silent", "-q", "-s"}
#: Host variables that do not enter the container (Apptainer sets its own PATH and HOME; the
#: others would point Python or the loader at the host's files).
NOT_PASSED = {"PATH", "HOME", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "LD_LIBRARY_PATH",
              "LD_PRELOAD", "VIRTUAL_ENV", "TMPDIR", "PWD", "OLDPWD", "SHLVL", "_",
              "CONTAINERS_CONF", "APPTAINER_PODMAN_ENGINE", "APPTAINER_PODMAN_LOG"}  # fmt: skip
IMAGE_PREFIX = "podman-image:"


def _fail(message: str) -> int:
    print(f"apptainer (podman): {message}", file=sys.stderr)
    return 255


def _engine() -> list[str]:
    return json.loads(os.environ.get("APPTAINER_PODMAN_ENGINE", '["podman"]'))


def _log(record: dict) -> None:
    path = os.environ.get("APPTAINER_PODMAN_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def pull(args: list[str]) -> int:
    if len(args) != 3 or args[0] != "--name" or not args[2].startswith("docker://"):
        return _fail(f"pull takes --name FILE docker://IMAGE, not {args}")
    name, image = args[1], args[2].removeprefix("docker://")
    proc = subprocess.run([*_engine(), "image", "inspect", "--format", "{{.Id}}", image],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        return _fail(f"{image} is not in podman's store (nothing is pulled from a registry "
                     f"here): {proc.stderr.strip()}")  # fmt: skip
    Path(name).write_text(f"{IMAGE_PREFIX}{proc.stdout.strip()}\n{image}\n")
    return 0


def _mounts(binds: list[str], home: str) -> list[str]:
    """``--volume`` options: the home folder, then each bind, one per destination."""
    volumes: dict[str, str] = {home: f"{home}:{home}"}
    for spec in binds:
        for one in filter(None, spec.split(",")):
            parts = one.split(":")
            source, dest = parts[0], parts[1] if len(parts) > 1 else parts[0]
            mode = parts[2] if len(parts) > 2 else "rw"
            if mode not in ("ro", "rw"):
                raise ValueError(f"bind option {mode!r} of {one!r}")
            if not os.path.exists(source):
                raise ValueError(f"bind source {source} does not exist")
            volumes.setdefault(os.path.normpath(dest), f"{source}:{dest}:{mode}")
    return [option for volume in volumes.values() for option in ("--volume", volume)]


def _environment(given: list[str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in NOT_PASSED}
    for key, value in os.environ.items():
        for prefix in ("APPTAINERENV_", "SINGULARITYENV_"):
            if key.startswith(prefix):
                env.pop(key, None)
                env[key.removeprefix(prefix)] = value
    for item in given:
        key, _, value = item.partition("=")
        env[key] = value
    return [option for k, v in sorted(env.items()) for option in ("--env", f"{k}={v}")]


def exec_(args: list[str]) -> int:
    options: dict[str, list[str]] = {}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in VALUED:
            options.setdefault(args[i], []).append(args[i + 1])
            i += 2
        elif args[i] in FLAGS:
            options.setdefault(args[i], []).append("")
            i += 1
        else:
            return _fail(f"exec option {args[i]} is not supported")
    if "--nv" in options:
        return _fail("--nv: there is no GPU here")
    if len(options.get("--home", [])) != 1 or len(args) < i + 2:
        return _fail(f"exec needs --home H, an image and a command: {args}")
    home = options["--home"][0]
    image_file, command = Path(args[i]), args[i + 1 :]
    if not image_file.is_file() or not image_file.read_text().startswith(IMAGE_PREFIX):
        return _fail(f"{image_file} is not an image this wrapper pulled")
    image = image_file.read_text().splitlines()[0].removeprefix(IMAGE_PREFIX)
    try:
        mounts = _mounts(options.get("--bind", []) + options.get("-B", []), home)
    except ValueError as error:
        return _fail(str(error))
    workdir = options.get("--pwd", [os.getcwd()])[-1]
    run = [*_engine(), "run", "--rm", "--network", "none", "--user",
           f"{os.getuid()}:{os.getgid()}", *mounts, "--env", f"HOME={home}",
           *_environment(options.get("--env", [])), "--workdir", workdir, image,
           *command]  # fmt: skip
    _log({"args": ["exec", *args], "cwd": os.getcwd(), "podman": run})
    return subprocess.call(run)


def main(argv: list[str]) -> int:
    if argv == ["--version"]:
        print(VERSION)
        return 0
    while argv and argv[0] in ("--quiet", "--silent", "-q", "-s"):
        argv = argv[1:]
    if argv[:1] == ["pull"]:
        _log({"args": argv, "cwd": os.getcwd()})
        return pull(argv[1:])
    if argv[:1] == ["exec"]:
        return exec_(argv[1:])
    return _fail(f"unsupported call {argv}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
