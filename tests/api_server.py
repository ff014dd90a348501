"""Test helper: a REAL `toonbooth serve` process on 127.0.0.1 (free port) over a tiny models folder.

    with running_server(models_dir, data_dir, env={...}) as server:
        httpx.get(server.url + "/healthz")

The process is started with `python -m toonbooth.cli.main ... serve`, waited for until `/healthz`
answers, and stopped (SIGTERM, then SIGKILL) on exit; `server.kill()` SIGKILLs it on purpose.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen
    log_path: Path
    data_dir: Path

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOONBOOTH_")}
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
        GRADIO_ANALYTICS_ENABLED="False", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )  # fmt: skip
    env.update(extra or {})
    return env


def cli_command(models_dir: Path, data_dir: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "toonbooth.cli.main", "--models-dir", str(models_dir), "--data-dir", str(data_dir),
        "--device", "cpu", *args,
    ]  # fmt: skip


def start_server(
    models_dir: Path,
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    extra_args: tuple[str, ...] = (),
) -> Server:
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"server-{port}-{int(time.time() * 1000)}.log"
    cmd = cli_command(
        models_dir,
        data_dir,
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra_args,
    )
    home = data_dir.parent / "home"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            env=server_env({"TOONBOOTH_HOME": str(home), **(env or {})}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", port, proc, log_path, data_dir)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                return server
        time.sleep(0.25)
    stop_server(server)
    raise RuntimeError(f"server did not answer /healthz within {START_TIMEOUT_S} s:\n{server.log_tail()}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


@contextlib.contextmanager
def running_server(models_dir: Path, data_dir: Path, **kwargs) -> Iterator[Server]:
    server = start_server(models_dir, data_dir, **kwargs)
    try:
        yield server
    finally:
        stop_server(server)


def add_user(data_dir: Path, name: str) -> str:
    """Create a user in the server's database directly (the same code `toonbooth users add` runs)."""
    from toonbooth.runtime.users import Users

    users = Users(data_dir / "toonbooth.db")
    try:
        return users.add_user(name)
    finally:
        users.close()


def png_bytes(size: tuple[int, int] = (64, 64), source: Path | None = None, seed: int = 0) -> bytes:
    """A PNG of `size`: the sample photo resized, or seeded noise."""
    import numpy as np
    from PIL import Image

    if source is not None:
        img = Image.open(source).convert("RGB").resize(size)
    else:
        rng = np.random.default_rng(seed)
        img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def blob_count(data_dir: Path) -> int:
    """Files under the data folder's blob store (uploads and results)."""
    root = data_dir / "blobs"
    return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def sse_events(response: httpx.Response) -> Iterator[tuple[int, str, str]]:
    """(id, event, data) of a Server-Sent Events stream."""
    ident, name, data = None, None, []
    for line in response.iter_lines():
        if line == "":
            if name is not None:
                yield int(ident) if ident is not None else -1, name, "\n".join(data)
            ident, name, data = None, None, []
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            ident = value
        elif field == "event":
            name = value
        elif field == "data":
            data.append(value)
