"""Experiments: lifecycle, versions, the shipped book, serving-alias choice, and planned (audited) changes."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path

import pytest

from shadowgate.decisioning import experiments as ex
from shadowgate.decisioning.experiments import (
    ConfigError,
    Experiment,
    ExperimentBook,
    ExperimentMode,
    ExperimentStatus,
    IllegalTransitionError,
    transition,
    with_share,
)
from shadowgate.serving.assignment import assign_all, serving_alias

AT = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
S = ExperimentStatus
LEGAL = {(S.DRAFT, S.ACTIVE), (S.ACTIVE, S.COMPLETED), (S.ACTIVE, S.STOPPED)}
ALL_MOVES = list(itertools.product(S, S))


def _exp(status: ExperimentStatus = S.DRAFT, **overrides: object) -> Experiment:
    fields: dict[str, object] = {
        "id": "canary-x",
        "salt": "canary-x-salt",
        "mode": ExperimentMode.CANARY,
        "treatment_share": 0.2,
        "status": status,
        "started_at": AT - dt.timedelta(days=1) if status is not S.DRAFT else None,
        "ended_at": AT if status in (S.COMPLETED, S.STOPPED) else None,
    }
    fields.update(overrides)
    return Experiment.model_validate(fields)


# --- lifecycle -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "target"), ALL_MOVES, ids=[f"{a.value}->{b.value}" for a, b in ALL_MOVES])
def test_transition_matrix(start: ExperimentStatus, target: ExperimentStatus) -> None:
    exp = _exp(start)
    if (start, target) in LEGAL:
        moved = transition(exp, target, at=AT, actor="alice", reason="planned")
        assert moved.status is target
        assert moved.version == exp.version + 1
        assert exp.status is start  # the original is untouched
    else:
        with pytest.raises(IllegalTransitionError, match=f"from '{start.value}' to '{target.value}'"):
            transition(exp, target, at=AT, actor="alice", reason="planned")


def test_lifecycle_stamps_times_and_versions_increase() -> None:
    draft = _exp(S.DRAFT)
    active = transition(draft, "active", at=AT, actor="alice", reason="shadow passed")
    done = transition(active, S.COMPLETED, at=AT + dt.timedelta(days=14), actor="bob", reason="enough labels")
    assert [draft.version, active.version, done.version] == [1, 2, 3]
    assert active.started_at == AT and active.ended_at is None
    assert done.ended_at == AT + dt.timedelta(days=14)


def test_final_states_say_so() -> None:
    with pytest.raises(IllegalTransitionError, match="nothing \\(final state\\)"):
        transition(_exp(S.STOPPED), S.ACTIVE, at=AT, actor="alice", reason="retry")


@pytest.mark.parametrize(("actor", "reason"), [("", "why"), ("alice", "  ")])
def test_changes_need_an_actor_and_a_reason(actor: str, reason: str) -> None:
    with pytest.raises(ValueError, match="required"):
        transition(_exp(S.DRAFT), S.ACTIVE, at=AT, actor=actor, reason=reason)
    with pytest.raises(ValueError, match="required"):
        with_share(_exp(S.ACTIVE), 0.3, actor=actor, reason=reason)


def test_naive_time_is_rejected() -> None:
    with pytest.raises(ValueError, match="time-zone aware"):
        transition(_exp(S.DRAFT), S.ACTIVE, at=dt.datetime(2026, 1, 1), actor="alice", reason="go")


def test_share_of_an_active_experiment_can_change() -> None:
    exp = _exp(S.ACTIVE)
    up = with_share(exp, 0.5, actor="alice", reason="ramp")
    assert (up.treatment_share, up.version) == (0.5, exp.version + 1)
    down = with_share(up, 0.1, actor="alice", reason="ramp back")
    assert ex.share_change_flags(up, down) == ["SHARE_LOWERED"]
    assert ex.share_change_flags(exp, up) == []


@pytest.mark.parametrize("share", [-0.01, 1.01, float("nan"), float("inf")])
def test_share_must_be_a_probability(share: float) -> None:
    with pytest.raises(ValueError, match="within \\[0, 1\\]"):
        with_share(_exp(S.ACTIVE), share, actor="alice", reason="ramp")


@pytest.mark.parametrize("status", [S.COMPLETED, S.STOPPED])
def test_share_of_a_finished_experiment_cannot_change(status: ExperimentStatus) -> None:
    with pytest.raises(IllegalTransitionError, match="no longer change"):
        with_share(_exp(status), 0.5, actor="alice", reason="ramp")


def test_active_canary_needs_a_share() -> None:
    with pytest.raises(ValueError, match="treatment_share > 0"):
        with_share(_exp(S.ACTIVE), 0.0, actor="alice", reason="pause")
    shadow = _exp(S.ACTIVE, mode=ExperimentMode.SHADOW, treatment_share=0.0)
    assert shadow.treatment_share == 0.0


def test_aliases_are_registry_aliases() -> None:
    with pytest.raises(ValueError, match="treatment_alias"):
        _exp(treatment_alias="production")
    with pytest.raises(ValueError, match="must differ"):
        _exp(treatment_alias="champion")


# --- the book ------------------------------------------------------------------------------------------------------


def test_shipped_book() -> None:
    book = ex.load_book()
    shadow = book.get("shadow-challenger")
    canary = book.get("canary-challenger")
    assert (shadow.status, shadow.mode, shadow.treatment_alias) == (S.ACTIVE, ExperimentMode.SHADOW, "challenger")
    assert (canary.status, canary.mode, canary.treatment_share) == (S.DRAFT, ExperimentMode.CANARY, 0.1)
    assert book.active() == (shadow,)
    with pytest.raises(ex.ExperimentNotFoundError):
        book.get("nope")


def _book(*experiments: Experiment) -> ExperimentBook:
    return ExperimentBook(version=1, experiments=experiments)


def test_active_is_ordered_by_priority() -> None:
    a = _exp(S.ACTIVE, id="a", salt="sa", priority=50)
    b = _exp(S.ACTIVE, id="b", salt="sb", priority=5)
    c = _exp(S.DRAFT, id="c", salt="sc", priority=1)
    book = _book(a, b, c)
    assert [e.id for e in book.active()] == ["b", "a"]
    assert [x.experiment_id for x in assign_all(book, customer_id="cus_1", transaction_id="tx_1")] == ["b", "a"]


def test_book_rejects_duplicate_ids_and_salts() -> None:
    with pytest.raises(ValueError, match="duplicate experiment id"):
        _book(_exp(id="a", salt="s1"), _exp(id="a", salt="s2"))
    with pytest.raises(ValueError, match="duplicate experiment salt"):
        _book(_exp(id="a", salt="s1"), _exp(id="b", salt="s1"))


def test_serving_alias_without_experiments_is_the_champion() -> None:
    book = _book(_exp(S.DRAFT))
    assert serving_alias(book, assign_all(book, customer_id="cus_1", transaction_id="tx")) == ("champion", None)


def test_serving_alias_with_only_shadow_is_the_champion() -> None:
    shadow = _exp(S.ACTIVE, id="shadow", salt="s", mode=ExperimentMode.SHADOW, treatment_share=1.0)
    book = _book(shadow)
    assignments = assign_all(book, customer_id="cus_1", transaction_id="tx")
    alias, deciding = serving_alias(book, assignments)
    assert alias == "champion"
    assert deciding is not None and deciding.experiment_id == "shadow"
    assert deciding.shadow_arm == "treatment"


def test_serving_alias_follows_the_highest_priority_treated_canary() -> None:
    shadow = _exp(S.ACTIVE, id="shadow", salt="s0", mode=ExperimentMode.SHADOW, treatment_share=0.0, priority=0)
    low = _exp(S.ACTIVE, id="low", salt="s1", treatment_share=1.0, priority=20, treatment_alias="previous")
    high = _exp(S.ACTIVE, id="high", salt="s2", treatment_share=1.0, priority=10)
    book = _book(shadow, low, high)
    alias, deciding = serving_alias(book, assign_all(book, customer_id="cus_1", transaction_id="tx"))
    assert alias == "challenger"
    assert deciding is not None and deciding.experiment_id == "high"
    # Assignments given in any order still resolve by the book's priorities.
    shuffled = list(reversed(assign_all(book, customer_id="cus_1", transaction_id="tx")))
    assert serving_alias(book, shuffled)[0] == "challenger"


def test_serving_alias_of_a_control_unit_is_the_champion() -> None:
    canary = _exp(S.ACTIVE, id="canary", salt="s1", treatment_share=0.5)
    book = _book(canary)
    served = {}
    for i in range(200):
        assignments = assign_all(book, customer_id=f"cus_{i}", transaction_id="tx")
        served[assignments[0].arm] = serving_alias(book, assignments)
    assert served["treatment"][0] == "challenger"
    assert served["control"][0] == "champion"
    assert served["control"][1] is not None and served["control"][1].arm == "control"


# --- config errors -------------------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_bad_yaml_names_file_and_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "experiments.yaml",
        "version: 1\nexperiments:\n  - id: a\n    salt: s\n    mode: canary\n    treatment_share: 1.5\n",
    )
    with pytest.raises(
        ConfigError, match=r"experiments\.yaml: experiments\[0\]\.treatment_share: .*less than or equal"
    ) as info:
        ex.load_book(path)
    assert info.value.field == "experiments[0].treatment_share"
    assert info.value.source == str(path)


def test_unknown_field_is_named(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "e.yaml", "version: 1\nexperiments:\n  - id: a\n    salt: s\n    mode: canary\n    share: 1\n"
    )
    with pytest.raises(ConfigError, match=r"experiments\[0\]\.share"):
        ex.load_book(path)


def test_unparseable_yaml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "broken.yaml", "version: 1\nexperiments: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: invalid YAML"):
        ex.load_book(path)
    with pytest.raises(ConfigError, match="expected a mapping"):
        ex.load_book(_write(tmp_path / "list.yaml", "- 1\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        ex.load_book(tmp_path / "missing.yaml")


# --- planned changes (committed by the store in Redis: tests/integration/test_experiment_store.py) ----------------


def test_changes_planned_one_after_another_make_dense_versions_and_full_audit_records() -> None:
    book = ex.load_book()
    activated = ex.plan_transition(book, "canary-challenger", to="active", actor="alice", reason="shadow passed", at=AT)
    later = AT + dt.timedelta(hours=1)
    ramped = ex.plan_share(activated.book, "canary-challenger", share=0.25, actor="bob", reason="ramp", at=later)
    lowered = ex.plan_share(ramped.book, "canary-challenger", share=0.05, actor="bob", reason="incident", at=later)

    assert [c.book.version for c in (activated, ramped, lowered)] == [2, 3, 4]
    assert [c.experiment.version for c in (activated, ramped, lowered)] == [2, 3, 4]
    assert lowered.book.get("canary-challenger") == lowered.experiment
    assert [e.id for e in lowered.book.active()] == ["canary-challenger", "shadow-challenger"]
    assert book.get("canary-challenger").status is S.DRAFT  # the book planned on is untouched

    records = [c.record for c in (activated, ramped, lowered)]
    assert [(r.from_version, r.to_version) for r in records] == [(1, 2), (2, 3), (3, 4)]
    assert [r.change for r in records] == ["transition", "share", "share"]
    assert [r.actor for r in records] == ["alice", "bob", "bob"]
    assert (records[0].reason, records[0].at) == ("shadow passed", AT.isoformat())
    assert records[0].details == {"from_status": "draft", "to_status": "active"}
    assert records[0].before == book.get("canary-challenger").model_dump(mode="json")
    assert records[0].after == activated.experiment.model_dump(mode="json")
    assert (records[1].flags, records[2].flags) == ([], ["SHARE_LOWERED"])
    assert records[2].details == {"from_share": 0.25, "to_share": 0.05}
    assert (records[2].experiment_from_version, records[2].experiment_to_version) == (3, 4)
    assert len({r.change_id for r in records}) == 3


def test_illegal_changes_are_refused_before_anything_is_planned() -> None:
    book = ex.load_book()
    with pytest.raises(IllegalTransitionError):
        ex.plan_transition(book, "shadow-challenger", to="draft", actor="alice", reason="undo", at=AT)
    with pytest.raises(ex.ExperimentNotFoundError):
        ex.plan_share(book, "nope", share=0.5, actor="alice", reason="ramp", at=AT)
    with pytest.raises(ValueError, match="time-zone aware"):
        ex.plan_share(book, "canary-challenger", share=0.5, actor="alice", reason="ramp", at=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="required"):
        ex.plan_transition(book, "canary-challenger", to="active", actor=" ", reason="go", at=AT)


def test_only_new_drafts_can_be_added() -> None:
    book = ex.load_book()
    new = _exp(S.DRAFT, id="canary-2", salt="canary-2-salt")
    added = ex.plan_add(book, new, actor="alice", reason="next challenger", at=AT)
    assert added.book.get("canary-2") == new
    assert (added.record.change, added.record.before, added.record.experiment_from_version) == ("add", None, None)
    with pytest.raises(ValueError, match="exists already"):
        ex.plan_add(added.book, new, actor="alice", reason="again", at=AT)
    with pytest.raises(IllegalTransitionError, match="start as draft"):
        ex.plan_add(book, _exp(S.ACTIVE, id="canary-3", salt="c3"), actor="alice", reason="skip draft", at=AT)


def test_a_book_round_trips_through_json_and_bad_json_is_a_config_error() -> None:
    book = ex.plan_transition(ex.load_book(), "canary-challenger", to="active", actor="a", reason="go", at=AT).book
    assert ex.book_from_json(ex.book_to_json(book), source="redis") == book
    with pytest.raises(ConfigError, match=r"redis key k: invalid JSON"):
        ex.book_from_json('{"version": 3, "experiments": [', source="redis key k")
    with pytest.raises(ConfigError, match=r"cache\.json: version"):
        ex.book_from_json(json.dumps({"version": 0, "experiments": []}), source="cache.json")


def test_seed_record_names_every_experiment_version() -> None:
    record = ex.seed_record(ex.load_book(), actor="replica a", reason="first start", at=AT)
    assert (record.change, record.from_version, record.to_version) == ("seed", 0, 1)
    assert record.details == {"experiments": {"shadow-challenger": 1, "canary-challenger": 1}}
