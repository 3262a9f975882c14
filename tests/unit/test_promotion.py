"""The promotion gate's decision (pure): every gate's value, threshold and verdict; inconclusive never ships."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadowgate.decisioning.experiments import ConfigError
from shadowgate.promotion import Action, Evidence, GateConfig, decide, load_gates

GATES = load_gates()
PASSING = Evidence(
    challenger="challenger@2",
    champion="champion@1",
    plan_verdict="superior",
    look=7,
    brier_difference_high=0.0005,
    approval_rate_change=0.01,
    expected_loss_change=-0.03,
    latency_p99_ms=1.2,
    srm_p_value=None,
    open_drift_alerts=(),
)


def test_the_shipped_gates_load_with_a_version_and_a_stable_digest() -> None:
    assert GATES.version == 1
    assert GATES.digest == load_gates().digest and len(GATES.digest) == 16
    changed = GATES.model_copy(update={"version": 2})
    assert changed.digest != GATES.digest


def test_every_gate_passing_promotes_and_records_each_gate() -> None:
    decision = decide(PASSING, GATES)
    assert decision.action is Action.PROMOTE
    assert [g.gate for g in decision.gates] == [
        "comparison", "calibration", "approval_rate", "expected_loss", "latency", "drift"
    ]  # fmt: skip
    assert all(g.passed for g in decision.gates)
    evidence = decision.evidence()
    assert evidence["gate_config_version"] == 1 and evidence["gate_config_digest"] == GATES.digest


def test_no_champion_is_the_first_deployment_without_a_comparison() -> None:
    decision = decide(dataclasses.replace(PASSING, champion=None, plan_verdict=None), GATES)
    assert decision.action is Action.FIRST_DEPLOYMENT and decision.gates == ()


@pytest.mark.parametrize("verdict", ["futile", "not_shown"])
def test_an_inconclusive_or_futile_plan_retires_the_challenger(verdict: str) -> None:
    decision = decide(dataclasses.replace(PASSING, plan_verdict=verdict), GATES)
    assert decision.action is Action.RETIRE
    assert "inconclusive never ships" in decision.summary


@pytest.mark.parametrize(
    ("change", "gate"),
    [
        ({"plan_verdict": "continue"}, "comparison"),
        ({"brier_difference_high": 0.01}, "calibration"),
        ({"approval_rate_change": -0.2}, "approval_rate"),
        ({"expected_loss_change": 0.5}, "expected_loss"),
        ({"latency_p99_ms": 9.0}, "latency"),
        ({"srm_p_value": 1e-6}, "split"),
        ({"open_drift_alerts": ("drift: amount",)}, "drift"),
        ({"latency_p99_ms": None}, "latency"),  # not measured never passes
    ],
)
def test_one_failing_gate_holds_the_promotion_and_says_which(change: dict[str, object], gate: str) -> None:
    decision = decide(dataclasses.replace(PASSING, **change), GATES)  # type: ignore[arg-type]
    assert decision.action is Action.WAIT
    failed = [g.gate for g in decision.gates if not g.passed]
    assert failed == [gate]
    assert decision.reasons and "nothing moved" in decision.summary


@given(
    verdict=st.sampled_from(["superior", "futile", "not_shown", "continue", None]),
    brier=st.one_of(st.none(), st.floats(-0.05, 0.05)),
    approval=st.one_of(st.none(), st.floats(-0.5, 0.5)),
    loss=st.one_of(st.none(), st.floats(-1, 1)),
    latency=st.one_of(st.none(), st.floats(0, 20)),
    srm=st.one_of(st.none(), st.floats(0, 1)),
    alerts=st.lists(st.sampled_from(["drift: amount", "unseen: channel"]), max_size=2),
)
def test_a_promotion_happens_only_when_every_gate_passes(
    verdict: str | None,
    brier: float | None,
    approval: float | None,
    loss: float | None,
    latency: float | None,
    srm: float | None,
    alerts: list[str],
) -> None:
    evidence = Evidence(
        challenger="challenger@3", champion="champion@1", plan_verdict=verdict, brier_difference_high=brier,
        approval_rate_change=approval, expected_loss_change=loss, latency_p99_ms=latency, srm_p_value=srm,
        open_drift_alerts=tuple(alerts),
    )  # fmt: skip
    decision = decide(evidence, GATES)
    every_gate = all(g.passed for g in decision.gates)
    assert (decision.action is Action.PROMOTE) == (every_gate and verdict == "superior")
    if verdict in ("futile", "not_shown"):
        assert decision.action is Action.RETIRE  # never promoted, never left waiting
    assert decision.action is not Action.FIRST_DEPLOYMENT


def test_a_gate_file_with_an_unknown_field_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "gates.yaml"
    path.write_text((Path(__file__).parents[2] / "include/shadowgate/decisioning/config/gates.yaml").read_text()
                    + "\nextra_gate: {}\n")  # fmt: skip
    with pytest.raises(ConfigError, match="extra_gate"):
        load_gates(path)
    assert isinstance(GATES, GateConfig)
