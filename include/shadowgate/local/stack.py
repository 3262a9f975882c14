"""The local stack behind ``make up`` / ``make down`` / ``make status``: Redis, PostgreSQL (Airflow's metadata), MLflow,
Airflow 3 and the API.

Every service runs as its own process group (``start_new_session=True``); the group id is written to
``<home>/run/<service>.pid`` (first line: pgid, second line: the leader's start time in clock ticks, which guards
against pid reuse). ``down`` sends SIGTERM to each group (to the Airflow scheduler's leader first, so that it can
retire its LocalExecutor workers), SIGKILL to what is left after a grace period, and checks ``/proc`` until no process
of any group is left; clients before servers: Airflow's scheduler, triggerer and dag-processor and the API first, then
Airflow's API server, then Redis and MLflow, and PostgreSQL last, once nothing uses it, with its fast-shutdown signal
(SIGINT).
Nothing is ever killed by name; a pid file whose pid now belongs to another process is ignored.

All state lives below ``PathSettings().home`` (relative paths are resolved against the project folder)::

    run/        <service>.pid, stack.env (URLs every service and task sees), airflow.env, stack.lock
    logs/       <service>.log
    redis/      AOF and RDB files of the embedded Redis
    postgres/   the PostgreSQL cluster of Airflow's metadata (data/; see shadowgate.local.postgres)
    secrets/    generated local secrets (API keys, the PostgreSQL password), readable by their owner only
    mlflow/     mlflow.db (SQLite backend + registry) and artifacts/
    airflow/    AIRFLOW_HOME (airflow.cfg, task logs, generated admin password)

The module does no work at import time and imports neither airflow nor fastapi: those run as processes.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shadowgate.config import AirflowSettings, ApiSettings, MLflowSettings, PathSettings, RedisSettings, local_secret
from shadowgate.local import postgres
from shadowgate.local.redis import RedisLaunchError, redis_argv

REDIS = "redis"
POSTGRES = "postgres"
MLFLOW = "mlflow"
AIRFLOW_API_SERVER = "airflow-api-server"
AIRFLOW_SCHEDULER = "airflow-scheduler"
AIRFLOW_DAG_PROCESSOR = "airflow-dag-processor"
AIRFLOW_TRIGGERER = "airflow-triggerer"
API = "api"

AIRFLOW_COMPONENTS: tuple[str, ...] = (AIRFLOW_API_SERVER, AIRFLOW_SCHEDULER, AIRFLOW_DAG_PROCESSOR, AIRFLOW_TRIGGERER)
SERVICES: tuple[str, ...] = (REDIS, POSTGRES, MLFLOW, *AIRFLOW_COMPONENTS, API)
"""Every service of the local stack, in start order."""

AIRFLOW_USER = "admin"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"

# Key of each Airflow component in the answer of GET /api/v2/monitor/health.
_AIRFLOW_HEALTH_KEYS: dict[str, str] = {
    AIRFLOW_API_SERVER: "metadatabase",
    AIRFLOW_SCHEDULER: "scheduler",
    AIRFLOW_DAG_PROCESSOR: "dag_processor",
    AIRFLOW_TRIGGERER: "triggerer",
}

HEALTH_TIMEOUT_S: dict[str, float] = {
    REDIS: 20.0,
    POSTGRES: 60.0,
    MLFLOW: 90.0,
    API: 90.0,
    **dict.fromkeys(AIRFLOW_COMPONENTS, 120.0),
}
"""How long ``up`` waits for each service to become healthy before it shows the log tail and fails."""

SETTLE_TIMEOUT_S = 60.0
"""How long ``up``'s final check keeps asking a service that proved healthy moments before and misses one probe."""

STOP_GRACE_S = 20.0
"""How long ``down`` waits after SIGTERM before it sends SIGKILL to what is left of a group."""

_LEADER_FIRST = frozenset({AIRFLOW_SCHEDULER})
"""Services whose group leader alone gets the first SIGTERM (see ``_stop_groups``)."""

_STOP_SIGNAL: dict[str, signal.Signals] = {POSTGRES: signal.SIGINT}
"""A service's own clean-stop signal where it is not SIGTERM (PostgreSQL: SIGTERM waits for every client to leave)."""

_STOP_STAGES: tuple[tuple[str, ...], ...] = ((AIRFLOW_API_SERVER,), (MLFLOW, REDIS), (POSTGRES,))
"""Stopped by ``down`` in these stages after every other service, clients before servers: Airflow's scheduler,
triggerer and dag-processor and the API first, while what they talk to still answers — the API server (their
execution API), Redis and MLflow (a task cut off from them hangs on its retries and holds the scheduler past its grace
period; a dag-processor whose API server was gone did too: SIGKILL after 20 s, seen in the local-stack tests) — then
the API server, then Redis and MLflow, then PostgreSQL (Airflow's components write their last state into it)."""

AIRFLOW_DATABASE = "airflow"

LOG_TAIL_LINES = 30


class StackError(RuntimeError):
    """The local stack could not be brought to the requested state."""


class PortInUseError(StackError):
    """A port the stack needs is held by a process the stack did not start."""


# --------------------------------------------------------------------------------------------------------- status


@dataclass(frozen=True)
class ServiceStatus:
    """One service of the local stack as seen right now."""

    name: str
    pid: int | None
    """Process-group id (== pid of the group leader) when the stack runs the service, else None."""
    url: str | None
    healthy: bool
    state: str
    """``running``, ``unhealthy``, ``stopped``, ``not built yet`` or ``external`` (a Redis the stack does not run)."""


@dataclass(frozen=True)
class StackStatus:
    """Every service of the local stack, plus where its state lives and how to log in."""

    services: tuple[ServiceStatus, ...]
    home: Path
    airflow_user: str | None = None
    airflow_password: str | None = None

    def __getitem__(self, name: str) -> ServiceStatus:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    @property
    def healthy(self) -> bool:
        """True when every service that should run answers its health check."""
        return all(s.healthy for s in self.services if s.state != "not built yet")

    @property
    def pids(self) -> dict[str, int]:
        """Process-group id of every service the stack runs."""
        return {s.name: s.pid for s in self.services if s.pid is not None}

    def render(self) -> str:
        """A plain-text table: service, pid, health, URL (plus the Airflow login when known)."""
        rows = [("SERVICE", "PID", "STATE", "URL")]
        for s in self.services:
            state = "healthy" if s.healthy else s.state
            rows.append((s.name, str(s.pid) if s.pid is not None else "-", state, s.url or "-"))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = ["  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row)) for row in rows]
        lines.append(f"state: {self.home}")
        if self.airflow_password is not None:
            lines.append(f"airflow login: {self.airflow_user} / {self.airflow_password}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Absolute paths and ports of one local stack (derived from the settings and the project folder)."""

    repo_root: Path
    home: Path
    redis_port: int
    redis_external_url: str | None
    mlflow_port: int
    airflow_port: int
    airflow_parallelism: int
    airflow_db_port: int
    api_port: int
    venv_bin: Path = field(default_factory=lambda: Path(sys.executable).parent)

    @classmethod
    def resolve(cls, repo_root: Path) -> Layout:
        root = repo_root.resolve()
        home = PathSettings().home.expanduser()
        home = (home if home.is_absolute() else root / home).resolve()
        redis = RedisSettings()
        # A URL equal to the embedded one (e.g. stack.env was sourced into the shell) still means "run it for me".
        external = redis.url if redis.url and redis.url.rstrip("/") != redis.embedded_url.rstrip("/") else None
        airflow = AirflowSettings()
        return cls(
            repo_root=root,
            home=home,
            redis_port=redis.embedded_port,
            redis_external_url=external,
            mlflow_port=MLflowSettings().port,
            airflow_port=airflow.port,
            airflow_parallelism=airflow.parallelism,
            airflow_db_port=airflow.db_port,
            api_port=ApiSettings().port,
        )

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def redis_dir(self) -> Path:
        return self.home / "redis"

    @property
    def postgres_dir(self) -> Path:
        return self.home / "postgres"

    @property
    def postgres_password(self) -> str:
        """The local PostgreSQL superuser's password (made once, kept in ``secrets/``)."""
        return local_secret(self.home / "secrets" / "postgres_password")

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def env_file(self) -> Path:
        return self.run_dir / "stack.env"

    @property
    def redis_url(self) -> str:
        return self.redis_external_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def airflow_password_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json.generated"

    def pid_file(self, service: str) -> Path:
        return self.run_dir / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.log_dir / f"{service}.log"

    def port(self, service: str) -> int | None:
        ports = {
            REDIS: self.redis_port,
            POSTGRES: self.airflow_db_port,
            MLFLOW: self.mlflow_port,
            AIRFLOW_API_SERVER: self.airflow_port,
        }
        return {**ports, API: self.api_port}.get(service)

    def url(self, service: str) -> str | None:
        urls = {
            REDIS: self.redis_url,
            POSTGRES: f"postgresql://127.0.0.1:{self.airflow_db_port}/{AIRFLOW_DATABASE}",
            MLFLOW: self.mlflow_url,
            AIRFLOW_API_SERVER: self.airflow_url,
        }
        return {**urls, API: self.api_url}.get(service)

    def stack_env(self) -> dict[str, str]:
        """What every service (and every Airflow task) needs to find the others."""
        return {
            "SHADOWGATE_HOME": str(self.home),
            "SHADOWGATE_REDIS_URL": self.redis_url,
            "SHADOWGATE_MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_TRACKING_URI": self.mlflow_url,
        }

    def airflow_env(self) -> dict[str, str]:
        """Airflow configuration of the local stack (env vars override $AIRFLOW_HOME/airflow.cfg)."""
        sync_url, async_url = postgres.sqlalchemy_urls(self.airflow_db_port, self.postgres_password, AIRFLOW_DATABASE)
        return {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.repo_root / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.airflow_parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sync_url,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": async_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.airflow_port),
            "AIRFLOW__API__WORKERS": "1",
            # Tasks put the alerts a run raised into its note through the REST API (shadowgate.pipelines.run_notes).
            "SHADOWGATE_AIRFLOW_API_URL": self.airflow_url,
            "SHADOWGATE_AIRFLOW_API_PASSWORD_FILE": str(self.airflow_password_file),
            # New DAG files show up within 30 s instead of the default 5 min.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        }

    def airflow_process_env(self) -> dict[str, str]:
        """The environment of Airflow's components: :meth:`base_env` without any ``AIRFLOW_*`` variable of the caller
        (an ``AIRFLOW_HOME`` or ``AIRFLOW__…`` meant for another Airflow — or a test session's unit-test mode, which
        made the task runner's tokens invalid — must not reconfigure this one), then :meth:`airflow_env`."""
        env = {k: v for k, v in self.base_env().items() if not k.startswith("AIRFLOW_")}
        return {**env, **self.airflow_env()}

    def base_env(self) -> dict[str, str]:
        """The caller's environment + the venv on PATH + stack.env."""
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(self.venv_bin), env.get("PATH", "")])
        env.update(self.stack_env())
        return env

    def executable(self, name: str) -> str:
        candidate = self.venv_bin / name
        if candidate.exists():
            return str(candidate)
        found = shutil.which(name)
        if found is None:
            raise StackError(f"`{name}` not found next to {sys.executable} nor on PATH; run `make install`")
        return found


# ---------------------------------------------------------------------------------------------- process groups


@dataclass(frozen=True)
class _ProcStat:
    pid: int
    state: str
    pgid: int
    start_ticks: int


def _proc_stat(pid: int) -> _ProcStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces or ')'.
    fields = raw.rsplit(")", 1)[1].split()
    return _ProcStat(pid=pid, state=fields[0], pgid=int(fields[2]), start_ticks=int(fields[19]))


def group_members(pgid: int, *, include_zombies: bool = False) -> list[int]:
    """Pids of every process whose process group is ``pgid`` (a scan of /proc/*/stat)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None and stat.pgid == pgid and (include_zombies or stat.state != "Z"):
            members.append(stat.pid)
    return sorted(members)


@dataclass(frozen=True)
class _Recorded:
    """What a pid file says: a process group and the start time of its leader."""

    pgid: int
    start_ticks: int | None


def _read_pid_file(path: Path) -> _Recorded | None:
    try:
        lines = path.read_text().split()
        return _Recorded(pgid=int(lines[0]), start_ticks=int(lines[1]) if len(lines) > 1 else None)
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _write_pid_file(path: Path, pgid: int) -> None:
    stat = _proc_stat(pgid)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{pgid}\n{stat.start_ticks if stat else ''}\n")
    tmp.replace(path)


def _reap(pgid: int) -> None:
    """Collect exit statuses of our own children in the group (they would linger as zombies otherwise)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-pgid, os.WNOHANG)[0] != 0:
            pass


def _live_members(recorded: _Recorded) -> list[int]:
    """Live processes of a recorded group; empty when the group is gone or its pgid now belongs to someone else."""
    _reap(recorded.pgid)
    leader = _proc_stat(recorded.pgid)
    if (
        leader is not None
        and leader.state != "Z"
        and recorded.start_ticks is not None
        and leader.start_ticks != recorded.start_ticks
    ):
        return []  # the pid was reused by a process we did not start
    return group_members(recorded.pgid)


def _running(layout: Layout, service: str) -> _Recorded | None:
    """The recorded group of a service if it is alive; a stale pid file is removed."""
    path = layout.pid_file(service)
    recorded = _read_pid_file(path)
    if recorded is not None and _live_members(recorded):
        return recorded
    path.unlink(missing_ok=True)
    return None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _leader_alive(recorded: _Recorded) -> bool:
    leader = _proc_stat(recorded.pgid)
    return (
        leader is not None
        and leader.state != "Z"
        and (recorded.start_ticks is None or leader.start_ticks == recorded.start_ticks)
    )


def _stop_groups(groups: Mapping[str, _Recorded], *, grace_s: float = STOP_GRACE_S) -> None:
    """Stop process groups and verify via /proc that nothing of them is left.

    1. SIGTERM to the whole group, except for services in ``_LEADER_FIRST``: there only the leader gets it, so that
       it can shut its children down in order (signalling the Airflow scheduler's whole group at once can leave its
       LocalExecutor waiting forever for workers that are already gone). Their group gets SIGTERM as soon as the
       leader is gone, or after half the grace period.
    2. SIGKILL to every group still alive after ``grace_s``.
    """
    pending = {name: rec for name, rec in groups.items() if _live_members(rec)}
    group_termed: set[str] = set()
    for name, rec in pending.items():
        if name in _LEADER_FIRST and _leader_alive(rec):
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pgid, signal.SIGTERM)
        else:
            _signal_group(rec.pgid, _STOP_SIGNAL.get(name, signal.SIGTERM))
            group_termed.add(name)
    started = time.monotonic()
    while pending and time.monotonic() - started < grace_s:
        time.sleep(0.1)
        for name in [name for name, rec in pending.items() if not _live_members(rec)]:
            del pending[name]
            _say(f"  {name}: stopped ({time.monotonic() - started:.1f} s)")
        for name, rec in pending.items():
            if name not in group_termed and (not _leader_alive(rec) or time.monotonic() - started > grace_s / 2):
                _signal_group(rec.pgid, signal.SIGTERM)
                group_termed.add(name)
    for name, rec in pending.items():
        _say(f"  {name}: still running {grace_s:.0f} s after SIGTERM, sending SIGKILL to group {rec.pgid}")
        _signal_group(rec.pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while pending and time.monotonic() < deadline:
        time.sleep(0.1)
        pending = {name: rec for name, rec in pending.items() if _live_members(rec)}
    if pending:
        left = {name: _live_members(rec) for name, rec in pending.items()}
        raise StackError(f"processes survived SIGKILL: {left}")


# ------------------------------------------------------------------------------------------------ ports, health


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (bound the way servers bind: with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _listener_pids(port: int) -> list[int]:
    """Pids holding a listening TCP socket on ``port`` (best effort, from /proc/net/tcp{,6} and /proc/*/fd)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    pids: set[int] = set()
    if inodes:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                for fd in (entry / "fd").iterdir():
                    with contextlib.suppress(OSError):
                        if os.readlink(fd) in inodes:
                            pids.add(int(entry.name))
                            break
    return sorted(pids)


def _describe_pid(pid: int) -> str:
    try:
        cmdline = " ".join(
            Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split()
        )
    except OSError:
        return str(pid)
    return f"{pid} ({cmdline[:80]})"


def _require_free_port(service: str, port: int, variable: str) -> None:
    if port_is_free(port):
        return
    holders = ", ".join(_describe_pid(p) for p in _listener_pids(port)) or "another process"
    raise PortInUseError(
        f"port {port} (for {service}) is already in use by {holders}; stop it or choose another port with {variable}"
    )


def _redis_ping(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _airflow_health(layout: Layout, *, heartbeat_since: dt.datetime | None = None) -> dict[str, bool]:
    """Health of each Airflow component from GET /api/v2/monitor/health (all False when it does not answer).

    With ``heartbeat_since``, a component also needs a heartbeat at or after that instant: right after a restart
    the endpoint still reports the previous (dead) process's recent heartbeat as healthy.
    """
    import httpx

    try:
        answer = httpx.get(f"{layout.airflow_url}/api/v2/monitor/health", timeout=2.0)
        body = answer.json() if answer.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        body = {}
    health: dict[str, bool] = {}
    for name, key in _AIRFLOW_HEALTH_KEYS.items():
        part = body.get(key) if isinstance(body, dict) else None
        healthy = isinstance(part, dict) and part.get("status") == "healthy"
        beat = part.get(f"latest_{key}_heartbeat") if isinstance(part, dict) else None
        if healthy and heartbeat_since is not None and isinstance(beat, str):
            try:
                healthy = dt.datetime.fromisoformat(beat) >= heartbeat_since
            except ValueError:
                healthy = False
        health[name] = healthy
    return health


def _health_probe(layout: Layout, service: str, *, started_at: dt.datetime | None = None) -> Callable[[], bool]:
    if service == REDIS:
        return lambda: _redis_ping(layout.redis_url)
    if service == POSTGRES:
        password = layout.postgres_password  # read once, not on every probe
        return lambda: postgres.answering(layout.airflow_db_port, password)
    if service == MLFLOW:
        return lambda: _http_ok(f"{layout.mlflow_url}/health")
    if service == API:
        return lambda: _http_ok(f"{layout.api_url}/health/live")
    if service in _AIRFLOW_HEALTH_KEYS:
        return lambda: _airflow_health(layout, heartbeat_since=started_at)[service]
    raise KeyError(service)


def api_is_built(repo_root: Path) -> bool:
    """api/main.py exists and defines (or imports) ``create_app`` — read with ast, never imported here."""
    main = repo_root / "api" / "main.py"
    try:
        tree = ast.parse(main.read_text(), filename=str(main))
    except (OSError, SyntaxError):
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "create_app":
            return True
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == "create_app" for a in node.names):
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "create_app" for t in node.targets):
            return True
    return False


def _airflow_password(layout: Layout) -> str | None:
    try:
        value = json.loads(layout.airflow_password_file.read_text()).get(AIRFLOW_USER)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------------------------------------------- starting


def _say(message: str) -> None:
    print(message, flush=True)


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _write_env_file(path: Path, env: Mapping[str, str], header: str) -> None:
    body = "".join(f"{key}={value}\n" for key, value in env.items())
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # airflow.env holds the database password
    with os.fdopen(fd, "w") as handle:
        handle.write(f"# {header}\n{body}")
    tmp.replace(path)


@dataclass
class _Launch:
    """A service ``up`` has started or found running, and is waiting on."""

    service: str
    pgid: int
    process: subprocess.Popen[bytes] | None
    started: float = field(default_factory=time.monotonic)
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


def _spawn(
    layout: Layout,
    service: str,
    argv: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    account: postgres.Account | None = None,
) -> _Launch:
    log_path = layout.log_file(service)
    with log_path.open("ab") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=None if account is None else account.uid,
            group=None if account is None else account.gid,
            extra_groups=None if account is None else [],
        )
    _write_pid_file(layout.pid_file(service), process.pid)
    _say(f"  {service}: started (pgid {process.pid}), log {log_path}")
    return _Launch(service=service, pgid=process.pid, process=process)


def _wait_healthy(layout: Layout, launch: _Launch) -> None:
    # Only a process started now must prove itself with a fresh heartbeat; an adopted one may have beaten earlier.
    probe = _health_probe(layout, launch.service, started_at=launch.started_at if launch.process else None)
    timeout = HEALTH_TIMEOUT_S[launch.service]
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            _say(f"  {launch.service}: healthy ({time.monotonic() - launch.started:.1f} s)")
            return
        exited = launch.process is not None and launch.process.poll() is not None
        gone = not _live_members(_Recorded(launch.pgid, None))
        if exited or gone or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    reason = "exited" if (exited or gone) else f"not healthy after {timeout:.0f} s"
    log_path = layout.log_file(launch.service)
    tail = _log_tail(log_path)
    with contextlib.suppress(StackError):
        _stop_groups({launch.service: _Recorded(launch.pgid, None)}, grace_s=5.0)
    layout.pid_file(launch.service).unlink(missing_ok=True)
    _say(f"--- last {LOG_TAIL_LINES} lines of {log_path} ---\n{tail}\n---")
    raise StackError(f"{launch.service} {reason}; see {log_path}")


_PORT_VARIABLES: dict[str, str] = {
    REDIS: "SHADOWGATE_REDIS_EMBEDDED_PORT",
    POSTGRES: "SHADOWGATE_AIRFLOW_DB_PORT",
    MLFLOW: "SHADOWGATE_MLFLOW_PORT",
    AIRFLOW_API_SERVER: "SHADOWGATE_AIRFLOW_PORT",
    API: "SHADOWGATE_API_PORT",
}


def _check_port(layout: Layout, service: str) -> None:
    port = layout.port(service)
    if port is not None:
        _require_free_port(service, port, _PORT_VARIABLES[service])


def _preflight(layout: Layout) -> None:
    """Fail before starting anything when a port of a service that is not running yet is taken."""
    managed = [s for s in SERVICES if not (s == REDIS and layout.redis_external_url is not None)]
    if not api_is_built(layout.repo_root):
        managed.remove(API)
    for service in managed:
        if _running(layout, service) is None:
            _check_port(layout, service)


def _adopt_or_prepare(layout: Layout, service: str) -> _Launch | None:
    """A running group of ``service`` (reused as is), or None after making sure its port is free."""
    recorded = _running(layout, service)
    if recorded is not None:
        _say(f"  {service}: already running (pgid {recorded.pgid})")
        return _Launch(service=service, pgid=recorded.pgid, process=None)
    _check_port(layout, service)
    return None


def _start_redis(layout: Layout) -> _Launch | None:
    if layout.redis_external_url is not None:
        if not _redis_ping(layout.redis_external_url):
            raise StackError(f"SHADOWGATE_REDIS_URL={layout.redis_external_url} does not answer PING")
        _say(f"  redis: using external {layout.redis_external_url}")
        return None
    launch = _adopt_or_prepare(layout, REDIS)
    if launch is not None:
        return launch
    layout.redis_dir.mkdir(parents=True, exist_ok=True)
    try:
        maxmemory = RedisSettings().embedded_maxmemory_mb
        argv = redis_argv(
            layout.redis_port,
            layout.redis_dir,
            persistence="everysec",
            extra=("--maxmemory", f"{maxmemory}mb", "--maxmemory-policy", "noeviction"),
        )
    except RedisLaunchError as error:
        raise StackError(str(error)) from None
    return _spawn(layout, REDIS, argv, env=layout.base_env(), cwd=layout.redis_dir)


def _start_postgres(layout: Layout) -> _Launch:
    launch = _adopt_or_prepare(layout, POSTGRES)
    if launch is not None:
        return launch
    try:
        account = postgres.server_account()
        binaries = postgres.server_bin_dir(layout.postgres_dir, account)
        made = postgres.ensure_cluster(
            layout.postgres_dir, password=layout.postgres_password, account=account, bin_path=binaries
        )
        if made:
            _say(f"  postgres: made a new cluster in {postgres.data_dir(layout.postgres_dir)}")
        argv = postgres.postgres_argv(layout.airflow_db_port, layout.postgres_dir, bin_path=binaries)
    except postgres.PostgresLaunchError as error:
        raise StackError(str(error)) from None
    return _spawn(layout, POSTGRES, argv, env=postgres.server_env(), cwd=layout.postgres_dir, account=account)


def _prepare_airflow_database(layout: Layout) -> None:
    if postgres.ensure_database(layout.airflow_db_port, layout.postgres_password, AIRFLOW_DATABASE):
        _say(f"  postgres: created database {AIRFLOW_DATABASE}")


def _start_mlflow(layout: Layout) -> _Launch:
    launch = _adopt_or_prepare(layout, MLFLOW)
    if launch is not None:
        return launch
    artifacts = layout.mlflow_dir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [
        layout.executable("mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{layout.mlflow_dir / 'mlflow.db'}",
        "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1",
        "--port", str(layout.mlflow_port),
        "--workers", "1",
    ]  # fmt: skip
    env = {**layout.base_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return _spawn(layout, MLFLOW, argv, env=env, cwd=layout.mlflow_dir)


def _airflow_migrate(layout: Layout, env: Mapping[str, str]) -> None:
    log_path = layout.log_file("airflow-migrate")
    started = time.monotonic()
    with log_path.open("ab") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} airflow db migrate\n".encode())
        log.flush()
        result = subprocess.run(
            [layout.executable("airflow"), "db", "migrate"],
            cwd=layout.repo_root,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=300,
        )
    if result.returncode != 0:
        _say(f"--- last {LOG_TAIL_LINES} lines of {log_path} ---\n{_log_tail(log_path)}\n---")
        raise StackError(f"`airflow db migrate` failed (exit {result.returncode}); see {log_path}")
    _say(f"  airflow: metadata database ready ({time.monotonic() - started:.1f} s)")


def _start_airflow(layout: Layout) -> list[_Launch]:
    launches: dict[str, _Launch] = {}
    missing = []
    for component in AIRFLOW_COMPONENTS:
        launch = _adopt_or_prepare(layout, component)
        if launch is None:
            missing.append(component)
        else:
            launches[component] = launch
    if missing:
        layout.airflow_home.mkdir(parents=True, exist_ok=True)
        env = layout.airflow_process_env()
        _airflow_migrate(layout, env)  # idempotent; also writes airflow.cfg (shared JWT secret) before anyone reads it
        airflow = layout.executable("airflow")
        commands = {
            AIRFLOW_API_SERVER: [airflow, "api-server"],
            # Task logs are local files the api-server reads directly: no log-serving side servers (ports 8793/8794).
            AIRFLOW_SCHEDULER: [airflow, "scheduler", "--skip-serve-logs"],
            AIRFLOW_DAG_PROCESSOR: [airflow, "dag-processor"],
            AIRFLOW_TRIGGERER: [airflow, "triggerer", "--skip-serve-logs"],
        }
        for component in missing:
            launches[component] = _spawn(layout, component, commands[component], env=env, cwd=layout.repo_root)
    return [launches[c] for c in AIRFLOW_COMPONENTS]


def _start_api(layout: Layout) -> _Launch | None:
    if not api_is_built(layout.repo_root):
        _say("  api: not built yet (no create_app in api/main.py)")
        return None
    launch = _adopt_or_prepare(layout, API)
    if launch is not None:
        return launch
    argv = [
        layout.executable("uvicorn"), "api.main:create_app", "--factory",
        "--host", "127.0.0.1",
        "--port", str(layout.api_port),
        "--workers", "1",  # one process writes the decision journal
        "--no-access-log",  # per-request figures are in /metrics; an access line costs more than a decision
    ]  # fmt: skip
    env = {
        **layout.base_env(),
        "SHADOWGATE_API_KEY": api_key(layout),
        "SHADOWGATE_API_INGEST_KEY": ingest_key(layout),
    }
    return _spawn(layout, API, argv, env=env, cwd=layout.repo_root)


def api_key(layout: Layout) -> str:
    """The admin key of the local API: ``SHADOWGATE_API_KEY`` when set, else one made once under ``<home>/secrets``."""
    configured = ApiSettings().key
    if configured is not None:
        return configured.get_secret_value()
    return local_secret(layout.home / "secrets" / "api_key")


def ingest_key(layout: Layout) -> str:
    """The outcome producers' key of the local API: ``SHADOWGATE_API_INGEST_KEY`` when set, else one made once under
    ``<home>/secrets`` (never the admin key: a separate scope)."""
    configured = ApiSettings().ingest_key
    if configured is not None:
        return configured.get_secret_value()
    return local_secret(_ingest_key_file(layout))


def _ingest_key_file(layout: Layout) -> Path:
    return layout.home / "secrets" / "ingest_key"


@dataclass(frozen=True)
class LocalApi:
    """How a client reaches the local stack's API, as ``up`` configures it."""

    url: str
    ingest_key: str | None
    """``SHADOWGATE_API_INGEST_KEY`` when set, else the key ``up`` made under ``<home>/secrets``; None if neither."""


def local_api(*, repo_root: Path) -> LocalApi:
    """The local API's URL and ingest key, found as ``up`` sets them (``SHADOWGATE_API_PORT``, ``SHADOWGATE_HOME``,
    ``SHADOWGATE_API_INGEST_KEY``). Unlike :func:`ingest_key`, never makes a key: a new one would not be the API's."""
    layout = Layout.resolve(repo_root)
    configured = ApiSettings().ingest_key
    if configured is not None:
        return LocalApi(url=layout.api_url, ingest_key=configured.get_secret_value())
    path = _ingest_key_file(layout)
    return LocalApi(url=layout.api_url, ingest_key=path.read_text().strip() if path.is_file() else None)


def _run_bootstrap(layout: Layout) -> None:
    _say("bootstrap: seeding history and registering champion + challenger where missing")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "shadowgate.cli", "bootstrap"],
        cwd=layout.repo_root,
        env=layout.base_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"`shadowgate bootstrap` failed (exit {result.returncode}); the services keep running")
    _say(f"bootstrap: done ({time.monotonic() - started:.1f} s)")


@contextlib.contextmanager
def _exclusive(layout: Layout) -> Iterator[None]:
    """One ``up``/``down`` at a time per SHADOWGATE_HOME."""
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    with (layout.run_dir / "stack.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(f"another `shadowgate up/down` is running on {layout.home}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _access_summary(layout: Layout, state: StackStatus) -> str:
    password = state.airflow_password or f"(see {layout.airflow_password_file})"
    api = state[API]
    lines = [
        "",
        "shadowgate local stack",
        f"  Redis       {layout.redis_url}" + ("  (external)" if layout.redis_external_url else ""),
        f"  PostgreSQL  {layout.url(POSTGRES)}   Airflow's metadata (password in {layout.home / 'secrets'})",
        f"  MLflow UI   {layout.mlflow_url}/#/experiments?workflowType=machine_learning   (the 'Model training' view;"
        " MLflow 3 opens on GenAI traces otherwise)",
        f"  Airflow UI  {layout.airflow_url}   user {AIRFLOW_USER}  password {password}",
        *(
            (
                f"  API         {layout.api_url}   docs {layout.api_url}/docs",
                f"              admin  X-API-Key {api_key(layout)}",
                f"              ingest X-Ingest-Key {ingest_key(layout)}   (POST /v1/outcomes)",
            )
            if api.state != "not built yet"
            else ("  API         not built yet (api/main.py with create_app)",)
        ),
        f"  env         set -a; source {layout.env_file}; set +a   (Airflow CLI: {layout.run_dir / 'airflow.env'})",
        f"  logs        {layout.log_dir}",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ public


def status(*, repo_root: Path) -> StackStatus:
    """Each service as it is now: process group, URL, health (real PING / HTTP checks). Starts nothing."""
    layout = Layout.resolve(repo_root)
    airflow_health = _airflow_health(layout)
    services = []
    for service in SERVICES:
        url = layout.url(service)
        if service == REDIS and layout.redis_external_url is not None:
            services.append(ServiceStatus(REDIS, None, url, _redis_ping(url or ""), "external"))
            continue
        if service == API and not api_is_built(layout.repo_root) and not layout.pid_file(API).exists():
            services.append(ServiceStatus(API, None, url, False, "not built yet"))
            continue
        recorded = _running(layout, service)
        if recorded is None:
            services.append(ServiceStatus(service, None, url, False, "stopped"))
            continue
        healthy = airflow_health[service] if service in airflow_health else _health_probe(layout, service)()
        services.append(ServiceStatus(service, recorded.pgid, url, healthy, "running" if healthy else "unhealthy"))
    return StackStatus(
        services=tuple(services),
        home=layout.home,
        airflow_user=AIRFLOW_USER,
        airflow_password=_airflow_password(layout),
    )


def _settled_status(repo_root: Path, *, timeout_s: float = SETTLE_TIMEOUT_S) -> StackStatus:
    """:func:`status`, asked again until every service is healthy or ``timeout_s`` has passed.

    Every service has just answered its own health check; one probe of 2 s right after can still miss on a busy
    machine (measured: Airflow's api-server held a task-state call for 22 s while the API loaded its models, and all
    four Airflow components read unhealthy at once), which must not fail ``up``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        state = status(repo_root=repo_root)
        if state.healthy or time.monotonic() > deadline:
            return state
        time.sleep(1.0)


def up(*, repo_root: Path, bootstrap: bool = True) -> StackStatus:
    """Start (or adopt) Redis, MLflow, Airflow and the API, wait until each is healthy, optionally bootstrap.

    Idempotent: a service whose pid file points at a live group is left alone (and waited on if not yet healthy);
    stale pid files are removed. A port held by a foreign process raises :class:`PortInUseError`.
    """
    layout = Layout.resolve(repo_root)
    started = time.monotonic()
    with _exclusive(layout):
        _say(f"shadowgate up: state in {layout.home}")
        _preflight(layout)
        for folder in (layout.run_dir, layout.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        _write_env_file(layout.env_file, layout.stack_env(), "generated by `shadowgate up`; URLs of the local stack")
        _write_env_file(
            layout.run_dir / "airflow.env",
            {**layout.stack_env(), **layout.airflow_env()},
            "generated by `shadowgate up`; `set -a; source` it to point the airflow CLI at the local stack",
        )

        redis = _start_redis(layout)
        database = _start_postgres(layout)
        if redis is not None:
            _wait_healthy(layout, redis)
        _wait_healthy(layout, database)
        _prepare_airflow_database(layout)
        mlflow = _start_mlflow(layout)
        airflow = _start_airflow(layout)  # migrate runs while MLflow boots
        _wait_healthy(layout, mlflow)
        if bootstrap:
            _run_bootstrap(layout)  # Airflow comes up meanwhile
        for launch in airflow:
            _wait_healthy(layout, launch)
        api = _start_api(layout)  # after bootstrap: the API loads the champion at start
        if api is not None:
            _wait_healthy(layout, api)

        state = _settled_status(repo_root)
    if not state.healthy:
        raise StackError("some services are not healthy:\n" + state.render())
    _say(f"shadowgate up: healthy in {time.monotonic() - started:.1f} s")
    _say(_access_summary(layout, state))
    return state


def down(*, repo_root: Path) -> list[str]:
    """Stop every process group the stack started (SIGTERM, then SIGKILL after a grace period).

    Returns the names of the services that were running. Harmless when nothing runs. Never touches an external
    Redis and never kills anything by name.
    """
    layout = Layout.resolve(repo_root)
    if not layout.run_dir.exists():
        return []
    with _exclusive(layout):
        groups: dict[str, _Recorded] = {}
        for path in sorted(layout.run_dir.glob("*.pid")):
            recorded = _read_pid_file(path)
            if recorded is not None and _live_members(recorded):
                groups[path.stem] = recorded
            else:
                path.unlink(missing_ok=True)
        if groups:
            _say("stopping: " + ", ".join(f"{name} (pgid {rec.pgid})" for name, rec in groups.items()))
            staged = {name for stage in _STOP_STAGES for name in stage}
            _stop_groups({name: rec for name, rec in groups.items() if name not in staged})
            for stage in _STOP_STAGES:
                _stop_groups({name: rec for name, rec in groups.items() if name in stage})
        for name in groups:
            layout.pid_file(name).unlink(missing_ok=True)
        for generated in (layout.env_file, layout.run_dir / "airflow.env"):
            generated.unlink(missing_ok=True)
    order = {name: i for i, name in enumerate(SERVICES)}
    return sorted(groups, key=lambda name: order.get(name, len(order)))
