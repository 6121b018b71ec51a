"""nvidia-pytriton's ``tritonserver`` on this machine: a backend directory it can use, its command line.

PyPI's ``nvidia-pytriton`` ships a CPU ``tritonserver`` with the Python backend, but keeps the
backend's stub (``triton_python_backend_stub``, one build per Python version) in
``python_backend_stubs/<version>/``, where the server does not look: it looks only in
``<backend directory>/python/``, never in a model's folder. So a server started with pytriton's own
``backends`` folder cannot load any Python model. This writes ``DIR/python/`` = pytriton's
``libtriton_python.so`` and ``triton_python_backend_utils.py`` plus the stub for this Python; start
the server with ``--backend-directory DIR``. A Triton container needs none of this: its
``/opt/tritonserver/backends/python`` has a stub for the container's Python.

The server and the stub find pytriton's bundled libraries (``nvidia_pytriton.libs``) through
``LD_LIBRARY_PATH`` only once the stub is copied out of pytriton's tree, so the server must be
started with it: :func:`server_environment`. :func:`server_command` listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from foldkit.errors import FoldkitError
from foldkit.onnxio.files import OutputTransaction, check_outputs, require_input_file

STUB = "triton_python_backend_stub"
BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")


def pytriton_server_dir() -> Path | None:
    """nvidia-pytriton's ``tritonserver`` folder, found without importing pytriton (it wants numpy < 2)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    return folder if (folder / "bin" / "tritonserver").is_file() else None


def pytriton_stub(server_dir: Path) -> Path:
    """The stub built for the running Python's version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / STUB
    if not stub.is_file():
        raise FoldkitError(f"{server_dir}: nvidia-pytriton has no Python backend stub for Python {version}")
    return stub


def write_backend_directory(folder: str | os.PathLike, *, stub: str | os.PathLike | None = None) -> Path:
    """Write ``folder/python/`` from nvidia-pytriton (``stub`` overrides its stub); returns ``folder``."""
    server_dir = pytriton_server_dir()
    if server_dir is None:
        raise FoldkitError("nvidia-pytriton is not installed (pip install --no-deps nvidia-pytriton): "
                           "it provides the Python backend this folder is made from")
    sources = [server_dir / "backends" / "python" / name for name in BACKEND_FILES]
    sources.append(require_input_file(stub, "Python backend stub") if stub is not None else pytriton_stub(server_dir))
    target = Path(folder) / "python"
    targets = [target / name for name in (*BACKEND_FILES, STUB)]
    if target.exists():
        check_outputs(targets, sources)
    with OutputTransaction() as staged:
        staged.make_folder(target)
        for source, destination in zip(sources, targets, strict=True):
            shutil.copyfile(require_input_file(source, "backend file"), staged.path(destination))
    stub_path = target / STUB
    mode = stub_path.stat().st_mode
    stub_path.chmod(mode | (mode & 0o444) >> 2)  # executable for whoever may read it, as the umask allows
    return Path(folder)


def pytriton_libraries(server_dir: Path) -> Path:
    """The shared libraries nvidia-pytriton bundles (libcudart for the stub among them)."""
    return server_dir.parent.parent / "nvidia_pytriton.libs"


def server_environment(server_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with pytriton's libraries on ``LD_LIBRARY_PATH``."""
    env = dict(os.environ if base is None else base)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(pytriton_libraries(server_dir)),
                                                           env.get("LD_LIBRARY_PATH")]))
    return env


def server_command(server_dir: Path, repo: Path, backends: Path, *, http_port: int, grpc_port: int,
                   explicit: bool = False) -> list[str]:
    """The tritonserver command line: 127.0.0.1 only, no metrics, models that fail to load reported, not fatal.

    ``explicit``: start with no model loaded; load each through the repository API.
    """
    command = [str(server_dir / "bin" / "tritonserver"), f"--model-repository={repo}",
               f"--backend-directory={backends}", "--http-address=127.0.0.1", f"--http-port={http_port}",
               "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}", "--allow-metrics=false",
               "--exit-on-error=false", "--strict-readiness=false", "--exit-timeout-secs=5"]
    return command + (["--model-control-mode=explicit"] if explicit else [])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalServer:
    """pytriton's tritonserver on free 127.0.0.1 ports, for tests and trials: started, waited for, stopped.

    ``with LocalServer(repo, backends, log=path) as server:`` gives ``server.url`` (HTTP,
    ``host:port``) once the server answers ``/v2/health/live``, or raises FoldkitError with the end
    of its log after ``start_timeout`` seconds. Leaving stops the server and its stubs (its process
    group): SIGTERM, then SIGKILL if it lingers.
    """

    def __init__(self, repo: Path, backends: Path, *, log: Path, explicit: bool = True,
                 start_timeout: float = 90.0) -> None:
        server_dir = pytriton_server_dir()
        if server_dir is None:
            raise FoldkitError("nvidia-pytriton is not installed (pip install --no-deps nvidia-pytriton)")
        self.http_port, grpc_port = free_port(), free_port()
        self.url = f"127.0.0.1:{self.http_port}"
        self.log, self.start_timeout = log, start_timeout
        self.command = server_command(server_dir, repo, backends, http_port=self.http_port, grpc_port=grpc_port,
                                      explicit=explicit)
        self.env = server_environment(server_dir)
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> LocalServer:
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=sink, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while not self._live():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-1500:].replace("\n", " | ")
                raise FoldkitError(f"tritonserver did not start within {self.start_timeout:g} s: {tail}")
            time.sleep(0.2)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _live(self) -> bool:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://{self.url}/v2/health/live", timeout=2) as answer:
                return bool(answer.status == 200)
        return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
