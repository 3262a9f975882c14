"""docker-compose.yaml is a valid, coherent production-shaped stack — proven without a Docker engine.

Layers:

1. **Compose-spec JSON schema.** The file is interpolated the way Compose does it (``${VAR}``,
   ``${VAR:-default}``, ``${VAR:?error}``, ``$$``) with test-only values and validated against the official
   compose-spec schema vendored in ``tests/integration/data`` (Apache-2.0, provenance in the README there).
   Negative controls show that the validator bites.
2. **The real Compose CLI** when one is installed: ``docker compose config`` (v2 plugin), else
   ``docker-compose config`` (standalone; Debian's ``docker-compose`` package). ``config`` parses,
   interpolates and validates without an engine. Skipped, with the reason, when neither is installed.
3. **Structural facts** the stack relies on — services, healthchecks, ``depends_on`` conditions, published
   ports, the Airflow 3 / MLflow settings — checked on our interpolation and on the CLI's resolved output
   alike. Airflow and MLflow setting names are checked against the installed Airflow and MLflow.
4. **The Postgres init script** runs for real against a throwaway PostgreSQL cluster when the server binaries
   are installed (skipped otherwise).
5. **MLflow authentication**: the shipped basic-auth config and the compose file's MLflow settings start a real
   ``mlflow server --app-name basic-auth`` here; anonymous requests are refused, the API's user reads but cannot
   move an alias.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
SCHEMA_FILE = Path(__file__).parent / "data" / "compose_spec.json"
INIT_SCRIPT = ROOT / "docker" / "postgres" / "init-databases.sh"
MLFLOW_AUTH_INI = ROOT / "docker" / "mlflow" / "basic_auth.ini"
MLFLOW_USERS_SCRIPT = ROOT / "docker" / "mlflow" / "create_users.py"

EXPECTED_SERVICES = {
    "redis",
    "postgres",
    "mlflow",
    "mlflow-init",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "api",
}
ONE_SHOT = {"airflow-init", "mlflow-init"}
AIRFLOW_SERVICES = {s for s in EXPECTED_SERVICES if s.startswith("airflow-")}
PROJECT_IMAGE_SERVICES = AIRFLOW_SERVICES | {"mlflow", "mlflow-init", "api"}
# Container ports each service publishes; every other service publishes none.
EXPECTED_PORTS = {"redis": 6379, "postgres": 5432, "mlflow": 5000, "airflow-apiserver": 8080, "api": 8000}
AIRFLOW_COMMANDS = {
    "airflow-apiserver": ["airflow", "api-server"],
    "airflow-scheduler": ["airflow", "scheduler"],
    "airflow-dag-processor": ["airflow", "dag-processor"],
    "airflow-triggerer": ["airflow", "triggerer"],
}
EXECUTION_API_URL = "http://airflow-apiserver:8080/execution/"
SECRET_KEY_PATTERN = re.compile(r"(PASSWORD|SECRET|FERNET_KEY|API_KEY|INGEST_KEY|REDISCLI_AUTH)")
REQUIRED_REFERENCE = re.compile(r"\$\{[A-Z][A-Z0-9_]*:\?[^}]*\}")
URL_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+._-]*://[^:/@]*:(?P<password>.*)@[^@]*$")


# ---------------------------------------------------------------------------------------------------- helpers


class MissingVariableError(KeyError):
    """A ``${VAR:?message}`` (or a bare ``${VAR}``) met an unset variable."""


_REFERENCE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>.*))?", re.DOTALL)


def _substitute(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one string; stricter than Compose: an unset bare ``${VAR}`` is an error."""

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("named")
        if name is not None:
            if name not in env:
                raise MissingVariableError(name)
            return env[name]
        braced = _BRACED.fullmatch(match.group("braced"))
        if braced is None:
            raise ValueError(f"invalid interpolation: {match.group(0)!r}")
        name, op, arg = braced.group("name", "op", "arg")
        value = env.get(name)
        if op is None:
            if value is None:
                raise MissingVariableError(name)
            return value
        missing = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return arg if missing else str(value)
        if missing:
            raise MissingVariableError(f"{name}: {arg}")
        return str(value)

    return _REFERENCE.sub(replace, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (not keys) of a loaded compose document."""
    if isinstance(node, str):
        return _substitute(node, env)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    return node


def required_variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", text))


def defaulted_variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?-", text))


def header(text: str) -> str:
    """The leading comment block of the compose file."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def command(service: Mapping[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def mounts(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every volume / bind mount, short or long syntax."""
    result = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            result.append((str(volume.get("source", "")), str(volume["target"])))
        else:
            source, target, *_ = str(volume).split(":")
            result.append((source, target))
    return result


def ports(service: Mapping[str, Any]) -> list[tuple[str | None, int, int]]:
    """(host_ip, published, target) of every published port, short or long syntax."""
    result = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            result.append((port.get("host_ip"), int(port["published"]), int(port["target"])))
            continue
        spec = str(port).split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            result.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            result.append((None, int(parts[0]), int(parts[1])))
        else:
            pytest.fail(f"port {port!r} publishes no host port")
    return result


def healthcheck_test(service: Mapping[str, Any]) -> list[str]:
    check = service.get("healthcheck") or {}
    if check.get("disable"):
        return []
    test = check.get("test", [])
    return shlex.split(test) if isinstance(test, str) else [str(part) for part in test]


def airflow_options() -> set[tuple[str, str]]:
    """(section, option) of every setting the installed Airflow knows, from its config template."""
    spec = importlib.util.find_spec("airflow")
    assert spec is not None and spec.submodule_search_locations, "apache-airflow is not installed"
    template = Path(next(iter(spec.submodule_search_locations))) / "config_templates" / "config.yml"
    sections = yaml.safe_load(template.read_text())
    return {(section, option) for section, body in sections.items() for option in body.get("options", {})}


def url_parts(url: str) -> tuple[str, str | None, int | None, str, str | None, str | None]:
    """(scheme, host, port, path, user, password). Split by hand: ``urlsplit`` drops SQLAlchemy schemes
    such as ``postgresql+psycopg_async`` (``_`` is not a URL scheme character)."""
    scheme, sep, rest = url.partition("://")
    assert sep, f"not a URL: {url!r}"
    parts = urlsplit(f"x://{rest}")
    return scheme, parts.hostname, parts.port, parts.path, parts.username, parts.password


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def raw_text() -> str:
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def raw(raw_text: str) -> dict[str, Any]:
    document = yaml.safe_load(raw_text)
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def test_env(raw_text: str) -> dict[str, str]:
    """Test-only, URL-safe values for every required variable; optional ones keep their defaults."""
    names = sorted(required_variables(raw_text))
    return {name: f"test-only-{name.lower().replace('_', '-')}" for name in names}


@pytest.fixture(scope="module")
def resolved(raw: dict[str, Any], test_env: dict[str, str]) -> dict[str, Any]:
    document = interpolate(raw, test_env)
    assert isinstance(document, dict)
    return document


# The vendored schema names draft 2019-09 by a non-canonical URI ("http://…/schema#") that jsonschema does
# not recognise: use that draft explicitly. Compose's own formats, checked as Compose does (durations, ports).
SCHEMA_VALIDATOR = jsonschema.Draft201909Validator
FORMATS = jsonschema.FormatChecker(formats=())
_DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")
_PORTS = re.compile(r"((\[[0-9a-fA-F:]+\]|[0-9.]+):)?((\d+(-\d+)?)?:)?\d+(-\d+)?(/(tcp|udp|sctp))?")


@FORMATS.checks("duration")
def _is_duration(value: object) -> bool:
    return not isinstance(value, str) or _DURATION.fullmatch(value) is not None


@FORMATS.checks("ports")
def _is_port_spec(value: object) -> bool:
    return not isinstance(value, str | int) or _PORTS.fullmatch(str(value)) is not None


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    document = json.loads(SCHEMA_FILE.read_text())
    SCHEMA_VALIDATOR.check_schema(document)
    return document


def _schema_errors(document: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    validator = SCHEMA_VALIDATOR(schema, format_checker=FORMATS)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def _compose_cli() -> tuple[list[str] | None, str]:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return [docker, "compose"], probe.stdout.strip()
    standalone = shutil.which("docker-compose")
    if standalone:
        probe = subprocess.run([standalone, "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return [standalone], probe.stdout.strip().splitlines()[0]
    return None, "neither `docker compose` (v2 plugin) nor `docker-compose` is installed"


def _cli_config(cli: list[str], env: Mapping[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    env_file = tmp / "compose.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    # A clean environment: neither exported secrets nor a developer's .env may leak into the check.
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp)}
    files = ["--project-directory", str(ROOT), "--file", str(COMPOSE_FILE), "--env-file", str(env_file)]
    return subprocess.run(
        [*cli, *files, "config"],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean,
        cwd=tmp,
    )


@pytest.fixture(scope="module")
def cli_resolved(test_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cli, description = _compose_cli()
    if cli is None:
        pytest.skip(f"no Compose CLI: {description}")
    result = _cli_config(cli, test_env, tmp_path_factory.mktemp("compose-cli"))
    assert result.returncode == 0, f"{description}: `config` failed:\n{result.stderr}"
    document = yaml.safe_load(result.stdout)
    assert isinstance(document, dict)
    return document


@pytest.fixture(params=["interpolated", "compose-cli"])
def config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The resolved compose model: from our interpolation, and from the real CLI (if installed)."""
    fixture = "resolved" if request.param == "interpolated" else "cli_resolved"
    document: dict[str, Any] = request.getfixturevalue(fixture)
    return document


# -------------------------------------------------------------------------------------- variables and secrets


def test_required_variables_are_the_documented_secrets(raw_text: str) -> None:
    required = required_variables(raw_text)
    documented_required = set(
        re.findall(r"^#   ([A-Z][A-Z0-9_]+) ", header(raw_text).split("Optional variables")[0], re.MULTILINE)
    )
    assert required == documented_required
    assert {
        "POSTGRES_PASSWORD",
        "AIRFLOW_DB_PASSWORD",
        "MLFLOW_DB_PASSWORD",
        "REDIS_PASSWORD",
        "AIRFLOW_FERNET_KEY",
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_API_SECRET_KEY",
        "AIRFLOW_ADMIN_PASSWORD",
        "SHADOWGATE_API_KEY",
        "MLFLOW_ADMIN_PASSWORD",
        "MLFLOW_API_PASSWORD",
        "MLFLOW_FLASK_SECRET_KEY",
        "SHADOWGATE_API_INGEST_KEY",
    } <= required
    undocumented_optional = {name for name in defaulted_variables(raw_text) if name not in header(raw_text)}
    assert not undocumented_optional, f"optional variables missing from the header: {undocumented_optional}"


def test_every_variable_is_either_required_or_defaulted(raw_text: str) -> None:
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", raw_text))
    assert referenced == required_variables(raw_text) | defaulted_variables(raw_text)


SOME_SECRETS = [
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "AIRFLOW_JWT_SECRET",
    "SHADOWGATE_API_KEY",
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_API_PASSWORD",
    "MLFLOW_FLASK_SECRET_KEY",
    "SHADOWGATE_API_INGEST_KEY",
]


@pytest.mark.parametrize("missing", SOME_SECRETS)
def test_a_missing_secret_is_refused(raw: dict[str, Any], test_env: dict[str, str], missing: str) -> None:
    env = {key: value for key, value in test_env.items() if key != missing}
    with pytest.raises(MissingVariableError, match=missing):
        interpolate(raw, env)
    with pytest.raises(MissingVariableError, match=missing):
        interpolate(raw, {**env, missing: ""})  # `:?` also rejects the empty string


def test_no_secret_is_written_into_the_file(raw: dict[str, Any]) -> None:
    """Secret-looking settings and URL passwords are `${VAR:?…}` references, never literals or defaults."""

    def must_be_required_reference(where: str, value: str) -> None:
        assert REQUIRED_REFERENCE.fullmatch(value), f"{where}: {value!r} is not a ${{VAR:?…}} reference"

    blocks = {f"services.{name}": environment(service) for name, service in raw["services"].items()}
    blocks |= {key: value for key, value in raw.items() if key.startswith("x-") and key.endswith("-env")}
    for where, env in blocks.items():
        for key, value in env.items():
            if SECRET_KEY_PATTERN.search(key) and not key.endswith("_FILE"):
                must_be_required_reference(f"{where}.{key}", str(value))
            # user:password@ of a URL, up to the last "@" (an uninterpolated password may hold "?" and spaces)
            if credentials := URL_CREDENTIALS.match(str(value)):
                must_be_required_reference(f"{where}.{key} (URL password)", credentials["password"])
    redis_cmd = command(raw["services"]["redis"])
    must_be_required_reference("redis --requirepass", redis_cmd[redis_cmd.index("--requirepass") + 1])


# --------------------------------------------------------------------------------------------- schema and CLI


def test_valid_against_the_compose_spec_schema(resolved: dict[str, Any], schema: dict[str, Any]) -> None:
    assert _schema_errors(resolved, schema) == []


def test_the_schema_check_rejects_broken_files(resolved: dict[str, Any], schema: dict[str, Any]) -> None:
    """Negative controls: the validation above is not vacuous."""
    typo = json.loads(json.dumps(resolved))
    typo["services"]["redis"]["healthchek"] = typo["services"]["redis"].pop("healthcheck")
    assert _schema_errors(typo, schema)
    bad_condition = json.loads(json.dumps(resolved))
    bad_condition["services"]["api"]["depends_on"]["redis"]["condition"] = "service_ready"
    assert _schema_errors(bad_condition, schema)
    unknown_top_level = {**resolved, "service": {}}
    assert _schema_errors(unknown_top_level, schema)
    bad_duration = json.loads(json.dumps(resolved))
    bad_duration["services"]["redis"]["healthcheck"]["interval"] = "10 seconds"
    assert _schema_errors(bad_duration, schema)
    bad_port = json.loads(json.dumps(resolved))
    bad_port["services"]["api"]["ports"] = ["127.0.0.1:eight-thousand:8000"]
    assert _schema_errors(bad_port, schema)


def test_compose_cli_config_accepts_the_file(cli_resolved: dict[str, Any]) -> None:
    assert set(cli_resolved["services"]) >= EXPECTED_SERVICES


def test_compose_cli_config_refuses_a_missing_secret(test_env: dict[str, str], tmp_path: Path) -> None:
    cli, description = _compose_cli()
    if cli is None:
        pytest.skip(f"no Compose CLI: {description}")
    env = {key: value for key, value in test_env.items() if key != "REDIS_PASSWORD"}
    result = _cli_config(cli, env, tmp_path)
    assert result.returncode != 0
    assert "REDIS_PASSWORD" in result.stderr


# ---------------------------------------------------------------------------------------------- the structure


def test_every_expected_service_exists(config: dict[str, Any]) -> None:
    assert set(config["services"]) >= EXPECTED_SERVICES


def test_redis_persists_with_aof(config: dict[str, Any]) -> None:
    redis = config["services"]["redis"]
    assert str(redis["image"]).startswith("redis:7")
    cmd = command(redis)
    assert cmd[0] == "redis-server"
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    data = dict((target, source) for source, target in mounts(redis))["/data"]
    assert data in config["volumes"], "the AOF must live on a named volume"


def test_postgres_initialises_both_databases(config: dict[str, Any]) -> None:
    postgres = config["services"]["postgres"]
    assert str(postgres["image"]).startswith("postgres:16")
    by_target = {target: source for source, target in mounts(postgres)}
    assert by_target["/var/lib/postgresql/data"] in config["volumes"]
    init = [(s, t) for s, t in mounts(postgres) if t.startswith("/docker-entrypoint-initdb.d/")]
    assert init, "the init script is not mounted into /docker-entrypoint-initdb.d"
    assert all((ROOT / source).resolve() == INIT_SCRIPT for source, _ in init)
    env = environment(postgres)
    assert env["AIRFLOW_DB_PASSWORD"] and env["MLFLOW_DB_PASSWORD"] and env["POSTGRES_PASSWORD"]
    script = INIT_SCRIPT.read_text()
    assert "('airflow'), ('mlflow')" in script and "CREATE DATABASE" in script and "CREATE ROLE" in script


def test_long_running_services_have_healthchecks(config: dict[str, Any]) -> None:
    for name, service in config["services"].items():
        if name in ONE_SHOT:
            assert str(service.get("restart", "no")) == "no", f"{name} is one-shot and must not restart"
            continue
        test = healthcheck_test(service)
        assert test and test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, f"{name} has no healthcheck"


def test_dependencies_exist_and_wait_for_health(config: dict[str, Any]) -> None:
    services = config["services"]
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            if target in ONE_SHOT:
                assert condition == "service_completed_successfully", f"{name} → {target}: {condition}"
            else:
                assert condition == "service_healthy", f"{name} → {target}: {condition}"
                assert healthcheck_test(services[target]), f"{name} waits for {target}: no healthcheck"
    # no cycles: Compose could never start the stack
    remaining = {name: set(depends_on(service)) for name, service in services.items()}
    while remaining:
        ready = {name for name, deps in remaining.items() if not deps & remaining.keys()}
        assert ready, f"dependency cycle among {sorted(remaining)}"
        remaining = {name: deps for name, deps in remaining.items() if name not in ready}


def test_startup_order(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in AIRFLOW_SERVICES:
        deps = depends_on(services[name])
        assert deps.get("postgres") == "service_healthy", name
        if name not in ONE_SHOT:
            assert deps.get("airflow-init") == "service_completed_successfully", name
    for name in AIRFLOW_SERVICES - ONE_SHOT - {"airflow-apiserver"}:
        assert depends_on(services[name]).get("airflow-apiserver") == "service_healthy", name
    assert depends_on(services["mlflow"]) == {"postgres": "service_healthy"}
    assert {"redis", "mlflow"} <= set(depends_on(services["api"]))


def test_published_ports(config: dict[str, Any]) -> None:
    published = {name: ports(service) for name, service in config["services"].items() if ports(service)}
    assert {name: {target for _, _, target in entries} for name, entries in published.items()} == {
        name: {port} for name, port in EXPECTED_PORTS.items()
    }
    for name, entries in published.items():
        for host_ip, host_port, target in entries:
            assert host_port == target, f"{name}: default host port {host_port} != {target}"
            assert host_ip == "127.0.0.1", f"{name} must bind to 127.0.0.1 by default, not {host_ip}"


def test_project_services_share_one_image(config: dict[str, Any]) -> None:
    services = config["services"]
    images = {services[name]["image"] for name in PROJECT_IMAGE_SERVICES}
    assert len(images) == 1
    for name in PROJECT_IMAGE_SERVICES:
        build = services[name]["build"]
        assert (ROOT / build["context"]).resolve() == ROOT, name
        assert (ROOT / build["dockerfile"]).resolve() == ROOT / "docker" / "Dockerfile", name
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.MULTILINE)
    assert "pip install --no-deps ." in dockerfile
    for folder in ("dags/", "api/", "include/", "plugins/"):
        assert re.search(rf"^COPY {folder} ", dockerfile, re.MULTILINE), folder


def test_airflow_is_configured_for_airflow_3(config: dict[str, Any]) -> None:
    services = config["services"]
    known = airflow_options()
    shared: dict[str, set[str]] = {}
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        for key, value in env.items():
            if key.startswith("AIRFLOW__"):
                section, option = key.removeprefix("AIRFLOW__").lower().split("__", 1)
                assert (section, option) in known, f"{name}: {key} is not an option of the installed Airflow"
                shared.setdefault(key, set()).add(value)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == EXECUTION_API_URL, name
        for key, scheme in (
            ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg"),
            ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC", "postgresql+psycopg_async"),
        ):
            expected = (scheme, "postgres", 5432, "/airflow", "airflow")
            assert url_parts(env[key])[:5] == expected, f"{name}: {key}"
        for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY"):
            assert env[key], f"{name}: {key} is empty"
    # Components sign and check each other's tokens: every shared setting must agree across services.
    assert {key: values for key, values in shared.items() if len(values) > 1} == {}
    for name, argv in AIRFLOW_COMMANDS.items():
        assert command(services[name]) == argv, name
    init = " ".join(command(services["airflow-init"]))
    assert "airflow db migrate" in init
    # The execution API URL names the api-server service and the port it listens on.
    url = urlsplit(EXECUTION_API_URL)
    assert url.hostname in services and url.port == 8080


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")  # raised inside mlflow
def test_mlflow_server(config: dict[str, Any]) -> None:
    from mlflow import environment_variables
    from mlflow.cli import server

    mlflow = config["services"]["mlflow"]
    cmd = command(mlflow)
    assert cmd[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in cmd
    options = {opt for param in server.params for opt in param.opts}
    assert {arg for arg in cmd if arg.startswith("--")} <= options, "unknown `mlflow server` flags"
    destination = cmd[cmd.index("--artifacts-destination") + 1]
    assert destination in {target for source, target in mounts(mlflow) if source in config["volumes"]}
    env = environment(mlflow)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    cli_envvars = {param.envvar for param in server.params if isinstance(param.envvar, str)}
    for key in env:
        assert key in cli_envvars or hasattr(environment_variables, key), f"mlflow does not read {key}"
    store = url_parts(env["MLFLOW_BACKEND_STORE_URI"])
    assert store[:5] == ("postgresql+psycopg", "postgres", 5432, "/mlflow", "mlflow")
    assert "http://localhost:5000/health" in healthcheck_test(mlflow)
    # Clients reach MLflow by service name; its DNS-rebinding guard must admit that Host header.
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    for name, service in config["services"].items():
        tracking = environment(service).get("SHADOWGATE_MLFLOW_TRACKING_URI")
        if tracking:
            assert urlsplit(tracking).netloc in allowed, f"{name} uses {tracking}: not an allowed host"
            assert urlsplit(tracking).port == 5000


def test_api_service(config: dict[str, Any]) -> None:
    services = config["services"]
    api = services["api"]
    cmd = command(api)
    assert cmd[:3] == ["uvicorn", "api.main:create_app", "--factory"]
    assert cmd[cmd.index("--port") + 1] == "8000"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert "http://localhost:8000/health/live" in healthcheck_test(api)
    for name in {"api", "airflow-scheduler"}:
        env = environment(services[name])
        redis_url = urlsplit(env["SHADOWGATE_REDIS_URL"])
        assert (redis_url.scheme, redis_url.hostname, redis_url.port) == ("redis", "redis", 6379), name
        assert redis_url.password == environment(services["redis"])["REDISCLI_AUTH"], name
        assert env["SHADOWGATE_MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        on_volumes = {target for source, target in mounts(services[name]) if source in config["volumes"]}
        assert env["SHADOWGATE_HOME"] in on_volumes, name


def _mlflow_clients(services: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The services that talk to MLflow (a tracking URI in their environment), with their environment."""
    found = {}
    for name, service in services.items():
        env = environment(service)
        if "SHADOWGATE_MLFLOW_TRACKING_URI" in env or "MLFLOW_TRACKING_URI" in env:
            found[name] = env
    return found


def test_mlflow_requires_authentication(config: dict[str, Any]) -> None:
    import configparser
    import importlib.metadata

    services = config["services"]
    mlflow = services["mlflow"]
    cmd = command(mlflow)
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    apps = {entry.name for entry in importlib.metadata.entry_points(group="mlflow.app")}
    assert "basic-auth" in apps, "the installed mlflow has no basic-auth app"
    assert importlib.util.find_spec("flask_wtf") is not None, "basic-auth needs Flask-WTF (mlflow[auth])"
    assert re.search(r"^Flask-WTF==", (ROOT / "requirements.txt").read_text(), re.MULTILINE | re.IGNORECASE)

    env = environment(mlflow)
    by_target = {target: source for source, target in mounts(mlflow)}
    ini_source = by_target[env["MLFLOW_AUTH_CONFIG_PATH"]]
    assert (ROOT / ini_source).resolve() == MLFLOW_AUTH_INI
    ini = configparser.ConfigParser()
    ini.read(MLFLOW_AUTH_INI)
    auth = ini["mlflow"]
    assert "admin_password" not in auth, "the admin password comes from a secret, never from the file"
    assert auth["default_permission"] in {"READ", "NO_PERMISSIONS"}
    assert auth["authorization_function"] == "mlflow.server.auth:authenticate_request_basic_auth"
    database = auth["database_uri"].removeprefix("sqlite:///")
    assert any(
        Path(database).parent == Path(target) and source in config["volumes"] for source, target in mounts(mlflow)
    ), "the user store must live on a named volume"
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] and env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"]

    # Every MLflow client authenticates: Airflow (trains, moves aliases) as the admin, the API as its own user.
    clients = _mlflow_clients(services)
    assert {"api", "mlflow-init"} | (AIRFLOW_SERVICES - {"airflow-init"}) <= set(clients)
    admin = (env["MLFLOW_AUTH_ADMIN_USERNAME"], env["MLFLOW_AUTH_ADMIN_PASSWORD"])
    for name, client_env in clients.items():
        assert client_env.get("MLFLOW_TRACKING_USERNAME") and client_env.get("MLFLOW_TRACKING_PASSWORD"), name
        if name.startswith("airflow-") or name == "mlflow-init":
            assert (client_env["MLFLOW_TRACKING_USERNAME"], client_env["MLFLOW_TRACKING_PASSWORD"]) == admin, name
    init, api = environment(services["mlflow-init"]), clients["api"]
    assert api["MLFLOW_TRACKING_USERNAME"] == init["MLFLOW_API_USERNAME"] != admin[0]
    assert api["MLFLOW_TRACKING_PASSWORD"] == init["MLFLOW_API_PASSWORD"] != admin[1]
    assert depends_on(services["api"])["mlflow-init"] == "service_completed_successfully"
    assert urlsplit(init["MLFLOW_TRACKING_URI"]).hostname == "mlflow"
    script = command(services["mlflow-init"])[-1]
    assert (ROOT / {t: s for s, t in mounts(services["mlflow-init"])}[script]).resolve() == MLFLOW_USERS_SCRIPT


def test_named_volumes_are_declared(config: dict[str, Any]) -> None:
    declared = set(config.get("volumes") or {})
    for name, service in config["services"].items():
        for source, _ in mounts(service):
            if source and not source.startswith(("/", ".", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


# ----------------------------------------------------------------------------------- the postgres init script


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture
def throwaway_postgres() -> Iterator[dict[str, str]]:
    """A private PostgreSQL cluster on a free port (superuser `postgres`; socket: trust, TCP: scram)."""
    binaries = {name: _postgres_bin(name) for name in ("initdb", "pg_ctl", "psql")}
    if not all(binaries.values()):
        pytest.skip(f"PostgreSQL server binaries not installed: {binaries}")
    as_server_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser: cannot start a throwaway PostgreSQL")
        as_server_user = [runuser, "-u", "nobody", "--"]
    workdir = Path(tempfile.mkdtemp(prefix="sg-compose-pg-"))
    workdir.chmod(0o777)
    superuser_password = workdir / "superuser-password"
    superuser_password.write_text("test-only-superuser")
    superuser_password.chmod(0o644)
    data, port = workdir / "data", free_port()

    def run(args: list[str]) -> None:
        result = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{shlex.join(args)}:\n{result.stdout}\n{result.stderr}"

    run(
        [
            *as_server_user,
            *(str(binaries["initdb"]), "-D", str(data), "-U", "postgres", f"--pwfile={superuser_password}"),
            *("--auth-local=trust", "--auth-host=scram-sha-256"),
        ]
    )
    pg_ctl = [*as_server_user, str(binaries["pg_ctl"]), "-D", str(data)]
    server_options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1"
    run([*pg_ctl, "-o", server_options, "-l", str(workdir / "log"), "-w", "start"])
    try:
        yield {"socket_dir": str(workdir), "port": str(port), "psql": str(binaries["psql"])}
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


def test_init_script_creates_both_databases_idempotently(throwaway_postgres: dict[str, str]) -> None:
    pg = throwaway_postgres
    passwords = {"airflow": "test-only-air'flow", "mlflow": "test-only-ml$flow"}
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PGHOST": pg["socket_dir"],
        "PGPORT": pg["port"],
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres",
        "AIRFLOW_DB_PASSWORD": passwords["airflow"],
        "MLFLOW_DB_PASSWORD": passwords["mlflow"],
    }
    for _ in range(2):  # the second run must be a no-op, not an error
        result = subprocess.run(["bash", INIT_SCRIPT], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr

    def connect(user: str, database: str, password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(pg["psql"], "--no-psqlrc", "-h", "127.0.0.1", "-p", pg["port"], "-U", user, "-d", database),
                *("-Atc", "SELECT current_user, current_database(), has_schema_privilege('public','CREATE')"),
            ],
            env={"PATH": env["PATH"], "PGPASSWORD": password},
            capture_output=True,
            text=True,
            timeout=60,
        )

    for user, password in passwords.items():
        own = connect(user, user, password)
        assert own.returncode == 0, own.stderr
        assert own.stdout.strip() == f"{user}|{user}|t"  # owner of its database, can create its tables
        assert connect(user, user, "wrong").returncode != 0
    assert connect("mlflow", "airflow", passwords["mlflow"]).returncode != 0, "mlflow reached airflow's db"
    assert connect("airflow", "mlflow", passwords["airflow"]).returncode != 0, "airflow reached mlflow's db"


# ----------------------------------------------------------------------------------- MLflow authentication, live


@pytest.fixture
def auth_server(resolved: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real ``mlflow server`` started with the compose file's MLflow command options and auth settings.

    The shipped basic_auth.ini is used as is, but for its user store path (a container path) and the backend store
    (PostgreSQL in compose: SQLite here).
    """
    mlflow = resolved["services"]["mlflow"]
    env = environment(mlflow)
    ini = tmp_path / "basic_auth.ini"
    shipped = MLFLOW_AUTH_INI.read_text()
    database = re.search(r"^database_uri = (.*)$", shipped, re.MULTILINE)
    assert database is not None
    ini.write_text(shipped.replace(database.group(1), f"sqlite:///{tmp_path / 'basic_auth.db'}"))
    port = free_port()
    cmd = command(mlflow)
    app = cmd[cmd.index("--app-name") + 1]
    server_env = {
        **os.environ,
        **{key: value for key, value in env.items() if key.startswith("MLFLOW_AUTH_") or "FLASK" in key},
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        server_env.pop(key, None)
    args = [sys.executable, "-m", "mlflow", "server", "--app-name", app, "--host", "127.0.0.1", "--port", str(port)]
    args += ["--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    args += ["--artifacts-destination", str(tmp_path / "artifacts")]
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(args, env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while _status(f"{url}/health") != 200:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not become healthy"
            time.sleep(0.5)
        yield {
            "url": url,
            "admin_user": env["MLFLOW_AUTH_ADMIN_USERNAME"],
            "admin_password": env["MLFLOW_AUTH_ADMIN_PASSWORD"],
        }
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()


def _status(url: str, *, auth: tuple[str, str] | None = None, json_body: dict[str, Any] | None = None) -> int:
    import httpx

    try:
        if json_body is None:
            return httpx.get(url, auth=auth, timeout=10).status_code
        return httpx.post(url, auth=auth, json=json_body, timeout=10).status_code
    except httpx.HTTPError:
        return 0


def test_a_real_mlflow_server_with_the_compose_auth_settings_refuses_anonymous_and_read_only_writes(
    auth_server: dict[str, str], resolved: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from shadowgate.serving.models import MlflowModelSource

    url = auth_server["url"]
    admin = (auth_server["admin_user"], auth_server["admin_password"])
    search = f"{url}/api/2.0/mlflow/registered-models/search"
    assert _status(f"{url}/health") == 200  # the compose healthcheck needs no credentials
    assert _status(search) == 401
    assert _status(search, auth=(admin[0], "wrong-password-123")) == 401
    assert _status(search, auth=admin) == 200

    # mlflow-init, with the compose file's environment (pointed at this server), twice: it is idempotent.
    init_env = {**environment(resolved["services"]["mlflow-init"]), "MLFLOW_TRACKING_URI": url}
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, str(MLFLOW_USERS_SCRIPT)],
            env={**os.environ, **init_env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
    api_env = environment(resolved["services"]["api"])
    reader = (api_env["MLFLOW_TRACKING_USERNAME"], api_env["MLFLOW_TRACKING_PASSWORD"])

    # The admin (Airflow) registers a version and points @champion at it.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
    writer = MlflowClient(tracking_uri=url, registry_uri=url)
    writer.create_registered_model("bnpl_default")
    run = writer.create_run(writer.create_experiment("training"))
    source = f"{run.info.artifact_uri}/model"
    version = writer.create_model_version("bnpl_default", source=source, run_id=run.info.run_id).version
    writer.set_registered_model_alias("bnpl_default", "champion", version)

    # The API's user follows the alias but cannot move it, nor register a version.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", reader[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", reader[1])
    ref = MlflowModelSource(tracking_uri=url, model_name="bnpl_default").resolve("champion")
    assert ref is not None and ref.version == str(version)
    api_client = MlflowClient(tracking_uri=url, registry_uri=url)
    with pytest.raises(MlflowException, match="Permission denied"):
        api_client.set_registered_model_alias("bnpl_default", "champion", version)
    with pytest.raises(MlflowException, match="Permission denied"):
        api_client.create_model_version("bnpl_default", source=source, run_id=run.info.run_id)
    alias = {"name": "bnpl_default", "alias": "challenger", "version": str(version)}
    assert _status(f"{url}/api/2.0/mlflow/registered-models/alias", auth=reader, json_body=alias) == 403
