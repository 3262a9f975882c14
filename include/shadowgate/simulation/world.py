"""The BNPL world: customers, pay-in-N purchases over calendar time, and outcomes that arrive as instalments fall due.

How it stays exact and fast:

* Every attribute draws from its own random stream (seed × attribute name), so switching a drift scenario on
  changes only the columns the scenario touches; everything else is bit-for-bit identical.
* Per-customer counters ("purchases in the last 24 h", "late payments known so far", "outstanding balance") are
  counted with sorted ``customer × time`` keys and ``searchsorted`` instead of Python loops.
* Purchases are processed in 14-day chunks. The earliest outcome of a purchase (the second instalment's due date)
  is 14 days after it, so every outcome a purchase can see was produced by an earlier chunk: the counters are causal.

Instalment timeline (pay-in-N): instalment 1 is charged at checkout; instalment i ≥ 2 is due ``14·(i-1)`` days later
and auto-charged on its due date. A late instalment becomes known ``GRACE_DAYS`` after its due date. A defaulter
misses instalment ``k`` and the next one; the default is declared ``GRACE_DAYS`` after the due date following ``k``.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shadowgate.config import DriftScenario, SimulationSettings
from shadowgate.simulation import mechanism

DAY = 86_400
INSTALMENT_INTERVAL_DAYS = 14
GRACE_DAYS = 3
MISSED_TO_DEFAULT = 2
"""Consecutive missed instalments after which a purchase is in default."""
LATE_PER_DEFAULT_RISK = 1.0
"""An instalment of a purchase that does not default is paid late with probability ``min(0.3, this × p)``."""
CHUNK_DAYS = INSTALMENT_INTERVAL_DAYS
BURN_IN_DAYS = 8 * CHUNK_DAYS
"""Days simulated before the window and then discarded, so balances and histories start in steady state."""
BLOCK_DAYS = 90
"""After a default is declared the lender declines the customer's purchases for this many days (collections)."""
_UNIT = 10**6
"""Weights are summed in millionths (exact integer arithmetic)."""
_KEY_SPAN = 10**10
"""Room for seconds in ``customer * _KEY_SPAN + seconds`` (≈ 300 years)."""

BASE_CATEGORIES: dict[str, tuple[float, float]] = {
    # category: (share of merchants, log-mean basket in EUR)
    "electronics": (0.14, 5.5),
    "fashion": (0.24, 4.4),
    "home": (0.12, 4.9),
    "beauty": (0.12, 3.8),
    "travel": (0.06, 5.9),
    "groceries": (0.12, 3.6),
    "sports": (0.10, 4.6),
    "gaming": (0.10, 4.0),
}
NEW_CATEGORY = "crypto"
NEW_CATEGORY_LOG_MEAN = 5.2
NEW_CATEGORY_SHARE = 0.12
NEW_CHANNEL = "social"
NEW_CHANNEL_SHARE = 0.25
BASKET_GROWTH = 1.5
AMOUNT_SIGMA = 0.6
N_MERCHANTS = 400
N_NEW_MERCHANTS = 25

SCENARIO_COLUMNS: dict[DriftScenario, frozenset[str]] = {
    DriftScenario.NONE: frozenset(),
    DriftScenario.COVARIATE_SHIFT: frozenset({"amount", "channel"}),
    DriftScenario.NEW_MERCHANT_CATEGORY: frozenset({"merchant_category", "merchant_id", "amount"}),
    DriftScenario.CONCEPT_SHOCK: frozenset(),
}
"""Transaction columns each scenario changes directly. Counters built from them (outstanding balance, spend in the
last 7 days) and everything built from outcomes (late payments, defaults) follow as consequences."""

DERIVED_FROM_AMOUNT = frozenset({"amount_last_7d", "outstanding_balance"})
DERIVED_FROM_OUTCOMES = frozenset(
    {"prior_late_payments", "prior_defaults", "outstanding_balance", "prior_purchases", "purchases_last_24h"}
    | {"amount_last_7d"}
)
"""Counters that depend on outcomes: directly (late payments, defaults, balance) or through the default block, which
removes declined attempts from the purchase counters."""


def _rng(seed: int, name: str, chunk: int = 0) -> np.random.Generator:
    """An independent stream per (seed, attribute, chunk)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode()), chunk]))


@dataclass(frozen=True)
class SimulationResult:
    """What the simulator produces.

    Attributes:
        transactions: one row per purchase, exactly the contract's columns, in time order.
        outcomes: the event log of instalments (``instalment_paid``, ``instalment_late``, ``default``), each row
            with the instant it became known (``event_timestamp``) and the due date it concerns.
        labels: ground truth per purchase: ``is_default``, the true ``default_probability``, ``label_known_at``
            (when the outcome is settled), ``latent_risk`` and ``drifted`` (scenario active at that time).
        intercept: the calibrated intercept of the default mechanism.
    """

    transactions: pd.DataFrame
    outcomes: pd.DataFrame
    labels: pd.DataFrame
    intercept: float


def _customers(s: SimulationSettings) -> dict[str, np.ndarray]:
    n = s.customers
    seed = s.seed
    latent = _rng(seed, "cust.latent").standard_normal(n)
    # 85 % signed up in the four years before the window (more of them recently), the rest during the window.
    before = _rng(seed, "cust.signup_before").random(n) < 0.85
    back_days = 1460.0 * _rng(seed, "cust.signup_back").random(n) ** 1.6
    during_days = (BURN_IN_DAYS + s.days) * 0.9 * _rng(seed, "cust.signup_during").random(n)
    signup = np.where(before, -back_days, during_days) * DAY
    age = np.clip(np.round(_rng(seed, "cust.age").normal(38.0, 12.0, n)), 18, 85).astype(np.int64)
    limit_log = (
        np.log(1200.0) + 0.25 * (age - 38.0) / 12.0 - 0.2 * latent + 0.45 * _rng(seed, "cust.limit").normal(size=n)
    )
    credit_limit = np.clip(np.round(np.exp(limit_log) / 50.0) * 50.0, 200.0, 10_000.0)
    # Active customers are a little safer (heavy users who keep paying are who keeps a BNPL book alive).
    activity = np.exp(0.8 * _rng(seed, "cust.activity").normal(size=n) - 0.4 * latent)
    currency = _rng(seed, "cust.currency").choice(np.array(["EUR", "GBP", "SEK"]), n, p=[0.7, 0.2, 0.1])
    device = _rng(seed, "cust.device").choice(
        np.array(["ios", "android", "desktop", "other"]), n, p=[0.4, 0.35, 0.2, 0.05]
    )
    tenure_at_start = np.maximum(-signup / DAY, 0.0)
    pre_purchases = _rng(seed, "cust.pre_purchases").poisson(activity * tenure_at_start / 60.0)
    p_late = mechanism.sigmoid(-2.7 + 0.9 * latent)
    pre_late = _rng(seed, "cust.pre_late").binomial(pre_purchases * 3, p_late)
    p_def = mechanism.sigmoid(-3.3 + 1.0 * latent)
    pre_defaults = _rng(seed, "cust.pre_defaults").binomial(pre_purchases, p_def)
    has_history = pre_purchases > 0
    pre_balance = np.where(
        has_history, np.round(credit_limit * _rng(seed, "cust.pre_balance").beta(1.2, 6.0, n), 2), 0.0
    )
    return {
        "latent": latent,
        "signup": signup,
        "age": age,
        "credit_limit": credit_limit,
        "activity": activity,
        "currency": currency,
        "device": device,
        "pre_purchases": pre_purchases,
        "pre_late": pre_late,
        "pre_defaults": pre_defaults,
        "pre_balance": pre_balance,
    }


def _merchants(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids, categories and popularity of the base merchants."""
    names = np.array(list(BASE_CATEGORIES))
    shares = np.array([v[0] for v in BASE_CATEGORIES.values()])
    category = _rng(seed, "merchant.category").choice(names, N_MERCHANTS, p=shares / shares.sum())
    popularity = np.exp(1.0 * _rng(seed, "merchant.popularity").normal(size=N_MERCHANTS))
    ids = np.array([f"mer_{i:04d}" for i in range(N_MERCHANTS)])
    return ids, category, popularity / popularity.sum()


def _purchases(s: SimulationSettings, cust: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(customer, seconds since window start) of every purchase attempt.

    The time comes first (a uniform day, an hour from a diurnal profile); the buyer is then drawn, in proportion to
    activity, among the customers already signed up by then, so late sign-ups are not crammed into the window's end.
    """
    total_days = BURN_IN_DAYS + s.days
    n = round(s.transactions * total_days / s.days)
    day = np.floor(_rng(s.seed, "tx.day").random(n) * total_days)
    hourly = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 4, 5, 5.5, 6, 6, 5.5, 5.5, 6, 6.5, 7, 7.5, 7, 6, 4, 2.5])
    hour = _rng(s.seed, "tx.hour").choice(24, n, p=hourly / hourly.sum())
    second = np.floor(_rng(s.seed, "tx.second").random(n) * 3600)
    seconds = (day * DAY + hour * 3600 + second).astype(np.int64)
    by_signup = np.argsort(cust["signup"], kind="stable")
    cumulative = np.cumsum(cust["activity"][by_signup])
    eligible = np.searchsorted(cust["signup"][by_signup], day * DAY, side="right")
    eligible = np.maximum(eligible, 1)
    draw = _rng(s.seed, "tx.customer").random(n) * cumulative[eligible - 1]
    pick = np.minimum(np.searchsorted(cumulative, draw, side="right"), eligible - 1)
    return by_signup[pick], seconds


class _KeyedEvents:
    """Per-customer events in time, answering "how many (or how much) before time t" for many queries at once.

    Weights are summed as integers (micro-units), so a customer's totals are exact and cannot depend on the rounding
    of other customers' events (float prefix sums would leak it).
    """

    def __init__(self) -> None:
        self._keys: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, customer: np.ndarray, seconds: np.ndarray, weight: np.ndarray | None = None) -> None:
        self._keys.append(customer.astype(np.int64) * _KEY_SPAN + seconds.astype(np.int64))
        units = np.full(len(customer), _UNIT) if weight is None else np.rint(weight * _UNIT).astype(np.int64)
        self._weights.append(units)
        self._sorted = None

    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        if self._sorted is None:
            keys = np.concatenate(self._keys) if self._keys else np.empty(0, np.int64)
            weights = np.concatenate(self._weights) if self._weights else np.empty(0, np.int64)
            order = np.argsort(keys, kind="stable")
            self._keys, self._weights = [keys[order]], [weights[order]]
            self._sorted = (keys[order], np.concatenate([[0], np.cumsum(weights[order])]))
        return self._sorted

    def total_between(self, customer: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        """Sum of weights of the customer's events with ``start <= time < stop``."""
        keys, cumulative = self._index()
        base = customer.astype(np.int64) * _KEY_SPAN
        lo = np.searchsorted(keys, base + start, side="left")
        hi = np.searchsorted(keys, base + stop, side="left")
        return (cumulative[hi] - cumulative[lo]) / _UNIT


@dataclass
class _OutcomeBatch:
    """Outcome events of one chunk, as parallel arrays."""

    tx_index: list[np.ndarray]
    kind: list[np.ndarray]
    instalment: list[np.ndarray]
    due: list[np.ndarray]
    known: list[np.ndarray]
    amount: list[np.ndarray]

    def append(self, **arrays: np.ndarray) -> None:
        for name, values in arrays.items():
            getattr(self, name).append(values)


def _outcomes(
    *,
    seed: int,
    chunk: int,
    tx_index: np.ndarray,
    seconds: np.ndarray,
    amount: np.ndarray,
    installments: np.ndarray,
    probability: np.ndarray,
    batch: _OutcomeBatch,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw each purchase's instalment history; return (is_default, label_known_at seconds)."""
    n = len(tx_index)
    is_default = _rng(seed, "out.default", chunk).random(n) < probability
    # The first missed instalment of a defaulter: early instalments are likelier.
    span = installments - 1
    first_missed = 2 + np.minimum(np.floor(_rng(seed, "out.first_missed", chunk).random(n) ** 1.6 * span), span - 1)
    late_probability = np.minimum(0.3, LATE_PER_DEFAULT_RISK * probability)
    late_draws = _rng(seed, "out.late", chunk).random((n, 5))
    delay_draws = 1 + np.floor(_rng(seed, "out.late_delay", chunk).random((n, 5)) * 7)
    share = amount / installments
    known_at = np.zeros(n, dtype=np.int64)
    for i in range(2, 7):
        has = installments >= i
        due = seconds + (i - 1) * INSTALMENT_INTERVAL_DAYS * DAY
        missed = has & is_default & (i >= first_missed) & (i < first_missed + MISSED_TO_DEFAULT)
        paid = has & ~(is_default & (i >= first_missed))
        late = paid & (late_draws[:, i - 2] < late_probability)
        late_known = due + GRACE_DAYS * DAY
        paid_at = np.where(late, late_known + delay_draws[:, i - 2] * DAY, due)
        flagged = missed | late
        batch.append(
            tx_index=tx_index[flagged],
            kind=np.full(flagged.sum(), "instalment_late"),
            instalment=np.full(flagged.sum(), i),
            due=due[flagged],
            known=late_known[flagged],
            amount=share[flagged],
        )
        batch.append(
            tx_index=tx_index[paid],
            kind=np.full(paid.sum(), "instalment_paid"),
            instalment=np.full(paid.sum(), i),
            due=due[paid],
            known=paid_at[paid],
            amount=share[paid],
        )
        known_at = np.where(paid, np.maximum(known_at, paid_at), known_at)
    default_due = seconds + (first_missed - 1 + MISSED_TO_DEFAULT - 1) * INSTALMENT_INTERVAL_DAYS * DAY
    default_known = default_due + GRACE_DAYS * DAY
    batch.append(
        tx_index=tx_index[is_default],
        kind=np.full(is_default.sum(), "default"),
        instalment=first_missed[is_default].astype(np.int64),
        due=default_due[is_default],
        known=default_known[is_default],
        amount=(share * (installments - first_missed + 1))[is_default],
    )
    known_at = np.where(is_default, default_known, known_at)
    return is_default, known_at


def _scenario_active(s: SimulationSettings, scenario: DriftScenario, seconds: np.ndarray) -> np.ndarray:
    return np.full(len(seconds), s.scenario is scenario) & (seconds >= _drift_start(s))


def _drift_start(s: SimulationSettings) -> int:
    return (BURN_IN_DAYS + s.drift_start_day) * DAY


def simulate(
    settings: SimulationSettings, *, progress: Callable[[Iterator[int], int], Iterator[int]] | None = None
) -> SimulationResult:
    """Simulate purchases and their outcomes.

    Args:
        settings: size, window, seed, target default rate and drift scenario.
        progress: optional wrapper around the chunk iterator (e.g. ``tqdm``), called with (iterator, total).
    """
    s = settings
    seed = s.seed
    cust = _customers(s)

    # Who buys, when, where, what.
    customer, seconds = _purchases(s, cust)
    n = len(customer)
    order = np.lexsort((customer, seconds))
    customer, seconds = customer[order], seconds[order]
    merchant_ids, merchant_cat, merchant_pop = _merchants(seed)
    merchant = _rng(seed, "tx.merchant").choice(N_MERCHANTS, n, p=merchant_pop)
    merchant_id = merchant_ids[merchant].astype(object)
    category = merchant_cat[merchant].astype(object)

    new_cat = _scenario_active(s, DriftScenario.NEW_MERCHANT_CATEGORY, seconds) & (
        _rng(seed, "drift.new_category").random(n) < NEW_CATEGORY_SHARE
    )
    new_merchant = _rng(seed, "drift.new_merchant").integers(0, N_NEW_MERCHANTS, n)
    merchant_id[new_cat] = np.array([f"mer_n{i:03d}" for i in new_merchant[new_cat]], dtype=object)
    category[new_cat] = NEW_CATEGORY

    log_mean = np.array([BASE_CATEGORIES.get(c, (0.0, NEW_CATEGORY_LOG_MEAN))[1] for c in category])
    amount_z = _rng(seed, "tx.amount").standard_normal(n)
    amount = np.exp(log_mean + AMOUNT_SIGMA * amount_z)
    grow = _scenario_active(s, DriftScenario.COVARIATE_SHIFT, seconds)
    amount = np.where(grow, amount * BASKET_GROWTH, amount)
    amount = np.clip(np.round(amount, 2), 1.0, 20_000.0)

    installments = _rng(seed, "tx.installments").choice(np.array([3, 4, 6]), n, p=[0.08, 0.85, 0.07])
    channel = _rng(seed, "tx.channel").choice(np.array(["web", "app", "in_store"]), n, p=[0.45, 0.4, 0.15])
    channel = channel.astype(object)
    social = grow & (_rng(seed, "drift.new_channel").random(n) < NEW_CHANNEL_SHARE)
    channel[social] = NEW_CHANNEL
    keeps_device = _rng(seed, "tx.device_keep").random(n) < 0.8
    any_device = _rng(seed, "tx.device_any").choice(np.array(["ios", "android", "desktop", "other"]), n)
    device = np.where(keeps_device, cust["device"][customer], any_device)

    # Per-customer histories, fed chunk by chunk with what actually happened: purchases that were not declined,
    # instalments paid or late, defaults. Pre-window balances are paid off in three parts.
    bought, spent, owed = _KeyedEvents(), _KeyedEvents(), _KeyedEvents()
    late_events, default_events = _KeyedEvents(), _KeyedEvents()
    pre = np.flatnonzero(cust["pre_balance"] > 0)
    first_payment = np.floor(_rng(seed, "cust.pre_balance_due").random(len(pre)) * CHUNK_DAYS * DAY).astype(np.int64)
    for k in range(3):
        owed.add(pre, first_payment + k * INSTALMENT_INTERVAL_DAYS * DAY, -cust["pre_balance"][pre] / 3.0)
    far_past = np.full(n, -(10**9), dtype=np.int64)

    columns: dict[str, np.ndarray] = {
        "amount": amount,
        "installments": installments,
        "merchant_category": category,
        "channel": channel,
        "customer_age": cust["age"][customer],
        "customer_tenure_days": np.maximum((seconds - cust["signup"][customer]) // DAY, 0).astype(np.int64),
        "prior_purchases": np.zeros(n, np.int64),
        "credit_limit": cust["credit_limit"][customer],
        "purchases_last_24h": np.zeros(n, np.int64),
        "amount_last_7d": np.zeros(n),
        "prior_late_payments": np.zeros(n, np.int64),
        "prior_defaults": np.zeros(n, np.int64),
        "outstanding_balance": np.zeros(n),
    }
    hour = (seconds % DAY) // 3600
    latent = cust["latent"][customer]
    shocked = _scenario_active(s, DriftScenario.CONCEPT_SHOCK, seconds)

    batch = _OutcomeBatch([], [], [], [], [], [])
    probability = np.full(n, np.nan)
    blocked = np.zeros(n, dtype=bool)
    is_default = np.zeros(n, dtype=bool)
    label_known = np.zeros(n, dtype=np.int64)
    bounds = np.searchsorted(seconds, np.arange(0, (BURN_IN_DAYS + s.days + CHUNK_DAYS) * DAY, CHUNK_DAYS * DAY))
    n_chunks = len(bounds) - 1
    chunks: Iterator[int] = iter(range(n_chunks))
    if progress is not None:
        chunks = progress(chunks, n_chunks)
    intercept = 0.0
    for chunk in chunks:
        sl = slice(bounds[chunk], bounds[chunk + 1])
        c, t = customer[sl], seconds[sl]
        if len(c) == 0:
            continue
        # The lender declines a customer for a while after a default: those attempts are not purchases.
        blocked[sl] = default_events.total_between(c, t - BLOCK_DAYS * DAY, t) > 0
        live = np.arange(sl.start, sl.stop)[~blocked[sl]]
        # A purchase is known at checkout (its outcome is not): count this chunk's purchases before querying.
        bought.add(customer[live], seconds[live])
        spent.add(customer[live], seconds[live], amount[live])
        owed.add(customer[live], seconds[live], amount[live] * (installments[live] - 1) / installments[live])
        columns["prior_purchases"][sl] = cust["pre_purchases"][c] + bought.total_between(c, far_past[sl], t)
        columns["purchases_last_24h"][sl] = bought.total_between(c, t - DAY, t)
        columns["amount_last_7d"][sl] = np.round(spent.total_between(c, t - 7 * DAY, t), 2)
        columns["prior_late_payments"][sl] = cust["pre_late"][c] + late_events.total_between(c, far_past[sl], t)
        columns["prior_defaults"][sl] = cust["pre_defaults"][c] + default_events.total_between(c, far_past[sl], t)
        balance = cust["pre_balance"][c] + owed.total_between(c, far_past[sl], t)
        columns["outstanding_balance"][sl] = np.round(np.maximum(balance, 0.0), 2)
        view = {k: v[sl] for k, v in columns.items()}
        logits = mechanism.logit_without_intercept(view, hour=hour[sl], latent=latent[sl])
        if chunk == 0:
            intercept = mechanism.calibrate_intercept(logits, s.default_rate)
        logits = (
            logits + intercept + mechanism.CONCEPT_SHOCK_LIFT * (shocked[sl] & mechanism.concept_shock_segment(view))
        )
        probability[sl] = np.where(blocked[sl], np.nan, mechanism.sigmoid(logits))
        start = len(batch.tx_index)
        is_default[live], label_known[live] = _outcomes(
            seed=seed,
            chunk=chunk,
            tx_index=live,
            seconds=seconds[live],
            amount=amount[live],
            installments=installments[live],
            probability=probability[live],
            batch=batch,
        )
        if start == len(batch.tx_index):
            continue
        # Feed this chunk's outcomes back into the counters that later purchases see.
        idx = np.concatenate(batch.tx_index[start:])
        kind = np.concatenate(batch.kind[start:])
        known = np.concatenate(batch.known[start:])
        paid_amount = np.concatenate(batch.amount[start:])
        is_late, is_def, is_paid = kind == "instalment_late", kind == "default", kind == "instalment_paid"
        late_events.add(customer[idx[is_late]], known[is_late])
        default_events.add(customer[idx[is_def]], known[is_def])
        owed.add(customer[idx[is_paid]], known[is_paid], -paid_amount[is_paid])
        # A declared default moves the unpaid rest to collections: it leaves the BNPL balance.
        owed.add(customer[idx[is_def]], known[is_def], -paid_amount[is_def])

    return _assemble(
        s,
        keep=~blocked & (seconds >= BURN_IN_DAYS * DAY),
        customer=customer,
        seconds=seconds,
        columns=columns,
        merchant_id=merchant_id,
        currency=cust["currency"][customer],
        device=device,
        batch=batch,
        labels={
            "is_default": is_default,
            "default_probability": probability,
            "label_known_at": label_known,
            "latent_risk": latent,
            "drifted": seconds >= _drift_start(s) if s.scenario is not DriftScenario.NONE else np.zeros(n, bool),
        },
        intercept=intercept,
    )


def _timestamps(start: dt.date, seconds: np.ndarray) -> pd.DatetimeIndex:
    origin = pd.Timestamp(start, tz="UTC") - pd.Timedelta(days=BURN_IN_DAYS)
    return origin + pd.to_timedelta(seconds, unit="s")


def _assemble(
    s: SimulationSettings,
    *,
    keep: np.ndarray,
    customer: np.ndarray,
    seconds: np.ndarray,
    columns: dict[str, np.ndarray],
    merchant_id: np.ndarray,
    currency: np.ndarray,
    device: np.ndarray,
    batch: _OutcomeBatch,
    labels: dict[str, Any],
    intercept: float,
) -> SimulationResult:
    from shadowgate.contract import field_names

    # Ids are numbered over the purchases that happened (declined attempts of blocked customers are left out).
    number = np.cumsum(keep) - 1
    tx_ids = np.array([f"tx_{i:09d}" for i in number], dtype=object)
    cust_ids = np.array([f"cus_{i:07d}" for i in range(s.customers)], dtype=object)[customer]
    tx = pd.DataFrame(
        {
            "transaction_id": tx_ids,
            "customer_id": cust_ids,
            "event_timestamp": _timestamps(s.start, seconds),
            "currency": currency.astype(object),
            "merchant_id": merchant_id,
            "device": device.astype(object),
            **columns,
        }
    )[list(field_names())][keep].reset_index(drop=True)
    idx = np.concatenate(batch.tx_index) if batch.tx_index else np.empty(0, np.int64)
    reported = keep[idx]
    idx = idx[reported]
    outcomes = pd.DataFrame(
        {
            "transaction_id": tx_ids[idx],
            "customer_id": cust_ids[idx],
            "event_type": np.concatenate(batch.kind)[reported].astype(object),
            "instalment": np.concatenate(batch.instalment)[reported].astype(np.int64),
            "due_at": _timestamps(s.start, np.concatenate(batch.due)[reported]),
            "event_timestamp": _timestamps(s.start, np.concatenate(batch.known)[reported]),
            "amount": np.round(np.concatenate(batch.amount)[reported], 2),
        }
    )
    outcomes = outcomes.sort_values(["event_timestamp", "transaction_id"], kind="stable", ignore_index=True)
    label_frame = pd.DataFrame(
        {
            "transaction_id": tx_ids,
            "is_default": labels["is_default"],
            "default_probability": labels["default_probability"],
            "label_known_at": _timestamps(s.start, labels["label_known_at"]),
            "latent_risk": labels["latent_risk"],
            "drifted": labels["drifted"],
        }
    )[keep].reset_index(drop=True)
    return SimulationResult(transactions=tx, outcomes=outcomes, labels=label_frame, intercept=intercept)


def jittered_feed(outcomes: pd.DataFrame, *, max_delay: dt.timedelta, seed: int) -> pd.DataFrame:
    """The outcome log as a lagging producer delivers it: each signal flagged ``d1`` after the simulator's instant
    (its ``event_timestamp`` moves by ``d1``: a batch job notices the late instalment) and delivered ``d2`` after
    that (a ``delivered_at`` column), ``d1`` and ``d2`` uniform in [1 s, ``max_delay`` / 2] and drawn per signal.

    The simulator itself puts a late instalment 2 on day 17 to the second; a real feed does not. Replayed
    (:func:`~shadowgate.simulation.replay.outcome_bodies` states the ``delivered_at``) or loaded as is, it tests
    that the labels tolerate a feed that is seconds to hours late (``GroundTruthSettings.early_grace_hours``).
    """
    seconds = max(max_delay.total_seconds() / 2, 1.0)
    # Whole microseconds: what a timestamp holds in the warehouse and on the wire.
    micros = np.round(_rng(seed, "feed.jitter").uniform(1.0, seconds, size=(2, len(outcomes))) * 1e6).astype(np.int64)
    flagged = outcomes["event_timestamp"] + pd.to_timedelta(micros[0], unit="us")
    return outcomes.assign(event_timestamp=flagged, delivered_at=flagged + pd.to_timedelta(micros[1], unit="us"))
