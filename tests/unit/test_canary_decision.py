"""The canary guard's decision and its config (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadowgate.decisioning.experiments import ConfigError
from shadowgate.evaluation.canary_guard import Action, Rollout, Signal, decide, load_canary_config

ROLLOUT = Rollout(stages=(0.05, 0.1, 0.2, 0.5), hold_hours=24)
OK = Signal("errors", 0.0, 0.01, False, "fine")
BAD = Signal("approval_rate", -0.4, 0.1, True, "approval rate: treatment 20%, control 60%")


@given(
    hours=st.floats(min_value=0, max_value=1_000),
    breach_in=st.sampled_from(["recent", "stage", "both"]),
    share=st.sampled_from([0.05, 0.1, 0.2, 0.5]),
)
def test_a_breach_always_stops_and_never_advances(hours: float, breach_in: str, share: float) -> None:
    recent = (BAD,) if breach_in in ("recent", "both") else (OK,)
    stage = (BAD,) if breach_in in ("stage", "both") else (OK,)
    verdict = decide(recent, stage, share=share, stage_hours=hours, rollout=ROLLOUT)
    assert verdict.action is Action.STOP and verdict.next_share is None
    assert verdict.summary.startswith("STOPPED — approval_rate")


@pytest.mark.parametrize(
    ("share", "hours", "action", "next_share"),
    [(0.05, 23.9, Action.HOLD, None), (0.05, 24.0, Action.ADVANCE, 0.1), (0.2, 30, Action.ADVANCE, 0.5),
     (0.5, 500, Action.HOLD, None), (0.07, 500, Action.HOLD, None)],
)  # fmt: skip
def test_a_stage_advances_only_after_its_hold_time_and_stops_at_the_last(
    share: float, hours: float, action: Action, next_share: float | None
) -> None:
    verdict = decide((), (OK,), share=share, stage_hours=hours, rollout=ROLLOUT)
    assert (verdict.action, verdict.next_share) == (action, next_share)


def test_nothing_judged_is_not_judged_and_no_rollout_never_advances() -> None:
    assert decide((), (), share=0.05, stage_hours=100, rollout=ROLLOUT).action is Action.NOT_JUDGED
    assert decide((OK,), (OK,), share=0.05, stage_hours=100, rollout=None).action is Action.HOLD


def test_the_shipped_config_loads_and_a_bad_one_names_its_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = load_canary_config()
    assert config.version == 1 and config.rollouts["canary-challenger"].stages == (0.05, 0.1, 0.2, 0.5)
    assert len(config.digest) == 16
    bad = tmp_path / "canary.yaml"
    bad.write_text("version: 1\nguard: {window_hours: 0}\n")
    with pytest.raises(ConfigError, match="window_hours"):
        load_canary_config(bad)
    with pytest.raises(ValueError, match="increasing"):
        Rollout(stages=(0.2, 0.1), hold_hours=1)
