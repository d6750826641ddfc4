"""Fresh Jupyter kernels forked from a process that has already imported torch and transformers.

Every notebook starts by importing torch, transformers (and torchvision, which every image
processor loads, and with it ``torch._dynamo``) and ``analysis``: ~10 CPU-seconds per kernel on a
2-core machine, paid again by each of the eight notebooks of ``./run_all.sh``. The runner
(``analysis.runner``) instead starts one **kernel server** per run that imports them once
(``PRELOAD``) and then forks a child per notebook; the child becomes an ordinary ipykernel for
that notebook's connection file, in its own process, with the notebook's working directory and
environment, and exits when the notebook is done. Nothing but the imported modules is shared:
no user namespace, no model, no figure, no torch thread pool (the server runs no torch op), and
Python's and NumPy's global generators are seeded afresh from the OS as in a new process (torch's
default seed is a constant either way). matplotlib is not preloaded: the kernel must
set up its inline backend first, as in JupyterLab.

How the pieces talk (POSIX only, one Unix socket): ``ForkedKernelManager`` is a
``jupyter_client`` kernel manager whose provisioner (``ForkedProvisioner``) sends the server the
kernel's arguments, working directory and environment and its stdin/stdout/stderr (as file
descriptors) instead of starting ``python -m ipykernel_launcher``; the server forks, the child
starts a new session (its own process group, as jupyter_client gives every kernel) and runs
ipykernel; the provisioner gets the child's pid and signals it directly (interrupt, terminate,
kill), and the server reports its exit status. The server kills a kernel whose manager's
connection closes (the runner is gone), and every kernel left when it is stopped; a kernel whose
server is gone exits (ipykernel's parent poller).

The server runs with the kernels' environment (the runner's), less what jupyter_client adds per
kernel (``JPY_PARENT_PID``, read at import by ipykernel, which is therefore not preloaded).

``forked_kernels(kernel)`` starts a server for a registered kernel and stops it on exit; it yields
None, and the caller uses ordinary kernels, where forking is unavailable: not POSIX, or a kernel
spec that does not run ``python [options] -m ipykernel_launcher``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # run by path (the server): the analysis folder is no place to import modules from

import contextlib
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import tempfile
import traceback
from typing import Iterator, Sequence

from jupyter_client import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner

PRELOAD = ("torch", "transformers", "transformers.image_processing_utils", "transformers.processing_utils",
           "transformers.modeling_utils", "analysis", "analysis.models.vlm", "analysis.probes", "analysis.data.shapes",
           "analysis.notebook_utils")
READY = "kernel server ready"
_LAUNCHER = ["-m", "ipykernel_launcher"]


class _ForkedKernel:
    """The ``subprocess.Popen`` face of a kernel forked by the server (what ``LocalProvisioner`` uses)."""

    stdin = stdout = stderr = None

    def __init__(self, server: str, argv: list[str], cwd: str, env: dict[str, str]):
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.connect(server)
        self._buffer = b""
        request = json.dumps({"argv": argv, "cwd": cwd, "env": env}) + "\n"
        with open(os.devnull) as null:
            socket.send_fds(self._socket, [request.encode()], [null.fileno(), 1, 2])
        self.pid = int(self._line())
        self.returncode: int | None = None

    def _line(self) -> bytes:
        while b"\n" not in self._buffer:
            chunk = self._socket.recv(64)
            if not chunk:
                return b""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def _finish(self) -> None:
        line = self._line()  # the exit status; nothing if the server went away (it killed the kernel)
        self.returncode = int(line) if line else -signal.SIGKILL
        self._socket.close()

    def poll(self) -> int | None:
        if self.returncode is None and (b"\n" in self._buffer or select.select([self._socket], [], [], 0)[0]):
            self._finish()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._finish()
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkedProvisioner(LocalProvisioner):
    """``LocalProvisioner`` with the kernel process forked by the kernel server instead of started."""

    async def launch_kernel(self, cmd: list[str], **kwargs) -> dict:
        launcher = _launcher(cmd)
        if launcher is None:
            raise RuntimeError(f"kernel command {cmd} does not run python -m ipykernel_launcher; it cannot be forked")
        cwd = str(kwargs.get("cwd") or os.getcwd())
        env = {**(kwargs.get("env") or os.environ), "JPY_PARENT_PID": str(os.getpid())}  # as jupyter_client's launcher
        self.process = _ForkedKernel(self.parent.server, cmd[launcher + 2:], cwd, env)
        self.pid = self.pgid = self.process.pid  # the kernel leads its own process group
        self.cwd = cwd
        return self.connection_info

    async def send_signal(self, signum: int) -> None:
        # jupyter_client interrupts every kernel before asking it to shut down; papermill shuts a kernel
        # down once its cells are done, and a forked kernel, quick to answer, could take that SIGINT while
        # still closing the last request ("KeyboardInterrupt caught in kernel" in the run's log). The
        # shutdown request follows, then SIGTERM and SIGKILL if the kernel does not exit.
        if signum == signal.SIGINT and getattr(self.parent, "shutting_down", False):
            return
        await super().send_signal(signum)


class ForkedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels are forked by the kernel server at ``server`` (a Unix socket path).

    ``forked_kernels`` yields a subclass with ``server`` set (nbclient takes a class, not an instance).
    """

    server: str = ""

    async def _async_pre_start_kernel(self, **kw):
        if self.provisioner is None:
            self.provisioner = ForkedProvisioner(kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self)
        return await super()._async_pre_start_kernel(**kw)


def _launcher(argv: list[str]) -> int | None:
    """Return the index of ``-m ipykernel_launcher`` in ``argv`` after the interpreter and its options, else None."""
    for i in range(1, len(argv) - 1):
        if argv[i:i + 2] == _LAUNCHER:
            return i
        if not argv[i].startswith("-"):
            return None
    return None


def forkable(argv: list[str]) -> bool:
    """Whether a kernel spec's ``argv`` is ``[python, [options], -m, ipykernel_launcher, ...]`` on a POSIX system."""
    return os.name == "posix" and hasattr(socket, "send_fds") and _launcher(argv) is not None


@contextlib.contextmanager
def forked_kernels(kernel: str, preload: tuple[str, ...] | None = None,
                   timeout: float = 300.0) -> Iterator[type[ForkedKernelManager] | None]:
    """Start a kernel server for the registered kernel ``kernel``; yield its kernel manager class.

    The server runs the kernel's own Python with this process's environment (so ``OMP_NUM_THREADS``
    and the like are the kernels'), this file by path (the ``analysis`` package is imported only
    as ``preload`` says). Yields None, and starts nothing, where the kernel cannot be forked
    (``forkable``) or the server does not come up within ``timeout`` seconds (its error is printed).

    Args:
        kernel: a registered Jupyter kernel name.
        preload: modules the server imports (default: ``PRELOAD``, read when called).
        timeout: seconds to wait for the server's imports.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    argv = KernelSpecManager().get_kernel_spec(kernel).argv
    if not forkable(argv):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="vlm-probes-kernels-") as folder:
        path = str(Path(folder) / "server.sock")
        interpreter = argv[:_launcher(argv)]  # the kernel's Python and its options (e.g. -Xfrozen_modules=off)
        server = subprocess.Popen([*interpreter, str(Path(__file__).resolve()), path, *(preload or PRELOAD)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            line = _first_line(server, timeout)
            if line != READY:
                print(f"warning: the kernel server did not start ({line or 'no output'}); "
                      "starting every kernel afresh", file=sys.stderr)
                yield None
                return
            yield type("ForkedKernelManager", (ForkedKernelManager,), {"server": path})
        finally:
            server.terminate()  # kills any kernel still running (see _stop)
            server.wait()


def _first_line(process: subprocess.Popen, timeout: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    if not selector.select(timeout):
        return f"nothing after {timeout:.0f} s"
    return process.stdout.readline().strip()


# --- the server ------------------------------------------------------------------------------------
def serve(path: str, preload: Sequence[str]) -> None:
    """Import ``preload``, listen on the Unix socket ``path`` and fork a kernel per request, until SIGTERM."""
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # as ipykernel sets it
    for name in preload:
        __import__(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    kernels: dict[int, socket.socket] = {}  # kernel pid -> its manager's connection
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    signal.signal(signal.SIGTERM, lambda *_: _stop(kernels))
    print(READY, flush=True)
    while True:
        for key, _ in selector.select(timeout=0.1):
            if key.fileobj is listener:
                connection, _ = listener.accept()
                pid = _fork(connection, [listener, *kernels.values()])
                if pid is not None:
                    kernels[pid] = connection
                    selector.register(connection, selectors.EVENT_READ, pid)
            elif not key.fileobj.recv(1):  # the kernel's manager is gone: so goes its kernel
                selector.unregister(key.fileobj)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(key.data, signal.SIGKILL)
        while kernels:  # reap finished kernels and tell their managers
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            connection = kernels.pop(pid)
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(connection)
            with contextlib.suppress(OSError):
                connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            connection.close()


def _stop(kernels: dict[int, socket.socket]) -> None:
    """Kill and reap every kernel still running, then exit."""
    for pid in kernels:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    raise SystemExit(0)


def _fork(connection: socket.socket, others: list[socket.socket]) -> int | None:
    """Read one request from ``connection``, fork its kernel and send the child's pid back."""
    message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
    while message and not message.endswith(b"\n"):
        chunk = connection.recv(1 << 20)
        if not chunk:
            break
        message += chunk
    if len(fds) != 3 or not message.endswith(b"\n"):
        for fd in fds:
            os.close(fd)
        connection.close()
        return None
    request = json.loads(message)
    pid = os.fork()
    if pid == 0:
        for other in others:
            other.close()
        _kernel(request, fds, connection)
    for fd in fds:
        os.close(fd)
    connection.sendall(f"{pid}\n".encode())
    return pid


def _kernel(request: dict, fds: list[int], connection: socket.socket) -> None:
    """In the child: become the requested kernel; never returns."""
    code = 1
    try:
        connection.close()
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if "numpy.random" in sys.modules:  # its global generator, unlike Python's, is not reseeded at fork
            sys.modules["numpy.random"].seed()
        from ipykernel import kernelapp

        sys.argv = [sys.executable, *request["argv"]]
        kernelapp.launch_new_instance(argv=request["argv"])
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2:])
