"""The embedded default's servers (aisaas.embedded): started for a command from Python packages, named to it in
DATABASE_URL and REDIS_URL, kept out of each other's way, and stopped when it ends."""

import json
import os
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import redis

from tests.servers import ROOT

PROBE = """
import json, os, psycopg, redis
with psycopg.connect(os.environ["DATABASE_URL"]) as connection:
    version = connection.execute("SHOW server_version_num").fetchone()[0]
    connection.execute("CREATE TABLE IF NOT EXISTS kept (n int)")
    connection.execute("INSERT INTO kept VALUES (1)")
    kept = connection.execute("SELECT count(*) FROM kept").fetchone()[0]
client = redis.Redis.from_url(os.environ["REDIS_URL"])
client.set("probe", "yes")
print(json.dumps({"database_url": os.environ["DATABASE_URL"], "redis_url": os.environ["REDIS_URL"],
                  "version": int(version), "kept": kept, "redis": client.get("probe").decode()}))
"""


def run_beside_servers(folder, *command, **env) -> subprocess.CompletedProcess:
    clean = {name: value for name, value in os.environ.items() if name not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "-m", "aisaas.embedded", "--folder", str(folder), "--", *command],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_command_runs_beside_embedded_servers_that_keep_data_and_stop_afterwards(tmp_path):
    first = run_beside_servers(tmp_path, sys.executable, "-c", PROBE)
    assert first.returncode == 0, first.stderr
    seen = json.loads(first.stdout)

    assert seen["version"] >= 160000 and seen["redis"] == "yes" and seen["kept"] == 1
    socket_folder = parse_qs(urlsplit(seen["database_url"]).query)["host"][0]
    assert socket_folder.startswith(str(tmp_path))  # a Unix socket in the folder, no TCP port taken
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(seen["database_url"], connect_timeout=2)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(seen["redis_url"], socket_connect_timeout=1).ping()

    again = run_beside_servers(tmp_path, sys.executable, "-c", PROBE)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["kept"] == 2  # the database outlived the first run


def test_servers_the_environment_names_are_used_and_none_started(tmp_path):
    named = {"DATABASE_URL": "postgres://someone@db.example:5432/x", "REDIS_URL": "redis://cache.example:6379/1"}
    script = "import os; print(os.environ['DATABASE_URL'], os.environ['REDIS_URL'])"

    result = run_beside_servers(tmp_path, sys.executable, "-c", script, **named)

    assert result.returncode == 0 and result.stdout.split() == list(named.values())
    assert not any(tmp_path.iterdir())


def test_the_commands_exit_code_is_passed_on(tmp_path):
    result = run_beside_servers(tmp_path, sys.executable, "-c", "raise SystemExit(3)", REDIS_URL="redis://x:1/0",
                                DATABASE_URL="postgres://x@y:1/z")  # fmt: skip
    assert result.returncode == 3
