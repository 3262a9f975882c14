"""Decision policies: threshold edges, rule precedence, VIP limits, segments, the fallback and the shipped files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shadowgate.contract import example_transaction
from shadowgate.decisioning import policies as pol
from shadowgate.decisioning.experiments import ConfigError
from shadowgate.decisioning.policies import (
    Decision,
    DecisionContext,
    DecisionPolicy,
    PolicyBook,
    PolicyDecision,
    RiskLevel,
    decide,
    load_policy,
)
from shadowgate.features import NEW_CUSTOMER_DAYS
from tests.strategies import transactions

CONSERVATIVE = load_policy("conservative")
AGGRESSIVE = load_policy("aggressive")
PLAIN = DecisionContext()
VIP = DecisionContext(is_vip=True)
CODE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
DRIVERS = {
    pol.PRIOR_DEFAULT,
    pol.HIGH_UTILISATION,
    pol.RECENT_LATE_PAYMENTS,
    pol.HIGH_VELOCITY_24H,
    pol.NEW_CUSTOMER,
    pol.THIN_FILE,
}


def _tx(**overrides: Any) -> dict[str, Any]:
    """An established customer with a clean history and a small purchase well within the limit."""
    tx = example_transaction()
    tx.update(
        amount=100.0,
        credit_limit=2000.0,
        outstanding_balance=200.0,
        customer_tenure_days=400,
        prior_purchases=10,
        prior_late_payments=0,
        prior_defaults=0,
        purchases_last_24h=0,
    )
    tx.update(overrides)
    return tx


def _decide(
    score: float | None, *, policy: DecisionPolicy = CONSERVATIVE, context: DecisionContext = PLAIN, **tx: Any
) -> PolicyDecision:
    return decide(score=score, transaction=_tx(**tx), context=context, policy=policy)


# --- shipped files -------------------------------------------------------------------------------------------------


def test_shipped_policies_have_the_exact_thresholds() -> None:
    assert (CONSERVATIVE.name, CONSERVATIVE.thresholds.high, CONSERVATIVE.thresholds.medium) == (
        "conservative",
        0.5,
        0.25,
    )
    assert (AGGRESSIVE.name, AGGRESSIVE.thresholds.high, AGGRESSIVE.thresholds.medium) == ("aggressive", 0.8, 0.5)
    for policy in (CONSERVATIVE, AGGRESSIVE):
        assert policy.rules.regulatory_flags == {
            "sanctions_hit": "deny",
            "self_exclusion": "deny",
            "affordability_check_required": "manual_review",
        }
        assert policy.rules.vip_approve_up_to_level == "medium"
    assert CONSERVATIVE.rules.new_customer_manual_review_amount == 500.0
    assert pol.shipped_policy_names() == ("aggressive", "conservative")


def test_policy_book() -> None:
    book = PolicyBook.load()
    assert book.active is book.get("conservative")
    assert book.names() == ("aggressive", "conservative")
    aggressive = book.with_active("aggressive")
    assert aggressive.active.name == "aggressive"
    assert aggressive.decide(score=0.6, transaction=_tx(), context=PLAIN).decision is Decision.MANUAL_REVIEW
    assert book.decide(score=0.6, transaction=_tx(), context=PLAIN).decision is Decision.DENY
    with pytest.raises(ConfigError, match="active policy is not loaded"):
        book.with_active("reckless")


def test_policy_book_takes_extra_files(tmp_path: Path) -> None:
    path = tmp_path / "strict.yaml"
    path.write_text("name: strict\nversion: 2\nthresholds: {high: 0.3, medium: 0.1}\n")
    book = PolicyBook.load("strict", extra=[path])
    assert book.active.version == 2
    assert book.decide(score=0.3, transaction=_tx(), context=PLAIN).decision is Decision.DENY


# --- thresholds ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "score", "level", "decision"),
    [
        (CONSERVATIVE, 0.5, RiskLevel.HIGH, Decision.DENY),
        (CONSERVATIVE, 0.4999999, RiskLevel.MEDIUM, Decision.MANUAL_REVIEW),
        (CONSERVATIVE, 0.25, RiskLevel.MEDIUM, Decision.MANUAL_REVIEW),
        (CONSERVATIVE, 0.2499999, RiskLevel.LOW, Decision.APPROVE),
        (CONSERVATIVE, 0.0, RiskLevel.LOW, Decision.APPROVE),
        (CONSERVATIVE, 1.0, RiskLevel.HIGH, Decision.DENY),
        (AGGRESSIVE, 0.8, RiskLevel.HIGH, Decision.DENY),
        (AGGRESSIVE, 0.7999999, RiskLevel.MEDIUM, Decision.MANUAL_REVIEW),
        (AGGRESSIVE, 0.5, RiskLevel.MEDIUM, Decision.MANUAL_REVIEW),
        (AGGRESSIVE, 0.4999999, RiskLevel.LOW, Decision.APPROVE),
    ],
)
def test_threshold_edges(policy: DecisionPolicy, score: float, level: RiskLevel, decision: Decision) -> None:
    out = _decide(score, policy=policy)
    assert (out.risk_level, out.decision, out.fallback) == (level, decision, False)
    assert (out.policy_name, out.policy_version) == (policy.name, policy.version)


def test_score_reason_codes() -> None:
    assert _decide(0.9).reason_codes == (pol.SCORE_HIGH_RISK,)
    assert _decide(0.3).reason_codes == (pol.SCORE_MEDIUM_RISK,)
    assert _decide(0.1).reason_codes == ()


# --- segments ------------------------------------------------------------------------------------------------------


def test_new_customer_thresholds() -> None:
    new: dict[str, Any] = {"customer_tenure_days": NEW_CUSTOMER_DAYS - 1}
    assert _decide(0.4, **new).risk_level is RiskLevel.HIGH  # conservative new_customer high = 0.4
    assert _decide(0.4, customer_tenure_days=NEW_CUSTOMER_DAYS).risk_level is RiskLevel.MEDIUM
    assert _decide(0.2, **new).risk_level is RiskLevel.MEDIUM
    assert _decide(0.1999, **new).risk_level is RiskLevel.LOW


def test_thin_file_thresholds() -> None:
    assert _decide(0.45, prior_purchases=2).risk_level is RiskLevel.HIGH
    assert _decide(0.45, prior_purchases=3).risk_level is RiskLevel.MEDIUM


def test_vip_thresholds() -> None:
    assert _decide(0.55, context=VIP).risk_level is RiskLevel.MEDIUM  # vip high = 0.6
    assert _decide(0.6, context=VIP).risk_level is RiskLevel.HIGH
    assert _decide(0.28, context=VIP).risk_level is RiskLevel.LOW  # vip medium = 0.3


def test_several_segments_take_the_most_cautious_thresholds() -> None:
    both: dict[str, Any] = {"customer_tenure_days": 10, "prior_purchases": 0}
    # new_customer (0.4, 0.2) and thin_file (0.45, 0.2) → high 0.4, medium 0.2; vip (0.6, 0.3) does not loosen it.
    assert _decide(0.4, **both).risk_level is RiskLevel.HIGH
    assert _decide(0.4, context=VIP, **both).risk_level is RiskLevel.HIGH
    assert CONSERVATIVE.thresholds_for(new_customer=True, thin_file=True, vip=True) == (0.4, 0.2)
    assert CONSERVATIVE.thresholds_for(new_customer=False, thin_file=False, vip=False) == (0.5, 0.25)


def test_policy_without_segment_overrides_uses_the_base_thresholds() -> None:
    bare = DecisionPolicy(name="bare", version=1, thresholds=pol.Thresholds(high=0.5, medium=0.25))
    assert _decide(0.45, policy=bare, customer_tenure_days=1, prior_purchases=0).risk_level is RiskLevel.MEDIUM


# --- business rules and their precedence ---------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["sanctions_hit", "self_exclusion", "SANCTIONS-HIT"])
def test_regulatory_deny_flags(flag: str) -> None:
    out = _decide(0.01, context=DecisionContext(regulatory_flags=(flag,)))
    assert out.decision is Decision.DENY
    assert out.reason_codes[0] == pol.regulatory_reason_code(flag)
    assert out.risk_level is RiskLevel.LOW  # the risk level stays the model's view


def test_regulatory_review_flag() -> None:
    ctx = DecisionContext(regulatory_flags=("affordability_check_required",))
    out = _decide(0.01, context=ctx)
    assert out.decision is Decision.MANUAL_REVIEW
    assert out.reason_codes[0] == "REGULATORY_FLAG_AFFORDABILITY_CHECK_REQUIRED"
    assert _decide(0.9, context=ctx).decision is Decision.DENY  # a review flag never softens a deny


def test_unknown_regulatory_flag_fails_safe() -> None:
    out = _decide(0.01, context=DecisionContext(regulatory_flags=("pep_match",)))
    assert out.decision is Decision.MANUAL_REVIEW
    assert "REGULATORY_FLAG_PEP_MATCH" in out.reason_codes


def test_amount_over_available_limit() -> None:
    # available = 2000 - 200 = 1800
    assert _decide(0.01, amount=1800.0).decision is Decision.APPROVE
    out = _decide(0.01, amount=1800.01)
    assert out.decision is Decision.MANUAL_REVIEW
    assert out.reason_codes[0] == pol.AMOUNT_OVER_AVAILABLE_LIMIT


def test_new_customer_high_amount() -> None:
    new: dict[str, Any] = {"customer_tenure_days": 30}
    assert _decide(0.01, amount=500.0, **new).decision is Decision.APPROVE
    out = _decide(0.01, amount=500.01, **new)
    assert out.decision is Decision.MANUAL_REVIEW
    assert out.reason_codes[0] == pol.NEW_CUSTOMER_HIGH_AMOUNT
    assert _decide(0.01, amount=900.0).decision is Decision.APPROVE  # established customers are not referred


def test_precedence_order_of_reason_codes() -> None:
    ctx = DecisionContext(regulatory_flags=("sanctions_hit",), is_vip=True)
    out = _decide(0.3, context=ctx, amount=1900.0, customer_tenure_days=30)
    assert out.decision is Decision.DENY
    assert out.reason_codes[:4] == (
        "REGULATORY_FLAG_SANCTIONS_HIT",
        pol.AMOUNT_OVER_AVAILABLE_LIMIT,
        pol.NEW_CUSTOMER_HIGH_AMOUNT,
        pol.SCORE_MEDIUM_RISK,
    )
    assert pol.VIP_OVERRIDE not in out.reason_codes


def test_vip_medium_is_approved() -> None:
    out = _decide(0.45, context=VIP)
    assert (out.decision, out.risk_level) == (Decision.APPROVE, RiskLevel.MEDIUM)
    assert out.reason_codes == (pol.SCORE_MEDIUM_RISK, pol.VIP_OVERRIDE)


@pytest.mark.parametrize("flag", ["sanctions_hit", "self_exclusion"])
def test_vip_never_overrides_a_regulatory_deny(flag: str) -> None:
    for score in (0.0, 0.3, 0.45, 0.9):
        out = _decide(score, context=DecisionContext(regulatory_flags=(flag,), is_vip=True))
        assert out.decision is Decision.DENY
        assert pol.VIP_OVERRIDE not in out.reason_codes


def test_vip_never_overrides_high_risk() -> None:
    out = _decide(0.95, context=VIP)
    assert out.decision is Decision.DENY
    assert pol.VIP_OVERRIDE not in out.reason_codes


def test_vip_does_not_override_the_higher_precedence_rules() -> None:
    assert _decide(0.45, context=VIP, amount=1900.0).decision is Decision.MANUAL_REVIEW
    assert _decide(0.35, context=VIP, amount=600.0, customer_tenure_days=30).decision is Decision.MANUAL_REVIEW
    review_flag = DecisionContext(regulatory_flags=("affordability_check_required",), is_vip=True)
    assert _decide(0.45, context=review_flag).decision is Decision.MANUAL_REVIEW


def test_vip_handling_can_be_switched_off() -> None:
    rules = CONSERVATIVE.rules.model_copy(update={"vip_approve_up_to_level": "low"})
    policy = CONSERVATIVE.model_copy(update={"rules": rules})
    assert _decide(0.45, policy=policy, context=VIP).decision is Decision.MANUAL_REVIEW


# --- drivers -------------------------------------------------------------------------------------------------------


def test_driver_codes_for_a_non_approve() -> None:
    out = _decide(
        0.9,
        prior_defaults=1,
        outstanding_balance=1500.0,
        amount=200.0,  # (1500 + 200) / 2000 = 0.85 > 0.8
        prior_late_payments=2,
        purchases_last_24h=3,
    )
    assert out.reason_codes == (pol.SCORE_HIGH_RISK, pol.PRIOR_DEFAULT, pol.HIGH_UTILISATION, pol.RECENT_LATE_PAYMENTS)


def test_driver_thresholds() -> None:
    assert _decide(0.9, purchases_last_24h=2).reason_codes == (pol.SCORE_HIGH_RISK,)
    assert _decide(0.9, purchases_last_24h=3).reason_codes == (pol.SCORE_HIGH_RISK, pol.HIGH_VELOCITY_24H)
    at_80 = _decide(0.9, outstanding_balance=1500.0, amount=100.0)  # exactly 0.8: not above
    assert pol.HIGH_UTILISATION not in at_80.reason_codes
    new_thin = _decide(0.9, customer_tenure_days=5, prior_purchases=1)
    assert new_thin.reason_codes == (pol.SCORE_HIGH_RISK, pol.NEW_CUSTOMER, pol.THIN_FILE)


def test_approvals_carry_no_drivers() -> None:
    assert _decide(0.01, prior_late_payments=5, purchases_last_24h=9).reason_codes == ()
    vip = _decide(0.45, context=VIP, prior_late_payments=5)
    assert vip.decision is Decision.APPROVE
    assert pol.RECENT_LATE_PAYMENTS not in vip.reason_codes


# --- fallback ------------------------------------------------------------------------------------------------------


def test_fallback_approves_a_small_clean_purchase() -> None:
    out = _decide(None, amount=150.0)
    assert (out.decision, out.risk_level, out.fallback) == (Decision.APPROVE, RiskLevel.LOW, True)
    assert out.reason_codes == (pol.FALLBACK_POLICY,)


def test_fallback_refers_above_its_max_amount() -> None:
    out = _decide(None, amount=150.01)
    assert (out.decision, out.risk_level) == (Decision.MANUAL_REVIEW, RiskLevel.MEDIUM)
    assert out.reason_codes == (pol.FALLBACK_POLICY, pol.FALLBACK_AMOUNT_ABOVE_MAX)
    assert _decide(None, policy=AGGRESSIVE, amount=300.0).decision is Decision.APPROVE


def test_fallback_denies_prior_defaults() -> None:
    out = _decide(None, prior_defaults=1)
    assert (out.decision, out.risk_level) == (Decision.DENY, RiskLevel.HIGH)
    assert out.reason_codes[:2] == (pol.FALLBACK_POLICY, pol.PRIOR_DEFAULT)
    assert out.reason_codes.count(pol.PRIOR_DEFAULT) == 1


def test_fallback_refers_high_utilisation() -> None:
    assert _decide(None, outstanding_balance=1700.0, amount=100.0).decision is Decision.APPROVE  # exactly 0.9
    out = _decide(None, outstanding_balance=1701.0, amount=100.0)
    assert out.decision is Decision.MANUAL_REVIEW
    assert out.reason_codes[:2] == (pol.FALLBACK_POLICY, pol.HIGH_UTILISATION)


def test_fallback_refers_new_customers_above_the_amount() -> None:
    out = _decide(None, policy=AGGRESSIVE, customer_tenure_days=3, amount=1000.5)
    assert out.decision is Decision.MANUAL_REVIEW
    assert pol.NEW_CUSTOMER_HIGH_AMOUNT in out.reason_codes


def test_fallback_keeps_regulatory_flags_and_ignores_vip() -> None:
    out = _decide(None, context=DecisionContext(regulatory_flags=("self_exclusion",), is_vip=True))
    assert out.decision is Decision.DENY
    assert out.reason_codes[:2] == (pol.FALLBACK_POLICY, "REGULATORY_FLAG_SELF_EXCLUSION")
    assert _decide(None, context=VIP, amount=400.0).decision is Decision.MANUAL_REVIEW


@pytest.mark.parametrize("score", [float("nan"), -0.1, 1.5, float("inf")])
def test_an_invalid_score_uses_the_fallback(score: float) -> None:
    out = _decide(score)
    assert out.fallback
    assert out.reason_codes[:2] == (pol.FALLBACK_POLICY, pol.INVALID_SCORE)


# --- properties ----------------------------------------------------------------------------------------------------

_SEVERITY = {Decision.APPROVE: 0, Decision.MANUAL_REVIEW: 1, Decision.DENY: 2}
_contexts = st.builds(
    DecisionContext,
    regulatory_flags=st.lists(
        st.sampled_from(["sanctions_hit", "self_exclusion", "affordability_check_required", "pep_match"]), max_size=2
    ).map(tuple),
    is_vip=st.booleans(),
)
_scores = st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0))


@settings(max_examples=400, deadline=None)
@given(tx=transactions(), score=_scores, context=_contexts, policy=st.sampled_from([CONSERVATIVE, AGGRESSIVE]))
def test_every_decision_is_well_formed(
    tx: dict[str, Any], score: float | None, context: DecisionContext, policy: DecisionPolicy
) -> None:
    out = decide(score=score, transaction=tx, context=context, policy=policy)
    assert out.fallback is (score is None)
    assert all(CODE.match(code) for code in out.reason_codes)
    assert len(set(out.reason_codes)) == len(out.reason_codes)
    assert sum(code in DRIVERS for code in out.reason_codes) <= 3 + (score is None)
    if out.decision is Decision.APPROVE:
        assert not any(code in DRIVERS for code in out.reason_codes) or score is None
    if any(policy.rules.regulatory_flags.get(f) == "deny" for f in context.regulatory_flags):
        assert out.decision is Decision.DENY
    if tx["amount"] > tx["credit_limit"] - tx["outstanding_balance"]:
        assert out.decision is not Decision.APPROVE


@settings(max_examples=300, deadline=None)
@given(
    tx=transactions(),
    a=st.floats(min_value=0.0, max_value=1.0),
    b=st.floats(min_value=0.0, max_value=1.0),
    context=_contexts,
)
def test_a_higher_score_is_never_treated_more_leniently(
    tx: dict[str, Any], a: float, b: float, context: DecisionContext
) -> None:
    low, high = sorted((a, b))
    lenient = decide(score=low, transaction=tx, context=context, policy=CONSERVATIVE)
    strict = decide(score=high, transaction=tx, context=context, policy=CONSERVATIVE)
    assert _SEVERITY[strict.decision] >= _SEVERITY[lenient.decision]


# --- config errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("name: p\nversion: 1\nthresholds: {high: 0.2, medium: 0.5}\n", "thresholds", "must be <= high"),
        ("name: p\nversion: 1\nthresholds: {high: 1.2, medium: 0.5}\n", "thresholds.high", "less than or equal"),
        ("name: p\nversion: 0\nthresholds: {high: 0.5, medium: 0.2}\n", "version", "greater than or equal"),
        (
            "name: p\nversion: 1\nthresholds: {high: 0.5, medium: 0.2}\n"
            "segment_thresholds: {gold: {high: 1, medium: 0}}\n",
            "segment_thresholds.gold",
            "",
        ),
        (
            "name: p\nversion: 1\nthresholds: {high: 0.5, medium: 0.2}\nrules: {regulatory_flags: {x: approve}}\n",
            "rules.regulatory_flags.x",
            "",
        ),
        (
            "name: p\nversion: 1\nthresholds: {high: 0.5, medium: 0.2}\nrules: {vip_approve_up_to_level: high}\n",
            "rules.vip_approve_up_to_level",
            "",
        ),
    ],
)
def test_bad_policy_files_name_the_field(tmp_path: Path, text: str, field: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"bad.yaml: {field}")) as info:
        load_policy(path)
    assert info.value.field is not None and info.value.field.startswith(field)
    assert message in str(info.value)


def test_unknown_policy_name() -> None:
    with pytest.raises(ConfigError, match="shipped policies: aggressive, conservative"):
        load_policy("reckless")
