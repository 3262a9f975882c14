"""Sticky assignment: deterministic everywhere, unbiased, monotone under ramp-up, independent across experiments."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2_contingency

from shadowgate.decisioning.experiments import Experiment, ExperimentMode, ExperimentStatus
from shadowgate.serving import assignment
from shadowgate.serving.assignment import arm_for, assign, unit_bucket

N_UNITS = 20_000
IDS = [f"cus_{i:06d}" for i in range(N_UNITS)]


def _experiment(*, share: float, mode: ExperimentMode = ExperimentMode.CANARY, salt: str = "salt-a") -> Experiment:
    return Experiment(
        id="exp-a", version=3, salt=salt, mode=mode, status=ExperimentStatus.ACTIVE, treatment_share=share
    )


def test_bucket_golden_values() -> None:
    # Pinned values: a change of hash, encoding or scaling would silently reshuffle every customer in production.
    assert unit_bucket("salt-a", "cus_000001") == 0.7506364253933983
    assert unit_bucket("shadow-challenger-2026", "cus_000042") == 0.602285682214686
    assert unit_bucket("canary-challenger-2026", "cus_000042") == 0.008728096885086467


def test_bucket_follows_the_documented_algorithm() -> None:
    for unit in IDS[:200]:
        digest = hashlib.blake2b(f"salt-a:{unit}".encode(), digest_size=8).digest()
        # First 8 bytes big-endian / 2**64, at float precision (truncated, so never rounded up to 1.0).
        expected = math.ldexp(int.from_bytes(digest, "big") >> 11, -53)
        assert unit_bucket("salt-a", unit) == expected
        assert abs(unit_bucket("salt-a", unit) - int.from_bytes(digest, "big") / 2**64) < 2**-52
    assert unit_bucket("salt-a", "cus_000001") != unit_bucket("salt-b", "cus_000001")
    assert unit_bucket("salt-a", "cus_000001") != unit_bucket("salt-a", "cus_000002")


def test_bucket_never_reaches_one() -> None:
    assert assignment._to_unit_interval(2**64 - 1) < 1.0
    assert assignment._to_unit_interval(0) == 0.0
    assert assignment._to_unit_interval(2**63) == 0.5


@settings(max_examples=300, deadline=None)
@given(salt=st.text(min_size=1, max_size=20), unit=st.text(min_size=1, max_size=40))
def test_bucket_is_in_the_unit_interval(salt: str, unit: str) -> None:
    assert 0.0 <= unit_bucket(salt, unit) < 1.0


def test_buckets_agree_across_processes() -> None:
    # A fresh interpreter with a different hash seed must compute the very same buckets (no use of hash()).
    ids = IDS[:1000]
    code = (
        "import json, sys\n"
        "from shadowgate.serving.assignment import unit_bucket\n"
        "ids = json.load(sys.stdin)\n"
        "print(json.dumps([unit_bucket('salt-a', i) for i in ids]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(ids), capture_output=True, text=True, check=True, env=env
    )
    theirs = json.loads(out.stdout)
    ours = [unit_bucket("salt-a", i) for i in ids]
    assert theirs == ours


def test_same_inputs_give_the_same_assignment() -> None:
    exp = _experiment(share=0.5)
    first = [assign(exp, customer_id=i, transaction_id="tx_1") for i in IDS[:500]]
    again = [assign(exp, customer_id=i, transaction_id=f"tx_{n}") for n, i in enumerate(IDS[:500])]
    assert [a.arm for a in first] == [a.arm for a in again]


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_split_matches_the_share(share: float) -> None:
    exp = _experiment(share=share)
    treated = sum(assign(exp, customer_id=i, transaction_id="tx").arm == "treatment" for i in IDS)
    standard_error = math.sqrt(share * (1 - share) / N_UNITS)
    assert abs(treated / N_UNITS - share) < 4 * standard_error


def test_share_zero_and_one_are_exact() -> None:
    assert all(assign(_experiment(share=1.0), customer_id=i, transaction_id="t").arm == "treatment" for i in IDS[:2000])
    nobody = Experiment(id="exp-a", salt="salt-a", mode=ExperimentMode.CANARY, treatment_share=0.0)
    assert all(assign(nobody, customer_id=i, transaction_id="t").arm == "control" for i in IDS[:2000])


@settings(max_examples=300, deadline=None)
@given(
    unit=st.text(min_size=1, max_size=30),
    a=st.floats(min_value=0.0, max_value=1.0),
    b=st.floats(min_value=0.0, max_value=1.0),
)
def test_ramp_up_only_moves_units_into_treatment(unit: str, a: float, b: float) -> None:
    low, high = sorted((a, b))
    bucket = unit_bucket("salt-a", unit)
    if arm_for(bucket, low) == "treatment":
        assert arm_for(bucket, high) == "treatment"


def test_ramp_up_over_a_population_keeps_every_treated_unit() -> None:
    shares = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0]
    treated_before: set[str] = set()
    for share in shares:
        exp = _experiment(share=share)
        treated = {i for i in IDS[:5000] if assign(exp, customer_id=i, transaction_id="t").arm == "treatment"}
        assert treated_before <= treated
        treated_before = treated


@pytest.mark.parametrize(("share_a", "share_b"), [(0.5, 0.5), (0.3, 0.1)])
def test_experiments_with_different_salts_are_independent(share_a: float, share_b: float) -> None:
    a = _experiment(share=share_a, salt="salt-a")
    b = _experiment(share=share_b, salt="salt-b")
    table = [[0, 0], [0, 0]]
    for unit in IDS:
        row = assign(a, customer_id=unit, transaction_id="t").arm == "treatment"
        col = assign(b, customer_id=unit, transaction_id="t").arm == "treatment"
        table[row][col] += 1
    assert all(cell > 0 for r in table for cell in r)
    p_value = chi2_contingency(table, correction=False).pvalue
    assert p_value > 0.001


def test_same_salt_is_not_independent() -> None:
    # The independence test above can fail: with a shared salt the arms coincide.
    a = _experiment(share=0.5, salt="salt-a")
    table = [[0, 0], [0, 0]]
    for unit in IDS[:5000]:
        arm = assign(a, customer_id=unit, transaction_id="t").arm == "treatment"
        table[arm][arm] += 1
    assert chi2_contingency(table, correction=False).pvalue < 1e-6


@pytest.mark.parametrize("customer_id", [None, ""])
def test_falls_back_to_the_transaction_id(customer_id: str | None) -> None:
    exp = _experiment(share=0.5)
    a = assign(exp, customer_id=customer_id, transaction_id="tx_000123")
    assert a.unit_kind == "transaction"
    assert a.unit_id == "tx_000123"
    assert a.bucket == unit_bucket(exp.salt, "tx_000123")


def test_customer_is_the_unit_when_present() -> None:
    a = assign(_experiment(share=0.5), customer_id="cus_000042", transaction_id="tx_000123")
    assert (a.unit_kind, a.unit_id) == ("customer", "cus_000042")
    assert a.experiment_id == "exp-a"
    assert a.experiment_version == 3


def test_no_unit_at_all_is_an_error() -> None:
    with pytest.raises(ValueError, match="customer_id or a transaction_id"):
        assign(_experiment(share=0.5), customer_id=None, transaction_id="")


def test_shadow_mode_serves_control_with_certainty_and_records_the_would_be_arm() -> None:
    exp = _experiment(share=0.5, mode=ExperimentMode.SHADOW)
    assignments = [assign(exp, customer_id=i, transaction_id="t") for i in IDS[:2000]]
    assert {a.arm for a in assignments} == {"control"}
    assert {a.propensity for a in assignments} == {1.0}
    assert {a.mode for a in assignments} == {"shadow"}
    assert {a.shadow_arm for a in assignments} == {"control", "treatment"}
    for a in assignments:
        assert a.shadow_arm == arm_for(a.bucket, 0.5)


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9, 1.0])
def test_canary_propensity_is_the_probability_of_the_served_arm(share: float) -> None:
    exp = _experiment(share=share)
    for unit in IDS[:1000]:
        a = assign(exp, customer_id=unit, transaction_id="t")
        assert a.mode == "canary"
        assert a.shadow_arm is None
        expected = share if a.arm == "treatment" else 1.0 - share
        assert a.propensity == pytest.approx(expected)
