"""A throwaway PostgreSQL cluster for the benchmark's PostgreSQL pass.

The bench measures the bridge with its store and Synapse on PostgreSQL as well as on SQLite, since
PostgreSQL is what a company runs in production. Nothing is assumed about a system-wide server:
the cluster is created with ``initdb`` in a temporary directory, listens on a free port on
127.0.0.1 only (its unix socket lives inside that directory too), trusts loopback connections
(nothing but this machine can reach it, and it holds nothing but benchmark rows), and is removed
when stopped.

Choices, and why:

* The binaries are looked up on PATH first, then in Debian's ``/usr/lib/postgresql/<version>/bin``:
  Debian's ``postgresql`` package puts ``initdb`` there and only wrappers on PATH, so "installed"
  must not mean "on PATH".
* PostgreSQL refuses to run as root. When the bench runs as root (containers, CI), the cluster
  runs as the ``postgres`` system user the Debian package creates, or as ``nobody``; the temp
  directory is handed to that user.
* The server is a direct child (``postgres -D ...``), not ``pg_ctl start``: the bench then owns
  the process, can stop it with SIGINT (PostgreSQL's "fast" shutdown) and an ``atexit`` hook kills
  it if the bench dies, like sandbox.homeserver does for Synapse.
* Durability settings are PostgreSQL's defaults (fsync and synchronous_commit on): the figures
  are meant to say what a production-like PostgreSQL costs, not what a tuned-down one could do.
* Databases are created with asyncpg (what the bridge's store uses anyway), so the client tools
  (``psql``, ``createdb``) are not needed. Synapse's database gets the C collation and UTF8 on
  template0, which Synapse checks for at start-up.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["INSTALL_HINT", "PostgresCluster", "find_binaries", "start_postgres"]

INSTALL_HINT = (
    "apt-get install postgresql (Debian/Ubuntu) and pip install -e '.[postgres]' (make bench does the latter)"
)
#: The cluster's superuser; trusted on loopback, owns both databases.
SUPERUSER = "houseline"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

_live: dict[int, subprocess.Popen[bytes]] = {}


def find_binaries() -> dict[str, Path] | None:
    """``initdb`` and ``postgres`` of one installation, or None when PostgreSQL is not installed.

    Both must come from the same directory: a cluster made by one major version cannot be
    started by another.
    """
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    # Debian: /usr/lib/postgresql/15/bin; newest major version first.
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major_version, reverse=True)
    candidates += [Path(d) for d in debian]
    for directory in candidates:
        initdb, postgres = directory / "initdb", directory / "postgres"
        if os.access(initdb, os.X_OK) and os.access(postgres, os.X_OK):
            return {"initdb": initdb, "postgres": postgres}
    return None


def _major_version(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return 0


@dataclass
class PostgresCluster:
    """A running throwaway cluster; ``stop`` ends it and deletes its directory."""

    workdir: Path
    port: int
    process: subprocess.Popen[bytes]
    version: str
    databases: tuple[str, ...] = field(default_factory=tuple)

    def url(self, database: str) -> str:
        """A URL for the bridge's ``database.url`` and for Synapse (see LocalHomeserver)."""
        return f"postgres://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "postgres.log"

    async def stop(self) -> None:
        """Fast shutdown (SIGINT: active sessions are ended, nothing is left half-written),
        SIGKILL if that hangs, then the directory goes."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _stop_process, self.process, STOP_TIMEOUT_S)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    _live.pop(proc.pid, None)


@atexit.register
def _kill_leftovers() -> None:
    """Never leave a postmaster behind when the bench dies half-way."""
    for proc in list(_live.values()):
        _stop_process(proc, 5.0)


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise RuntimeError(
        "running as root and there is neither a 'postgres' nor a 'nobody' user to run PostgreSQL as"
    )


def _free_port() -> int:
    from sandbox.homeserver import free_port

    return free_port("127.0.0.1")


async def start_postgres(databases: dict[str, bool], *, prefix: str = "houseline-pg-") -> PostgresCluster:
    """initdb a cluster in a new temp dir, start it on loopback and create ``databases``.

    ``databases`` maps a name to whether it needs Synapse's settings (UTF8, C collation,
    template0). Raises RuntimeError (with the server log's tail) when anything fails; whatever
    was started is stopped and removed again.
    """
    binaries = find_binaries()
    if binaries is None:
        raise RuntimeError(f"PostgreSQL is not installed: {INSTALL_HINT}")
    owner = _run_as()
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    data, sockets = workdir / "data", workdir / "sock"
    sockets.mkdir()
    if owner is not None:
        for path in (workdir, sockets):
            os.chown(path, *owner)
    user_kwargs: dict[str, int] = {"user": owner[0], "group": owner[1]} if owner else {}
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    proc: subprocess.Popen[bytes] | None = None
    try:
        init = subprocess.run(
            [
                str(binaries["initdb"]),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=workdir,
            env=env,
            capture_output=True,
            timeout=120,
            **user_kwargs,
        )
        if init.returncode != 0:
            raise RuntimeError(
                f"initdb failed ({init.returncode}): {init.stderr.decode(errors='replace')[-2000:]}"
            )
        # Trust on the private socket and on 127.0.0.1 only; nothing else may connect at all.
        (data / "pg_hba.conf").write_text(
            "# written by bench/postgres.py: a throwaway benchmark cluster\n"
            "local all all trust\n"
            "host  all all 127.0.0.1/32 trust\n",
            encoding="utf-8",
        )
        version = (data / "PG_VERSION").read_text(encoding="ascii").strip()
        port = _free_port()
        with (workdir / "postgres.log").open("ab") as logfile:
            if owner is not None:
                os.chown(workdir / "postgres.log", *owner)
            proc = subprocess.Popen(
                [
                    str(binaries["postgres"]),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-k",
                    str(sockets),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "max_connections=60",
                ],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **user_kwargs,
            )
        _live[proc.pid] = proc
        cluster = PostgresCluster(workdir, port, proc, version)
        await _wait_ready(cluster)
        await _create_databases(cluster, databases)
        cluster.databases = tuple(databases)
        return cluster
    except BaseException:
        if proc is not None:
            _stop_process(proc, 5.0)
        tail = _tail(workdir / "postgres.log")
        shutil.rmtree(workdir, ignore_errors=True)
        if tail:
            raise RuntimeError(f"PostgreSQL did not start; its log ends with:\n{tail}")
        raise


async def _wait_ready(cluster: PostgresCluster) -> None:
    import asyncpg

    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if cluster.process.poll() is not None:
            raise RuntimeError(f"postgres exited with {cluster.process.returncode} during start-up")
        try:
            conn = await asyncpg.connect(cluster.url("postgres"), timeout=2)
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres did not accept connections within {READY_TIMEOUT_S:.0f}s"
                ) from None
            await asyncio.sleep(0.1)
            continue
        await conn.close()
        return


async def _create_databases(cluster: PostgresCluster, databases: dict[str, bool]) -> None:
    import asyncpg

    conn = await asyncpg.connect(cluster.url("postgres"), timeout=5)
    try:
        for name, for_synapse in databases.items():
            if not name.isidentifier():
                raise ValueError(f"database name {name!r}")
            if for_synapse:
                # Synapse refuses other collations (ordering of its text keys depends on it).
                await conn.execute(
                    f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' TEMPLATE template0"
                )
            else:
                await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
