"""``shadowgate`` commands: simulate, replay, plan-experiment, train, bootstrap, record-deployments, rollback,
up/down/status,
trigger/backfill (the local Airflow over REST), bench."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from shadowgate.config import (
    DriftScenario,
    MLflowSettings,
    PathSettings,
    SimulationSettings,
    TrainingSettings,
    WarehouseSettings,
)

app = typer.Typer(help="shadowgate: safe champion/challenger credit-risk serving for BNPL.", no_args_is_help=True)
bench_app = typer.Typer(help="Micro-benchmarks that print figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _progress(description: str) -> Any:
    from tqdm import tqdm

    def wrap(iterator: Any, total: int) -> Any:
        return tqdm(iterator, total=total, desc=description, unit="chunk")

    return wrap


def _repo_root() -> Path:
    """The project folder: the nearest parent of the working directory holding pyproject.toml and dags/."""
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").exists() and (candidate / "dags").is_dir():
            return candidate
    raise typer.BadParameter(f"run this from the shadowgate project folder (no pyproject.toml + dags/ above {here})")


def _operator() -> str:
    """Who runs this command, for the audit trail: ``user@host``."""
    import getpass
    import socket

    return f"{getpass.getuser()}@{socket.gethostname()}"


def _fail(message: str, *, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=code)


def _deployment_log() -> Any:
    """Where alias moves are recorded: the warehouse the settings name (SHADOWGATE_WAREHOUSE_*)."""
    from shadowgate.storage.deployments import WarehouseDeploymentLog

    return WarehouseDeploymentLog.from_settings(WarehouseSettings(), home=PathSettings().home)


@contextlib.contextmanager
def _registry_errors() -> Iterator[None]:
    """A refused alias move or an unrecorded one ends the command with its message and exit 1."""
    from shadowgate.registry import AliasMoveRefusedError, DeploymentNotRecordedError

    try:
        yield
    except AliasMoveRefusedError as error:
        raise _fail(f"refused: {error}") from None
    except DeploymentNotRecordedError as error:
        raise _fail(str(error)) from None


@contextlib.contextmanager
def _stack_errors() -> Iterator[None]:
    """A StackError (port taken, service unhealthy, failed bootstrap) ends the command with its message and exit 1."""
    from shadowgate.local.stack import StackError

    try:
        yield
    except StackError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None


def _simulation_settings(**overrides: Any) -> SimulationSettings:
    given = {k: v for k, v in overrides.items() if v is not None}
    return SimulationSettings(**{**SimulationSettings().model_dump(), **given})


@app.command()
def simulate(
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <SHADOWGATE_HOME>/data).")] = None,
    transactions: Annotated[int | None, typer.Option(help="Purchase attempts in the window.")] = None,
    customers: Annotated[int | None, typer.Option()] = None,
    days: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    scenario: Annotated[DriftScenario | None, typer.Option()] = None,
    drift_start_day: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Simulate BNPL purchases and their outcomes; write transactions, outcomes and labels as Parquet."""
    from shadowgate.simulation import simulate as run_simulation
    from shadowgate.simulation import write_parquet

    settings = _simulation_settings(
        transactions=transactions,
        customers=customers,
        days=days,
        seed=seed,
        scenario=scenario,
        drift_start_day=drift_start_day,
    )
    target = out or PathSettings().data_dir
    started = time.perf_counter()
    result = run_simulation(settings, progress=_progress("simulating"))
    elapsed = time.perf_counter() - started
    written = write_parquet(result, target)
    typer.echo(
        f"simulated {len(result.transactions):,} purchases, {len(result.outcomes):,} outcome events "
        f"(default rate {result.labels['is_default'].mean():.4f}, scenario {settings.scenario.value}) "
        f"in {elapsed:.1f} s"
    )
    for table, path in written.items():
        typer.echo(f"  {table:<13} {path}")


class _RichProgress:
    """A replay's passes as rich progress bars (on stderr: the summary goes to stdout)."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress
        self._tasks: dict[str, Any] = {}

    def start(self, phase: str, total: int) -> None:
        self._tasks[phase] = self._progress.add_task(phase, total=total)

    def advance(self, phase: str, count: int = 1) -> None:
        self._progress.advance(self._tasks[phase], count)


def _replay_source(data: Path | None, **world: Any) -> dict[str, Any]:
    """The tables a replay sends: simulated now when a simulation option is given, else read from ``data``."""
    from shadowgate.simulation import read_parquet
    from shadowgate.simulation import simulate as run_simulation

    if all(v is None for v in world.values()):
        folder = data or PathSettings().data_dir
        if not (folder / "transactions.parquet").is_file():
            raise _fail(
                f"no simulated history in {folder}: run `shadowgate simulate` (or `make up`), pass --data, or "
                "simulate on the fly with --transactions/--days/--seed"
            )
        return read_parquet(folder)
    if data is not None:
        raise _fail("either --data or the simulation options (--transactions, --days, ...), not both", code=2)
    if world["days"] is not None and world["drift_start_day"] is None and world["scenario"] is None:
        # No scenario: the drift day does nothing, so a short window need not name one inside it.
        world["drift_start_day"] = min(SimulationSettings().drift_start_day, world["days"])
    try:
        settings = _simulation_settings(**world)
    except ValueError as error:
        raise _fail(f"invalid simulation options: {error}", code=2) from None
    began = time.perf_counter()
    result = run_simulation(settings)
    typer.echo(f"simulated {len(result.transactions):,} purchases in {time.perf_counter() - began:.1f} s")
    return {"transactions": result.transactions, "outcomes": result.outcomes}


_INSTANT_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S"]


@app.command()
def replay(
    data: Annotated[
        Path | None,
        typer.Option(help="Folder with simulated Parquet tables (default: <SHADOWGATE_HOME>/data, seeded by make up)."),
    ] = None,
    transactions: Annotated[
        int | None, typer.Option(help="Simulate on the fly instead of reading --data: purchase attempts.")
    ] = None,
    customers: Annotated[int | None, typer.Option(help="Simulate on the fly: customer base.")] = None,
    days: Annotated[int | None, typer.Option(help="Simulate on the fly: window length in days.")] = None,
    seed: Annotated[int | None, typer.Option(help="Simulate on the fly: seed.")] = None,
    start: Annotated[
        dt.datetime | None,
        typer.Option(formats=["%Y-%m-%d"], metavar="DATE", help="Simulate on the fly: first day of the window."),
    ] = None,
    scenario: Annotated[DriftScenario | None, typer.Option(help="Simulate on the fly: drift scenario.")] = None,
    drift_start_day: Annotated[int | None, typer.Option(help="Simulate on the fly: day the scenario starts.")] = None,
    from_: Annotated[
        dt.datetime | None,
        typer.Option(
            "--from",
            formats=_INSTANT_FORMATS,
            metavar="INSTANT",
            help="Replay purchases from this instant (UTC unless an offset is given; a date is its midnight). "
            "Default: the first purchase.",
        ),
    ] = None,
    to: Annotated[
        dt.datetime | None,
        typer.Option(
            formats=_INSTANT_FORMATS,
            metavar="INSTANT",
            help="...up to this instant, not included (YYYY-MM-DD[THH:MM:SS[+HH:MM]]). Default: past the last one.",
        ),
    ] = None,
    api_url: Annotated[
        str | None, typer.Option(help="The decision API (default: the local stack's, http://127.0.0.1:<API port>).")
    ] = None,
    ingest_key: Annotated[
        str | None,
        typer.Option(
            help="X-Ingest-Key for outcomes (default: SHADOWGATE_API_INGEST_KEY, else the key `make up` made under "
            "<SHADOWGATE_HOME>/secrets). Prefer the variable: a command line is visible to other users."
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Requests in flight (one connection each).")] = 8,
    rate: Annotated[
        float | None, typer.Option(min=0.1, help="At most this many requests per second (default: no limit).")
    ] = None,
    outcomes: Annotated[
        bool, typer.Option("--outcomes/--no-outcomes", help="Send the outcomes of approved purchases after.")
    ] = True,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds one attempt may take.")] = 10.0,
    max_attempts: Annotated[
        int, typer.Option(min=1, help="Attempts per request after a 503 or a connection error.")
    ] = 8,
) -> None:
    """Send a simulated period through the running API: every purchase as a decision at its simulated time, then
    the outcomes of the purchases the API approved (denied and manual-review ones were never funded).

    Exit 1 when the API cannot be used (not answering, not ready, ingest key refused: nothing is sent) or when a
    request failed; the summary lists errors by status with the first answer.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from shadowgate.simulation.replay import Replayer, ReplayError, RetryPolicy
    from shadowgate.simulation.replay import replay as run_replay

    tables = _replay_source(
        data,
        transactions=transactions,
        customers=customers,
        days=days,
        seed=seed,
        start=start.date() if start else None,
        scenario=scenario,
        drift_start_day=drift_start_day,
    )
    if api_url is None or (outcomes and ingest_key is None):
        from shadowgate.local.stack import local_api

        local = local_api(repo_root=_repo_root())
        api_url = api_url or local.url
        ingest_key = ingest_key or local.ingest_key
    console = Console(stderr=True)
    columns = (TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as bars:
            summary = run_replay(
                transactions=tables["transactions"],
                outcomes=tables["outcomes"],
                replayer=Replayer(
                    api_url=api_url,
                    ingest_key=ingest_key if outcomes else None,
                    concurrency=concurrency,
                    rate=rate,
                    timeout_s=timeout,
                    retry=RetryPolicy(max_attempts=max_attempts),
                    progress=_RichProgress(bars),
                ),
                start=from_,  # naive instants are UTC
                end=to,
                send_outcomes=outcomes,
            )
    except ReplayError as error:
        raise _fail(str(error)) from None
    typer.echo(summary.render())
    if summary.stopped and summary.stopped.endswith("interrupted"):
        raise typer.Exit(code=130)
    if not summary.ok:
        problems = [f"{summary.error_count:,} request(s) failed"] if summary.errors else []
        problems += [f"stopped early ({summary.stopped})"] if summary.stopped else []
        raise _fail("; ".join(problems))


@app.command()
def train(
    kind: Annotated[str, typer.Option(help="Model family: gradient-boosting or scorecard.")] = "gradient-boosting",
    alias: Annotated[
        str | None,
        typer.Option(
            help="Alias for the new version (default: challenger). @champion only while it is not set (the first "
            "deployment): the promotion gate and `shadowgate rollback` move it."
        ),
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Who moves the alias (recorded; default: user@host).")] = None,
    data: Annotated[Path | None, typer.Option(help="Folder with the simulated Parquet tables.")] = None,
    as_of: Annotated[
        dt.datetime | None, typer.Option(help="Train as of this instant (UTC); default: end of history.")
    ] = None,
) -> None:
    """Train, log to MLflow and register a model version under @challenger (or the given non-champion alias).

    @champion never moves here once it is set: only the promotion gate (the promote_challenger DAG) and
    `shadowgate rollback` move it. `--alias champion` is refused then.
    """
    from shadowgate.local.bootstrap import history_as_of
    from shadowgate.registry import CHALLENGER
    from shadowgate.simulation import read_parquet
    from shadowgate.training.train import ModelKind, train_and_register

    kinds = {"scorecard": ModelKind.SCORECARD, "gradient-boosting": ModelKind.GRADIENT_BOOSTING}
    if kind not in kinds:
        raise typer.BadParameter(f"kind must be one of {sorted(kinds)}")
    target = alias or CHALLENGER
    tables = read_parquet(data or PathSettings().data_dir)
    instant = as_of.replace(tzinfo=dt.UTC) if as_of else history_as_of(SimulationSettings())
    with _registry_errors():
        result = train_and_register(
            transactions=tables["transactions"],
            outcomes=tables["outcomes"],
            kind=kinds[kind],
            as_of=instant,
            alias=target,
            training=TrainingSettings(),
            mlflow_settings=MLflowSettings(),
            deployments=_deployment_log(),
            actor=actor or _operator(),
        )
    typer.echo(
        f"{result.kind.value}: version {result.model_version} @{result.alias}  valid AUC {result.metrics.auc:.4f}  "
        f"(train {result.n_train:,} / valid {result.n_valid:,} rows, run {result.run_id})"
    )


@app.command("plan-experiment")
def plan_experiment(
    decisions_per_week: Annotated[float, typer.Option(min=1, help="decisions the API makes per week")],
    default_rate: Annotated[
        float, typer.Option(min=0.0001, max=0.9999, help="share of approved purchases that default (final label)")
    ],
    champion_auc: Annotated[
        float, typer.Option(min=0.5, max=0.999, help="the champion's AUC on approved, matured purchases")
    ],
    margin: Annotated[
        float | None, typer.Option(min=0.0, max=0.49, help="δ (default: SHADOWGATE_EVALUATION_AUC_MARGIN)")
    ] = None,
    mde: Annotated[
        float | None,
        typer.Option(min=0.0001, max=0.49, help="gain beyond δ to find (default: …_MINIMUM_DETECTABLE_AUC_DIFFERENCE)"),
    ] = None,
    approval_rate: Annotated[float, typer.Option(min=0.01, max=1.0, help="share of decisions approved")] = 0.9,
    correlation: Annotated[
        float, typer.Option(min=-0.99, max=0.99, help="within-class correlation of the two models' scores")
    ] = 0.85,
    challengers: Annotated[int, typer.Option(min=1, help="challengers compared with the champion (α split)")] = 1,
    max_looks: Annotated[int | None, typer.Option(min=1, help="default: SHADOWGATE_EVALUATION_MAX_LOOKS")] = None,
    simulate: Annotated[int, typer.Option(min=0, help="also simulate this many experiments per scenario")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
    as_json: Annotated[Path | None, typer.Option("--json", help="write the figures to this JSON file")] = None,
) -> None:
    """How long until we can know: the plan a comparison of this size gets, its looks and, with --simulate, its
    error rates measured on simulated experiments (A/A, a near twin, the margin, H1), peeking weekly as the DAG does."""
    import dataclasses

    from shadowgate.config import EvaluationSettings, GroundTruthSettings
    from shadowgate.evaluation.planning import plan_experiment as make_plan
    from shadowgate.evaluation.planning import simulate_experiments

    settings = EvaluationSettings()
    summary = make_plan(
        decisions_per_week=decisions_per_week,
        default_rate=default_rate,
        champion_auc=champion_auc,
        margin=settings.auc_margin if margin is None else margin,
        mde=settings.minimum_detectable_auc_difference if mde is None else mde,
        alpha=settings.alpha,
        power=settings.power,
        max_looks=settings.max_looks if max_looks is None else max_looks,
        correlation=correlation,
        approval_rate=approval_rate,
        comparisons=challengers,
        futility=settings.futility,
        label_delay_days=GroundTruthSettings().maturity_days,
    )
    plan, info = summary.plan, summary.info
    typer.echo(f"plan: {plan.describe()}")
    typer.echo(
        f"per week: {info.defaults:,.0f} defaults and {info.repaid:,.0f} repaid purchases labelled; SE of a week's "
        f"ΔAUC {info.se:.4f} (information {info.information:,.0f} a week)"
    )
    typer.echo(
        f"information needed: {plan.max_information:,.0f} ({plan.max_information / plan.fixed_information:.3f}× the "
        f"{plan.fixed_information:,.0f} of a single test at the end, which needs {summary.fixed_horizon_weeks} weeks "
        "of data)"
    )
    delay = summary.label_delay_days
    typer.echo(f"looks (weeks of data; calendar weeks after the start, with the {delay}-day label delay):")
    for look in summary.looks:
        futility = look["futility_z"]
        typer.echo(
            f"  look {look['look']:>2}: week {look['data_weeks']:>3} (calendar {look['calendar_weeks']:>3}), "
            f"information {look['information_fraction']:6.1%}: superior if z ≥ {look['efficacy_z']:.2f} "
            f"(ΔAUC ≥ {look['superior_if_delta_at_least']:.4f})"
            + (
                f", futile if z < {futility:.2f} (ΔAUC < {look['futile_if_delta_below']:.4f})"
                if math.isfinite(futility) and look is not summary.looks[-1]
                else ""
            )
        )
    end = summary.looks[-1]
    typer.echo(
        f"the plan ends by week {summary.weeks_to_end} of data (calendar week {end['calendar_weeks']})"
        + (
            ""
            if summary.reaches_max_information
            else " — SHORT of its information: raise --max-looks, or power is lower"
        )
    )
    out: dict[str, Any] = {
        "plan": dataclasses.asdict(plan),
        "weekly": dataclasses.asdict(info),
        "looks": summary.looks,
        "weeks_to_end": summary.weeks_to_end,
        "fixed_horizon_weeks": summary.fixed_horizon_weeks,
        "reaches_max_information": summary.reaches_max_information,
    }
    if simulate:
        started = time.perf_counter()
        rates = simulate_experiments(plan, info, experiments=simulate, seed=seed)
        elapsed = time.perf_counter() - started
        typer.echo(f"simulated {simulate:,} experiments per scenario, {rates.weeks_simulated} weekly looks each:")
        for name, rate, mc in (
            ("A/A (ΔAUC = 0): superior", rates.aa_superior_rate, rates.aa_superior_mc_error),
            (
                f"near twin (ΔAUC = δ/2 = {plan.margin / 2:g}): superior",
                rates.twin_superior_rate,
                rates.twin_superior_mc_error,
            ),
            (
                f"at the margin (ΔAUC = δ = {plan.margin:g}): superior",
                rates.margin_superior_rate,
                rates.margin_superior_mc_error,
            ),
            (f"H1 (ΔAUC = δ + MDE = {plan.margin + plan.mde:g}): superior", rates.h1_power, rates.h1_power_mc_error),
            ("A/A: stopped early for futility", rates.futility_rate, rates.futility_mc_error),
        ):
            typer.echo(f"  {name:<48} {rate:7.2%} ± {mc:.2%}")
        typer.echo(
            f"  weeks of data to a verdict: H1 {rates.h1_mean_weeks:.2f}, A/A {rates.aa_mean_weeks:.2f}; a single test "
            f"needs {rates.fixed_horizon_weeks} (H1 {rates.h1_weeks_vs_fixed:.2f}× that)   [{elapsed:.1f} s]"
        )
        out.update(dataclasses.asdict(rates))
    if as_json is not None:
        as_json.write_text(json.dumps(out, indent=2, default=float))
        typer.echo(f"wrote {as_json}")


@app.command("record-deployments")
def record_deployments(
    alias: Annotated[
        list[str] | None, typer.Option(help="Alias whose recorded move to send (repeatable; default: all fixed ones).")
    ] = None,
) -> None:
    """Send the recorded move of each alias (MLflow tags) to the warehouse again; each is stored once.

    Completes an alias move whose warehouse write failed (the move itself is already in effect).
    """
    from shadowgate.registry import ALIASES, ModelRegistry

    settings = MLflowSettings()
    registry = ModelRegistry(
        tracking_uri=settings.tracking_uri, model_name=settings.model_name, deployments=_deployment_log()
    )
    with _registry_errors():
        events = registry.resend_recorded(alias or ALIASES)
    for event in events:
        typer.echo(
            f"@{event.alias}: {event.from_version} -> {event.to_version} ({event.action} by {event.actor} at "
            f"{event.occurred_at.isoformat()}, event {event.event_id})"
        )
    typer.echo(f"{len(events)} recorded move(s) sent")


@app.command()
def rollback(
    reason: Annotated[
        str, typer.Option(help="Why, in at least 20 characters (a ticket id alone is not a reason): recorded.")
    ],
) -> None:
    """Move @champion back to @previous (the champion before the last promotion) and remove @previous.

    Audited like every alias move (a deployment_events row, tags on the versions); the running API swaps within its
    registry poll (SHADOWGATE_SERVING_MODEL_POLL_INTERVAL_S), answering every request meanwhile.
    """
    from shadowgate.registry import ModelRegistry

    settings = MLflowSettings()
    registry = ModelRegistry(
        tracking_uri=settings.tracking_uri, model_name=settings.model_name, deployments=_deployment_log()
    )
    with _registry_errors():
        events = registry.rollback(reason=reason, actor=_operator())
    for event in events:
        typer.echo(f"@{event.alias}: {event.from_version} → {event.to_version or '(removed)'}  [{event.event_id}]")
    typer.echo(f"serving after the next poll: {registry.aliases()}")


@app.command()
def demo() -> None:
    """The whole loop on the running local stack (`make up` first): replay the weeks after the seeded history through
    the API, upload, label and evaluate them through Airflow, and let the promotion gate decide; then say where to
    look. About 10-20 minutes on 2 cores."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from shadowgate.local import stack
    from shadowgate.local.bootstrap import history_as_of
    from shadowgate.local.demo import PURCHASES_PER_DAY, SEED, demo_window, run_demo
    from shadowgate.registry import ModelRegistry
    from shadowgate.simulation import simulate as run_simulation
    from shadowgate.simulation.replay import Replayer, ReplayError
    from shadowgate.simulation.replay import replay as run_replay

    started = time.monotonic()
    root = _repo_root()
    layout = stack.Layout.resolve(root)
    state = stack.status(repo_root=root)
    if not state.healthy:
        raise _fail("the local stack is not (all) running: `make up` first\n" + state.render())
    marker = layout.run_dir / "demo.json"
    if marker.exists():
        raise _fail(
            f"the demo ran on this stack already ({marker}): its weeks are replayed and labelled. For a fresh one: "
            "`make down`, remove the state folder (.shadowgate/), `make up`, `make demo`"
        )
    try:
        window = demo_window(history_end=history_as_of(SimulationSettings()).date(), today=dt.date.today())
    except ValueError as error:
        raise _fail(str(error)) from None
    local = stack.local_api(repo_root=root)
    console = Console(stderr=True)

    def replay_window(w: Any) -> str:
        days = w.weeks * 7
        settings = SimulationSettings(
            transactions=PURCHASES_PER_DAY * days, customers=PURCHASES_PER_DAY * days // 10, days=days,
            seed=SEED, start=w.start, drift_start_day=days,
        )  # fmt: skip
        world = run_simulation(settings)
        columns = (TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as bars:
            summary = run_replay(
                transactions=world.transactions,
                outcomes=world.outcomes,
                replayer=Replayer(api_url=local.url, ingest_key=local.ingest_key, progress=_RichProgress(bars)),
            )
        typer.echo(summary.render())
        if not summary.ok:
            raise _fail("the replay did not go through: see above")
        return f"{summary.decisions_answered:,} decisions, {summary.outcomes_sent:,} outcomes"

    settings = MLflowSettings(tracking_uri=layout.mlflow_url)
    registry = ModelRegistry(tracking_uri=settings.tracking_uri, model_name=settings.model_name)
    with _local_airflow() as airflow:
        try:
            report = run_demo(
                airflow=airflow,
                api_url=local.url,
                registry=registry,
                window=window,
                replay=replay_window,
                say=lambda line: typer.secho(line, bold=True),
            )
        except ReplayError as error:
            raise _fail(str(error)) from None
    marker.write_text(
        json.dumps(
            {"window": str(window.start), "weeks": window.weeks, "steps": report.steps, "decision": report.decision},
            default=str,
        )
    )
    typer.echo("")
    for name, seconds, what in report.steps:
        typer.echo(f"{name:<11} {seconds:7.0f} s  {what}")
    typer.echo(f"{'total':<11} {time.monotonic() - started:7.0f} s")
    decision = report.decision or {}
    typer.echo("")
    typer.secho(f"gate: {decision.get('summary', 'no decision recorded')}", bold=True)
    for gate in decision.get("gates") or []:
        typer.echo(f"  {gate['gate']:<14} {'pass' if gate['passed'] else 'FAIL'}  {gate['reason']}")
    typer.echo(
        f"@champion: version {report.champion_before} → {report.champion_after}; @previous: {report.previous}; "
        f"the API serves champion version {_served(local.url)}"
    )
    mlflow_ui = f"{layout.mlflow_url}/#/experiments?workflowType=machine_learning"
    typer.echo(
        "\nWhere to look:\n"
        f"  Airflow  {layout.airflow_url}/dags/weekly_performance/runs   (the weekly comparisons, each with its note)\n"
        f"           {layout.airflow_url}/dags/promote_challenger/runs/{report.promote_run}   (the decision, gate by "
        "gate)\n"
        f"  MLflow   {mlflow_ui}   (shadowgate/shadow-challenger: the weekly comparisons; shadowgate/promotion: the "
        "decision with every gate; Models → bnpl_default: the aliases and their recorded moves)\n"
        f"  API      curl {local.url}/v1/models"
    )
    if report.champion_after == report.champion_before:
        raise _fail("no promotion: the gate's decision is above (the plan may need more weeks)")


def _served(api_url: str) -> str | None:
    from shadowgate.local.demo import served_champion

    try:
        return served_champion(api_url)
    except Exception:  # the summary must print even when the API went away
        return None


@app.command()
def bootstrap() -> None:
    """Seed simulated history if missing and register the first champion and challenger if their aliases are unset."""
    from shadowgate.local.bootstrap import bootstrap as run_bootstrap

    paths = PathSettings()
    with _registry_errors():
        summary = run_bootstrap(
            paths.data_dir,
            simulation=SimulationSettings(),
            training=TrainingSettings(),
            mlflow_settings=MLflowSettings(),
            deployments=_deployment_log(),
            actor=f"shadowgate bootstrap ({_operator()})",
            progress=_progress("seeding history"),
        )
    typer.echo(f"history: {'simulated' if summary.simulated else 'already present'} in {paths.data_dir}")
    for alias, result in summary.trained.items():
        typer.echo(
            f"trained {result.kind.value}: version {result.model_version} @{alias}, valid AUC {result.metrics.auc:.4f}"
            + (f"\n  MLflow: {result.mlflow_url}" if result.mlflow_url else "")
        )
    typer.echo(f"aliases: {json.dumps(summary.aliases)}")


@app.command()
def up(
    skip_bootstrap: Annotated[bool, typer.Option("--skip-bootstrap", help="Start services only.")] = False,
) -> None:
    """Start the local stack on embedded defaults (Redis, MLflow, Airflow, API) and bootstrap it."""
    from shadowgate.local import stack

    with _stack_errors():
        status = stack.up(repo_root=_repo_root(), bootstrap=not skip_bootstrap)
    typer.echo(status.render())


@app.command()
def down() -> None:
    """Stop everything `up` started (by process group) and leave no process behind."""
    from shadowgate.local import stack

    with _stack_errors():
        stopped = stack.down(repo_root=_repo_root())
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command()
def status() -> None:
    """Show each local service: pid, URL, health."""
    from shadowgate.local import stack

    typer.echo(stack.status(repo_root=_repo_root()).render())


def _local_airflow() -> Any:
    """A logged-in REST client of the local stack's Airflow (the credentials `make up` printed)."""
    from shadowgate.local import stack
    from shadowgate.local.airflow_rest import AirflowRest, AirflowRestError

    state = stack.status(repo_root=_repo_root())
    layout = stack.Layout.resolve(_repo_root())
    if not state[stack.AIRFLOW_API_SERVER].healthy or not state.airflow_password:
        raise _fail(f"the local Airflow does not answer at {layout.airflow_url}: run `make up`")
    try:
        return AirflowRest(layout.airflow_url, username=stack.AIRFLOW_USER, password=state.airflow_password)
    except AirflowRestError as error:
        raise _fail(str(error)) from None


_DATE = ["%Y-%m-%d"]


class Reprocess(StrEnum):
    """What a backfill does with runs that exist already (Airflow's ``reprocess_behavior``)."""

    NONE = "none"
    FAILED = "failed"
    COMPLETED = "completed"


@app.command()
def trigger(
    dag_id: Annotated[str, typer.Argument(help="The Dag to run now, e.g. upload_predictions.")],
    wait: Annotated[bool, typer.Option(help="Wait for the run and report it (exit 1 unless it succeeded).")] = True,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds to wait.")] = 3600.0,
) -> None:
    """Trigger one run of a Dag on the local Airflow (REST API, as the UI's Trigger button does)."""
    from shadowgate.local.airflow_rest import AirflowRestError

    with _local_airflow() as airflow:
        try:
            airflow.wait_for_dag(dag_id)
            run_id = airflow.trigger(dag_id)
            typer.echo(f"{dag_id}: triggered {run_id}")
            if wait:
                report = airflow.wait_for_runs(dag_id, run_ids={run_id}, timeout_s=timeout)
                typer.echo(report.render())
                if report.states != {"success": 1}:
                    raise typer.Exit(1)
        except AirflowRestError as error:
            raise _fail(str(error)) from None


@app.command()
def backfill(
    dag_id: Annotated[str, typer.Argument(help="The Dag, e.g. join_ground_truth or weekly_performance.")],
    from_: Annotated[
        dt.datetime, typer.Option("--from", formats=_DATE, metavar="DATE", help="First data interval start (UTC).")
    ],
    to: Annotated[dt.datetime, typer.Option(formats=_DATE, metavar="DATE", help="Last data interval start (UTC).")],
    max_active_runs: Annotated[int, typer.Option(min=1, max=64, help="Runs of the backfill at a time.")] = 4,
    reprocess: Annotated[
        Reprocess, typer.Option(help="Existing runs: none (keep), failed (redo failed), completed (redo all).")
    ] = Reprocess.COMPLETED,
    wait: Annotated[bool, typer.Option(help="Wait for every run and report (exit 1 unless all succeeded).")] = True,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds to wait.")] = 7200.0,
) -> None:
    """Backfill a Dag on the local Airflow (REST API, as the UI's Backfill dialog does) and report every run."""
    from shadowgate.local.airflow_rest import AirflowRestError

    start, end = from_.replace(tzinfo=dt.UTC), to.replace(tzinfo=dt.UTC)
    with _local_airflow() as airflow:
        try:
            airflow.wait_for_dag(dag_id)
            created = time.monotonic()
            backfill_id = airflow.create_backfill(
                dag_id,
                from_date=start,
                to_date=end,
                max_active_runs=max_active_runs,
                reprocess_behavior=reprocess.value,
            )
            typer.echo(f"{dag_id}: backfill {backfill_id} created, {start.date()} to {end.date()}")
            if wait:
                report = airflow.wait_for_runs(
                    dag_id, run_type="backfill", between=(start, end), backfill_id=backfill_id, timeout_s=timeout
                )
                typer.echo(report.render() + f" (created → done {time.monotonic() - created:.0f} s)")
                typer.echo(f"scheduler healthy: {airflow.scheduler_healthy()}")
                if not report.all_succeeded_first_try:
                    raise typer.Exit(1)
        except AirflowRestError as error:
            raise _fail(str(error)) from None


@bench_app.command("features")
def bench_features(rows: Annotated[int, typer.Option()] = 20_000) -> None:
    """Single-row feature path (serving) and batch path (training): microseconds per row."""
    from shadowgate.bench.components import feature_path

    typer.echo(feature_path(rows=rows).render())


@bench_app.command("simulate")
def bench_simulate(transactions: Annotated[int, typer.Option()] = 1_000_000) -> None:
    """Simulator throughput on N purchase attempts (customers = N / 10)."""
    from shadowgate.bench.components import simulator_speed

    typer.echo(simulator_speed(transactions=transactions).render())


@bench_app.command("scorer")
def bench_scorer(rows: Annotated[int, typer.Option()] = 5_000) -> None:
    """Compiled scorers (hot path) against sklearn predict_proba: microseconds per row."""
    from shadowgate.bench.components import scorer_speed

    typer.echo(scorer_speed(rows=rows).render())


def _report_bench(result: Any) -> None:
    """Print a benchmark's figures and, with ``BENCH_JSON=<file>``, write them there."""
    import os

    from shadowgate.bench.serving import write_json

    typer.echo(result.render())
    target = os.environ.get("BENCH_JSON")
    if target:
        write_json(result, Path(target))
        typer.echo(f"figures written to {target}")


@bench_app.command("upload")
def bench_upload(
    events: Annotated[
        int, typer.Option(min=5, help="Events in the large backlog (a 5x smaller one runs first).")
    ] = 1_000_000,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Entries per warehouse commit (default: SHADOWGATE_WAREHOUSE_UPLOAD_BATCH_SIZE)."),
    ] = None,
) -> None:
    """The uploader draining a Redis stream into DuckDB: events/s and peak memory (BENCH_JSON=<file> writes them)."""

    from shadowgate.bench.upload import BenchError, run_upload_bench

    try:
        result = run_upload_bench(events=(events // 5, events), batch_size=batch_size, echo=typer.echo)
    except BenchError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None
    _report_bench(result)


@bench_app.command("performance")
def bench_performance(
    per_day: Annotated[int, typer.Option(min=100, help="Decisions a day of the synthetic week.")] = 500_000,
) -> None:
    """One week of decisions (3 models) labelled and evaluated end to end on DuckDB: seconds and peak RSS of the
    labelling + evaluation (BENCH_JSON=<file> writes them)."""

    from shadowgate.bench.performance import run_performance_bench

    try:
        result = run_performance_bench(per_day=per_day, echo=typer.echo)
    except RuntimeError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None
    _report_bench(result)


@bench_app.command("drift")
def bench_drift(
    rows: Annotated[int, typer.Option(min=1_000, help="Decisions of the synthetic day.")] = 500_000,
) -> None:
    """One day of decisions (3 models) checked for drift end to end, the statistics alone, and Evidently's default
    preset on the same frame (BENCH_JSON=<file> writes seconds, statistics_seconds, evidently_seconds, peak_rss_mb)."""

    from shadowgate.bench.drift import run_drift_bench

    try:
        result = run_drift_bench(rows=rows, echo=typer.echo)
    except RuntimeError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None
    _report_bench(result)


@bench_app.command("promotion")
def bench_promotion(
    experiments: Annotated[int, typer.Option(help="Simulated experiments per world.")] = 2_000,
    canary_runs: Annotated[int, typer.Option(help="Simulated guard runs per canary scenario.")] = 20_000,
    seed: Annotated[int, typer.Option()] = 20261207,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the figures here.")] = None,
) -> None:
    """The promotion gate's rates on simulated worlds (promoted when better, never when worse or a twin) and the canary
    guard's (a broken model stopped, a healthy one not), each with its Monte Carlo error."""
    from shadowgate.bench.promotion import promotion_proof, render

    result = promotion_proof(experiments=experiments, seed=seed, canary_runs=canary_runs)
    typer.echo(render(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))
        typer.echo(f"figures written to {json_path}")


@bench_app.command("serving")
def bench_serving(
    duration: Annotated[float, typer.Option(help="Seconds of each measured wrk run (after a 3 s warm-up).")] = 10.0,
    concurrency: Annotated[int, typer.Option(help="wrk connections of the closed-loop and paced runs.")] = 8,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the temp dir (logs, wrk scripts and outputs).")] = False,
) -> None:
    """HTTP side by side: shadowgate (full, champion-only) vs `mlflow models serve` vs hello world, with wrk.

    Targets are printed with PASS/FAIL and do not change the exit code; set BENCH_JSON=<file> to write the figures.
    Exit 1 when the figures cannot be trusted (a server failed, non-2xx responses) or prediction events are missing.
    """

    from shadowgate.bench.serving import BenchError, run_serving_bench

    try:
        result = run_serving_bench(duration_s=duration, concurrency=concurrency, keep=keep, echo=typer.echo)
    except BenchError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None
    _report_bench(result)
    if not result.streams_ok:
        typer.secho("error: the predictions stream does not match the decisions served", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1)


if __name__ == "__main__":
    app()
