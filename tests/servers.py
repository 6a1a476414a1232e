"""Real servers for tests and benchmarks: the dev LLM and daphne serving aisaas, each in a subprocess."""

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {process.args}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"server did not listen on {port} within {timeout}s: {process.args}")


@dataclass
class Server:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_devllm(*args: str) -> Server:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llm.devllm", "--port", str(port), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port, process)
    return Server(process, port)


def start_daphne(env: dict[str, str], application: str = "aisaas.asgi:application") -> Server:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), application],
        cwd=ROOT,
        # Never the test process's relaxed async-safety guard: the server runs as in production.
        env={**{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if not os.environ.get("AISAAS_SERVER_LOGS") else None,
    )
    wait_for_port(port, process)
    return Server(process, port)


def database_url(settings_dict: dict) -> str:
    """DATABASE_URL for a Django database settings dict (the test database, for a server subprocess)."""
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    credentials = f"{user}{password}@" if user else ""
    socket_folder = settings_dict.get("OPTIONS", {}).get("host")
    if socket_folder:  # the embedded server listens on a Unix socket only
        return f"postgres://{credentials}/{settings_dict['NAME']}?host={socket_folder}"
    host = f"{settings_dict.get('HOST') or ''}:{settings_dict.get('PORT') or 5432}"
    return f"postgres://{credentials}{host}/{settings_dict['NAME']}"
