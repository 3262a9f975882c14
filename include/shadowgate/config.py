"""Settings: one class per concern, each with its own ``SHADOWGATE_*`` environment prefix.

Nothing here is instantiated at import time; callers build the settings they need (``MLflowSettings()``) so that
environment changes in tests and in Airflow workers are always honoured.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix, env_file=".env", extra="ignore", frozen=True, use_attribute_docstrings=True
    )


class PathSettings(BaseSettings):
    """Where local state lives. Everything the local stack writes goes below ``home``."""

    model_config = _config("SHADOWGATE_")

    home: Path = Path(".shadowgate")
    """Root of all local state (data, MLflow store, Airflow home, Redis files, logs, pid files). Git-ignored."""

    @property
    def data_dir(self) -> Path:
        """Simulated history written by ``shadowgate simulate`` (Parquet)."""
        return self.home / "data"

    @property
    def run_dir(self) -> Path:
        """Pid files and the generated environment file of the local stack."""
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        """Logs of every process the local stack starts."""
        return self.home / "logs"


class RedisSettings(BaseSettings):
    """The Redis that carries prediction and outcome streams."""

    model_config = _config("SHADOWGATE_REDIS_")

    url: str | None = None
    """Redis URL (``redis://host:port/db``). Unset: ``make up`` starts an embedded real Redis on ``embedded_port``."""

    embedded_port: int = Field(default=6380, ge=1, le=65535)
    """Port of the embedded Redis that ``make up`` starts when no URL is configured (AOF on, bound to 127.0.0.1)."""

    embedded_maxmemory_mb: int = Field(default=1024, ge=16)
    """Memory limit of the embedded Redis, with ``maxmemory-policy noeviction``: at the limit writes fail (decisions
    wait in the journal) rather than events being evicted; an alert fires at 80 %."""

    @property
    def embedded_url(self) -> str:
        """URL of the embedded Redis that ``make up`` runs."""
        return f"redis://127.0.0.1:{self.embedded_port}/0"

    @property
    def resolved_url(self) -> str:
        """The Redis to use: the configured URL, else the embedded one."""
        return self.url or self.embedded_url


class MLflowSettings(BaseSettings):
    """MLflow tracking server and model registry."""

    model_config = _config("SHADOWGATE_MLFLOW_")

    tracking_uri: str = "http://127.0.0.1:5000"
    """Tracking (and registry) URI. Tests use ``sqlite:///…``; file stores are rejected by MLflow 3."""

    model_name: str = "bnpl_default"
    """Registered model name; versions are addressed only through aliases (``models:/bnpl_default@champion``)."""

    training_experiment: str = "bnpl_training"
    """Experiment that holds training runs."""

    port: int = Field(default=5000, ge=1, le=65535)
    """Port of the local tracking server started by ``make up`` (bound to 127.0.0.1)."""


class AirflowSettings(BaseSettings):
    """The local Airflow 3 started by ``make up``."""

    model_config = _config("SHADOWGATE_AIRFLOW_")

    port: int = Field(default=8080, ge=1, le=65535)
    """Port of the Airflow api-server (UI and REST API), bound to 127.0.0.1."""

    parallelism: int = Field(default=4, ge=1, le=64)
    """``AIRFLOW__CORE__PARALLELISM`` for the local stack; low to fit a 2-core machine."""

    api_url: str | None = None
    """Airflow's REST API as tasks reach it (``make up`` sets it for its own Airflow). Set: a run that raises an alert
    puts it in the run's note, where people look. Unset: alerts are logged, recorded and sent only."""

    api_user: str = "admin"
    """The account tasks use on ``api_url`` (a service account in production)."""

    api_password_file: Path | None = None
    """File holding that account's password: plain text, or the simple auth manager's JSON (user → password)."""

    db_port: int = Field(default=5434, ge=1, le=65535)
    """Port of the PostgreSQL server ``make up`` runs for Airflow's metadata (127.0.0.1 only; its own port, so a
    PostgreSQL already on 5432 is left alone)."""


class ApiSettings(BaseSettings):
    """The decision API."""

    model_config = _config("SHADOWGATE_API_")

    port: int = Field(default=8000, ge=1, le=65535)
    """Port of the decision API started by ``make up`` (bound to 127.0.0.1)."""

    key: SecretStr | None = None
    """API key for admin endpoints (``X-API-Key`` header). Unset: admin endpoints answer 401."""

    ingest_key: SecretStr | None = None
    """API key of outcome producers (``X-Ingest-Key`` header on ``POST /v1/outcomes``): a scope of its own, the admin
    key is not accepted there nor this one on admin endpoints. Unset: outcomes answer 401."""

    max_in_flight: int = Field(default=64, ge=1, le=100_000)
    """Requests admitted at once (health and metrics exempt). One more is answered 503 + ``Retry-After`` at once
    instead of queueing behind the others: under overload decisions are shed, never left to time out, and
    ``/health/live`` keeps answering."""

    max_loop_lag_ms: float = Field(default=20.0, gt=0)
    """While the event loop runs later than this (it is past saturation), new requests are shed (503) as if over
    ``max_in_flight``, until it is back on time (health and metrics exempt)."""

    max_body_mb: float = Field(default=4.0, gt=0)
    """Largest request body (MiB). A larger one is answered 413 before it is read (a batch of 1,000 transactions
    is about 0.6 MiB)."""

    @model_validator(mode="after")
    def _scopes_stay_separate(self) -> ApiSettings:
        # One secret in both scopes would let every outcome producer administer the service.
        if self.key is not None and self.ingest_key is not None and self.key == self.ingest_key:
            raise ValueError("ingest_key must differ from key (the admin key)")
        return self


class ServingSettings(BaseSettings):
    """How the decision API scores, decides and logs."""

    model_config = _config("SHADOWGATE_SERVING_")

    policy: str = "conservative"
    """Decision policy: a shipped name (``conservative``, ``aggressive``) or the path of a policy YAML file."""

    challenger_aliases: tuple[str, ...] = ("challenger",)
    """Registry aliases scored in shadow on every request besides ``champion`` (JSON list in the environment)."""

    model_poll_interval_s: float = Field(default=10.0, gt=0)
    """How often the API asks the registry where its aliases point; a move is picked up and swapped atomically."""

    model_budget_ms: float = Field(default=5.0, gt=0)
    """Per-model scoring budget: a shadow model slower than this (or failing) is benched for a cool-down."""

    max_batch: int = Field(default=1000, ge=1, le=100_000)
    """Largest batch ``/v1/bnpl/risk-assessment:batch`` accepts; more is answered 413."""

    customer_salt: SecretStr | None = None
    """Secret salt of the customer-id hash (the journal and the logs hold only the hash). Production passes it in
    from its secret store. Unset: a random one is made once under ``<state_dir>/secrets`` (0600)."""

    model_cache_key: SecretStr | None = None
    """HMAC key that signs the compiled models cached on disk (a changed file is refused). Production passes it in.
    Unset: a random one is made once under ``<state_dir>/secrets`` (0600)."""

    state_dir: Path | None = None
    """The API's own state: decision journal, model cache, experiment-book copy and its local secrets. Put it where
    only the API can write (compose: the ``api-state`` volume, which no Airflow service mounts): whoever can write the
    signing key can forge a cached model. Unset: ``<home>/serving``."""

    predictions_stream: str = "shadowgate:predictions"
    """Redis Stream of prediction events."""

    outcomes_stream: str = "shadowgate:outcomes"
    """Redis Stream of outcome events."""

    journal_fsync: Literal["never", "interval", "always"] = "interval"
    """When the decision journal (written before every answer) is forced to disk. Every policy survives the death of
    any process; ``interval`` loses at most ``journal_fsync_interval_s`` of answered decisions to a machine crash,
    ``always`` none (a disk flush per request), ``never`` up to the kernel's write-back delay (~30 s)."""

    journal_fsync_interval_s: float = Field(default=1.0, gt=0)
    """Period of the background fsync under ``journal_fsync=interval``."""

    journal_max_pending_mb: float = Field(default=4096.0, gt=0)
    """Journal bytes not yet in Redis (MiB) beyond which decisions and outcomes are refused with 503 + Retry-After
    (they could not be logged); ~1 KB a decision: 4 GiB is about four million decisions, hours of a Redis outage."""

    journal_segment_mb: float = Field(default=64.0, gt=0)
    """Size (MiB) at which the journal starts a new segment file; committed segments are deleted whole."""

    journal_retention_s: float = Field(default=60.0, ge=0)
    """How long a segment is kept after Redis confirmed all of it, so that a Redis that loses its last second of
    writes (AOF ``everysec``) is refilled from the journal on the next start."""

    outcome_dedup_ttl_s: int = Field(default=3600, ge=1)
    """How long Redis remembers an outcome's id, so that a client's re-send within it adds no second stream entry
    (later re-sends are still loaded once: the warehouse MERGEs on ``outcome_id``). ~100 bytes an outcome."""

    shadow_stall_timeout_s: float = Field(default=30.0, gt=0)
    """A shadow process with work waiting that reports nothing for this long is killed and replaced (a challenger
    that hangs); the replacement benches the challengers for a cool-down."""


class ExperimentSettings(BaseSettings):
    """The experiment book every API replica follows, kept in Redis (``SHADOWGATE_REDIS_URL``)."""

    model_config = _config("SHADOWGATE_EXPERIMENTS_")

    key_prefix: str = Field(default="shadowgate:experiments", min_length=1)
    """Redis keys of the book: ``<prefix>:book`` (a hash: version, book, last change) and ``<prefix>:audit`` (the
    audit stream, one entry per change). Replicas that should agree share the prefix and the Redis."""

    poll_interval_s: float = Field(default=1.0, gt=0)
    """How often each replica checks whether the book in Redis changed (one HGET); a change made through a replica
    is served by it at once and by the others within this interval."""

    redis_timeout_s: float = Field(default=1.0, gt=0)
    """Socket timeout of the book's Redis calls: past it a replica counts Redis as down and keeps serving its book
    (an admin change then answers 503)."""


class DriftScenario(StrEnum):
    """World changes the simulator can switch on at ``drift_start``."""

    NONE = "none"
    COVARIATE_SHIFT = "covariate_shift"
    """Basket sizes grow and a new sales channel (``social``) takes a share."""
    NEW_MERCHANT_CATEGORY = "new_merchant_category"
    """A merchant category never seen in training (``crypto``) appears."""
    CONCEPT_SHOCK = "concept_shock"
    """Defaults rise in one segment (young customers on the app) while features stay as they were."""


class WarehouseSettings(BaseSettings):
    """Where logged predictions, outcomes and evaluation results are stored: DuckDB (embedded default) or BigQuery."""

    model_config = _config("SHADOWGATE_WAREHOUSE_")

    backend: Literal["duckdb", "bigquery"] = "duckdb"
    """``duckdb``: one file, ``<home>/warehouse/warehouse.duckdb``. ``bigquery``: the project and dataset below."""

    dataset: str = Field(default="shadowgate", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
    """BigQuery dataset, or DuckDB schema, holding every table."""

    duckdb_path: Path | None = None
    """DuckDB file. Unset: ``<home>/warehouse/warehouse.duckdb``."""

    duckdb_threads: int | None = Field(default=1, ge=1)
    """DuckDB worker threads. 1: the uploader decodes the next batch while DuckDB writes this one (more threads
    only compete for the cores); unset: one per core, for heavy analytical queries."""

    duckdb_lock_timeout_s: float = Field(default=1800.0, gt=0)
    """How long a process waits for its turn on the DuckDB file while another has it open (DuckDB takes one writing
    process at a time; Airflow runs several tasks at once). Only the embedded warehouse waits: BigQuery runs them in
    parallel."""

    upload_batch_size: int = Field(default=100_000, ge=1)
    """Stream entries per warehouse commit: memory follows it (~1 KB a decoded row, two batches in flight), not the
    backlog. DuckDB writes 100,000 rows at under half the cost per row of 10,000."""

    retention_days: int = Field(default=730, ge=1)
    """How long prediction logs, outcomes, labels and quarantined events are kept (days; 2 years). BigQuery expires
    older partitions itself; on DuckDB the daily ``retention`` DAG deletes them. Model versions and their artifacts are
    kept forever; MLflow evaluation runs as long as this."""

    upload_read_size: int = Field(default=10_000, ge=1)
    """Stream entries per XREADGROUP (and per JSON parse) while a batch fills."""

    bigquery_project: str | None = None
    """Google Cloud project of the dataset (unset: the credentials' default project)."""

    bigquery_location: str = "EU"
    """Location of the dataset, created on first use when missing."""

    bigquery_api_endpoint: str | None = None
    """Another BigQuery API endpoint (a local emulator in tests); unset: Google's. With it, no credentials are used."""

    sql_dir: Path | None = None
    """The warehouse SQL (``include/sql``). Unset: found next to the installed package or under ``./include/sql``."""

    def resolved_duckdb_path(self, home: Path) -> Path:
        return self.duckdb_path or home / "warehouse" / "warehouse.duckdb"


class AlertSettings(BaseSettings):
    """Where alerts go, and when the uploader counts as stale."""

    model_config = _config("SHADOWGATE_ALERT_")

    webhook_url: SecretStr | None = None
    """A URL that takes a JSON POST per alert (Slack/Teams/PagerDuty-style). Unset: alerts are only logged."""

    upload_stale_after_h: float = Field(default=6.0, gt=0)
    """Alert when no upload has succeeded for this many hours."""

    redis_memory_fraction: float = Field(default=0.8, gt=0, le=1)
    """Alert when Redis uses more than this share of its ``maxmemory`` (resolved below 90 % of it)."""

    redis_group_max_lag: int = Field(default=1_000_000, ge=1)
    """Alert when a consumer group of the event streams has more entries than this not yet read."""

    redis_group_max_idle_h: float = Field(default=6.0, gt=0)
    """Alert when a consumer group with unread or pending entries has had no read for this many hours (it holds
    trimming back: the stream grows)."""


class GroundTruthSettings(BaseSettings):
    """When a served decision's labels mature (``join_ground_truth``), and when the outcome feed counts as broken.

    Time is the purchase's ``event_timestamp``, never the wall clock: a label matures at ``event_timestamp`` plus its
    delay and uses only the outcomes known by then."""

    model_config = _config("SHADOWGATE_GROUND_TRUTH_")

    early_maturity_days: int = Field(default=17, ge=1, le=366)
    """Delay of the **early** label: instalment 2 (the first after checkout, due 14 days later) late or missed, or a
    default, known by ``event_timestamp`` + this (17 = 14 + the 3-day grace after which a late instalment is known)."""

    maturity_days: int = Field(default=90, ge=1, le=366)
    """Delay of the **final** label: a ``default`` known by ``event_timestamp`` + this. 90 covers the slowest
    purchase (pay-in-6 defaulting on its last instalment is known after 87 days)."""

    early_grace_hours: int = Field(default=24, ge=0, le=72)
    """Grace window of the **early** label: a signal known and delivered up to this many hours after day
    ``early_maturity_days`` still counts, and the label matures (is written) that much later. An outcome producer
    flags a late instalment in a batch job and delivers it in another, seconds to hours after the due date plus grace;
    without a window such a signal would be missed. At most 72 h, so that a Monday weekly run still finds every
    purchase of the week it evaluates labelled (its last purchase's day 17 is 4 days before the run)."""

    late_outcome_lookback_days: int = Field(default=180, ge=1, le=730)
    """A run looks for outcomes delivered late (after the label they decide had matured) among the purchases of this
    many days before its window, and labels those purchases again (a new label version, a ``label_revisions`` row).
    A delivery later than that is not detected unless a run's ``relabel_days`` reaches back to its maturity. A value
    below ``maturity_days`` counts as ``maturity_days``."""

    no_outcome_alert_share: float = Field(default=0.02, ge=0.0, le=1.0)
    """Alert (and hold the run's labels back) when more than this share of the approved decisions a run labels has
    no outcome at all known by its as-of instant: every approved pay-in-N purchase has instalment 2 paid or late by
    day 17, so a higher share means a broken outcome feed, not a good book."""

    signal_baseline_days: int = Field(default=28, ge=1, le=366)
    """The feed check per signal type (``instalment_paid``, ``instalment_late``, ``default``) compares the signals of
    each type delivered in a run's window with what its rate per purchase and age (days since purchase) in this many
    days before it predicts for the window's purchases."""

    signal_drop_ratio: float = Field(default=0.5, gt=0.0, le=1.0)
    """Alert (and hold the run's labels back) when a signal type delivered fewer than this share of its expected count
    in the window (age-adjusted from its baseline rate) and a count that low has a Poisson probability below
    0.001: a dead ``default`` stream alerts while payments still flow; a quiet day of a rare type does not."""

    @model_validator(mode="after")
    def _early_before_final(self) -> GroundTruthSettings:
        if self.early_maturity_days * 24 + self.early_grace_hours > self.maturity_days * 24:
            raise ValueError(
                f"early_maturity_days ({self.early_maturity_days}) plus early_grace_hours ({self.early_grace_hours})"
                f" must not exceed maturity_days ({self.maturity_days})"
            )
        return self


class SimulationSettings(BaseSettings):
    """The BNPL world simulator."""

    model_config = _config("SHADOWGATE_SIM_")

    seed: int = 7
    """Seed of every random stream; same seed and settings → identical output."""

    transactions: int = Field(default=200_000, ge=100)
    """Number of purchases to simulate."""

    customers: int = Field(default=20_000, ge=10)
    """Size of the customer base (some of them sign up during the window)."""

    start: dt.date = dt.date(2026, 1, 5)
    """First day of simulated purchases (UTC)."""

    days: int = Field(default=182, ge=14)
    """Length of the purchase window in days; outcomes run on past its end."""

    default_rate: float = Field(default=0.05, gt=0.0, lt=0.5)
    """Target share of purchases that end in default (before any drift); the intercept is calibrated to it."""

    scenario: DriftScenario = DriftScenario.NONE
    """Drift scenario switched on at ``drift_start``."""

    drift_start_day: int = Field(default=120, ge=0)
    """Day (from ``start``) on which the scenario switches on."""

    @model_validator(mode="after")
    def _drift_inside_window(self) -> SimulationSettings:
        if self.drift_start_day > self.days:
            raise ValueError(f"drift_start_day ({self.drift_start_day}) is after the window ({self.days} days)")
        return self


class TrainingSettings(BaseSettings):
    """Training of the champion (scorecard) and the challenger (gradient boosting)."""

    model_config = _config("SHADOWGATE_TRAIN_")

    validation_days: int = Field(default=28, ge=7)
    """The last N days of matured purchases are held out (temporal split)."""

    maturity_days: int = Field(default=90, ge=0)
    """Purchases younger than this at the cut-off may still change outcome and are not trained on (the slowest
    purchase, pay-in-6 with a default on its last instalment, settles after 87 days)."""

    min_defaults: int = Field(default=20, ge=1)
    """A training refuses to fit (nothing registered, an alert) with fewer defaults than this in its training rows or
    in its validation rows: a model fitted or validated on a handful of defaults is noise."""

    min_valid_auc: float = Field(default=0.6, ge=0.5, lt=1.0)
    """A training whose validation AUC is below this registers nothing (a broken feature feed, a wrong join)."""

    reference_rows: int = Field(default=20_000, ge=100)
    """Size of the frozen reference sample of training features (and the model's scores, with their timestamps)
    logged for drift checks: 20,000 is the size the drift check's rates were measured with; on fewer rows each
    column's measured wander carries more sampling noise."""

    seed: int = 11
    """Seed for model fitting and sampling."""


class DriftSettings(BaseSettings):
    """The daily drift check (``drift_check``): served inputs and scores against the models' training references.
    The rates these settings give are measured in ``tests/model/test_drift_worlds.py`` (README, "Drift")."""

    model_config = _config("SHADOWGATE_DRIFT_")

    psi_floor: float = Field(default=0.1, gt=0.0)
    """The smallest PSI that counts as drift whatever the day's size (0.1: the credit-risk convention for a shift
    worth a look). A column that moved more than this inside its own training window needs more (its wander)."""

    alpha: float = Field(default=0.01, gt=0.0, lt=0.5)
    """Chance of a false alarm on a day from sampling noise alone, spread over the columns checked (Bonferroni)."""

    unseen_alert_share: float = Field(default=0.05, gt=0.0, le=1.0)
    """Alert when more than this share of a categorical's values on a day were never seen in training."""

    bins: int = Field(default=10, ge=2, le=100)
    """Quantile bins of a numeric column (fixed by the reference, once per model version)."""

    min_rows: int = Field(default=200, ge=1)
    """A day with fewer decisions is reported, never judged."""

    report_rows: int = Field(default=20_000, ge=100)
    """The Evidently report renders on a seeded sample of at most this many of the day's rows (the decision uses
    every row; the report says so)."""

    experiment: str = "shadowgate/drift"
    """MLflow experiment of the daily drift runs."""

    estimate_maturity_days: int = Field(default=90, ge=1, le=366)
    """A run also writes the realised figures beside the estimates of the day this many days back (its final labels
    have matured: keep it equal to ``SHADOWGATE_GROUND_TRUTH_MATURITY_DAYS``)."""


class RetrainSettings(BaseSettings):
    """``retrain_challenger`` on the warehouse: the window it trains on and what it needs before it trains."""

    model_config = _config("SHADOWGATE_RETRAIN_")

    training_days: int = Field(default=182, ge=28, le=1095)
    """Days of matured decisions a retraining reads (ending at the Monday on or before ``as_of − maturity``)."""

    replay_days: int = Field(default=28, ge=7, le=182)
    """The window's last days, held out: the new version and the champion are compared on them before shadowing."""

    min_training_defaults: int = Field(default=200, ge=1)
    """Skip (nothing trained) with fewer matured defaults than this before the replay days."""

    min_replay_defaults: int = Field(default=50, ge=1)
    """Skip with fewer matured defaults than this in the replay days (the replay could not tell a worse model)."""


class PromotionSettings(BaseSettings):
    """``promote_challenger`` and ``canary_guard``: the files they decide by."""

    model_config = _config("SHADOWGATE_PROMOTION_")

    gates_path: Path | None = None
    """The promotion gate's YAML file (version and hash recorded with every verdict). Empty: the shipped
    ``decisioning/config/gates.yaml``."""

    canary_path: Path | None = None
    """The canary guard's YAML file (thresholds, rollout stages; version and hash recorded with every run). Empty:
    the shipped ``decisioning/config/canary.yaml``."""


class EvaluationSettings(BaseSettings):
    """The weekly evaluation (``weekly_performance``): what a comparison is powered for, its sequential plan, the
    alerts and the cost bounds. When labels mature is ``GroundTruthSettings``'."""

    model_config = _config("SHADOWGATE_EVALUATION_")

    auc_margin: float = Field(default=0.01, ge=0.0, lt=0.5)
    """δ, the minimum meaningful AUC gain: a comparison tests H0: ΔAUC ≤ δ (challenger − champion), so a challenger
    is *superior* only when it beats the champion by more than δ. Measured (README, "Why the margin"): two retrains of
    one recipe differ by ~0.001–0.002 and measuring on approved purchases only shifts ΔAUC toward the challenger by
    up to ~0.007; δ sits above both."""

    minimum_detectable_auc_difference: float = Field(default=0.01, gt=0.0, lt=0.5)
    """MDE: the gain beyond the margin each comparison is powered to find (H1: ΔAUC ≥ δ + MDE); with α, power and
    the looks it sets the plan's maximum information."""

    alpha: float = Field(default=0.025, gt=0.0, lt=0.5)
    """One-sided level of the sequential comparison (split equally between the challengers compared with one
    champion)."""

    power: float = Field(default=0.8, gt=0.5, lt=1.0)
    """Power of the comparison at ΔAUC = δ + MDE."""

    max_looks: int = Field(default=26, ge=1, le=104)
    """Weekly looks a comparison's plan takes at most (26: half a year of matured weeks); the plan ends earlier
    when its maximum information is reached or a boundary is crossed."""

    futility: bool = True
    """Add the non-binding futility boundary (β-spending, O'Brien–Fleming type): a hopeless comparison stops early."""

    auc_drop_alert: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Alert when a model's weekly AUC is more than this fraction below its own baseline (its first
    ``alert_baseline_weeks`` evaluated weeks, same population and label; never the validation AUC on all applicants,
    which selection alone puts above it) and at least ``alert_min_z`` standard errors below."""

    default_rise_alert: float = Field(default=0.15, ge=0.0)
    """Alert when a model's weekly observed/expected defaults exceed its baseline ratio by more than this fraction
    (and ``alert_min_z`` standard errors): more defaults than it predicts, as under a concept shift."""

    alert_baseline_weeks: int = Field(default=4, ge=1, le=52)
    """A model version's first N evaluated cohort weeks (per label) are its baseline; it is not alerted on before."""

    alert_min_z: float = Field(default=3.0, gt=0.0)
    """A weekly change alerts only when it is also this many standard errors (the week's and the baseline's, widened
    by the baseline weeks' own dispersion) beyond the baseline."""

    bootstrap_resamples: int = Field(default=200, ge=2)
    """Resamples of the paired bootstrap CI of the Brier difference."""

    bootstrap_max_rows: int = Field(default=500_000, ge=1_000)
    """Rows the bootstrap resamples at most: above, a seeded stratified subsample of this size (its CI is that of the
    subsample, a little wider); the cost of a resample grows with the rows."""

    sequential_lookback_weeks: int = Field(default=52, ge=1)
    """How far back a comparison looks for the week its two versions first scored a decision (its plan's start)."""

    segment_min_defaults: int = Field(default=30, ge=0)
    """The weekly report shows a segment's AUC only on at least this many defaults (on fewer its standard error is
    about 0.05 or more). The figure is still computed and stored."""

    min_model_coverage: float = Field(default=0.5, ge=0.0, le=1.0)
    """A model version is evaluated on a cohort week when it scored at least this share of its rows (a version
    serving part of a week, e.g. one promoted mid-week, is reported as skipped, never compared on other rows)."""

    seed: int = 20260105
    """Seed of the bootstrap and of its subsample."""


SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    PathSettings,
    RedisSettings,
    MLflowSettings,
    AirflowSettings,
    ApiSettings,
    ServingSettings,
    ExperimentSettings,
    WarehouseSettings,
    AlertSettings,
    GroundTruthSettings,
    SimulationSettings,
    TrainingSettings,
    EvaluationSettings,
    DriftSettings,
    RetrainSettings,
    PromotionSettings,
)


def local_secret(path: Path) -> str:
    """A secret kept in a file readable by its owner only, made once (random) when the file does not exist yet.

    For local defaults only (the embedded stack's admin key, the customer-id salt, the model-cache key); production
    passes secrets in.
    """
    import os
    import secrets

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
        os.replace(tmp, path)
    return path.read_text().strip()


def environment_variables() -> list[tuple[str, str, str]]:
    """(variable, default, description) of every setting, in class order."""
    rows: list[tuple[str, str, str]] = []
    for cls in SETTINGS_CLASSES:
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            default = field.default
            shown = "" if default is None else str(default.value if isinstance(default, StrEnum) else default)
            rows.append((f"{prefix}{name}".upper(), shown, " ".join((field.description or "").split())))
    return rows


def env_example() -> str:
    """The text of ``.env.example``: every variable, commented out at its default."""
    lines = [
        "# shadowgate settings. Copy to .env and uncomment what you change; the values shown are the defaults.",
        "",
    ]
    for cls in SETTINGS_CLASSES:
        lines.append(f"# --- {cls.__name__}: {(cls.__doc__ or '').strip().splitlines()[0]}")
        prefix = cls.model_config.get("env_prefix", "").upper()
        for variable, default, description in environment_variables():
            if variable.startswith(prefix) and variable.removeprefix(prefix).lower() in cls.model_fields:
                lines.append(f"# {description}")
                lines.append(f"# {variable}={default}")
        lines.append("")
    return "\n".join(lines)
