"""Experiments: lifecycle, versions, the shipped book, serving-alias choice, and the audited store."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
from pathlib import Path

import pytest

from shadowgate.serving import experiments as ex
from shadowgate.serving.experiments import (
    ConfigError,
    Experiment,
    ExperimentBook,
    ExperimentMode,
    ExperimentStatus,
    ExperimentStore,
    IllegalTransitionError,
    transition,
    with_share,
)

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
    assert [x.experiment_id for x in book.assign_all(customer_id="cus_1", transaction_id="tx_1")] == ["b", "a"]


def test_book_rejects_duplicate_ids_and_salts() -> None:
    with pytest.raises(ValueError, match="duplicate experiment id"):
        _book(_exp(id="a", salt="s1"), _exp(id="a", salt="s2"))
    with pytest.raises(ValueError, match="duplicate experiment salt"):
        _book(_exp(id="a", salt="s1"), _exp(id="b", salt="s1"))


def test_serving_alias_without_experiments_is_the_champion() -> None:
    book = _book(_exp(S.DRAFT))
    assert book.serving_alias(book.assign_all(customer_id="cus_1", transaction_id="tx")) == ("champion", None)


def test_serving_alias_with_only_shadow_is_the_champion() -> None:
    shadow = _exp(S.ACTIVE, id="shadow", salt="s", mode=ExperimentMode.SHADOW, treatment_share=1.0)
    book = _book(shadow)
    assignments = book.assign_all(customer_id="cus_1", transaction_id="tx")
    alias, deciding = book.serving_alias(assignments)
    assert alias == "champion"
    assert deciding is not None and deciding.experiment_id == "shadow"
    assert deciding.shadow_arm == "treatment"


def test_serving_alias_follows_the_highest_priority_treated_canary() -> None:
    shadow = _exp(S.ACTIVE, id="shadow", salt="s0", mode=ExperimentMode.SHADOW, treatment_share=0.0, priority=0)
    low = _exp(S.ACTIVE, id="low", salt="s1", treatment_share=1.0, priority=20, treatment_alias="previous")
    high = _exp(S.ACTIVE, id="high", salt="s2", treatment_share=1.0, priority=10)
    book = _book(shadow, low, high)
    alias, deciding = book.serving_alias(book.assign_all(customer_id="cus_1", transaction_id="tx"))
    assert alias == "challenger"
    assert deciding is not None and deciding.experiment_id == "high"
    # Assignments given in any order still resolve by the book's priorities.
    shuffled = list(reversed(book.assign_all(customer_id="cus_1", transaction_id="tx")))
    assert book.serving_alias(shuffled)[0] == "challenger"


def test_serving_alias_of_a_control_unit_is_the_champion() -> None:
    canary = _exp(S.ACTIVE, id="canary", salt="s1", treatment_share=0.5)
    book = _book(canary)
    served = {}
    for i in range(200):
        assignments = book.assign_all(customer_id=f"cus_{i}", transaction_id="tx")
        served[assignments[0].arm] = book.serving_alias(assignments)
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


# --- the store -----------------------------------------------------------------------------------------------------


def test_store_starts_from_the_shipped_book_and_round_trips(tmp_path: Path) -> None:
    store = ExperimentStore(tmp_path / "experiments.json")
    assert store.load() == ex.load_book()
    assert not store.path.exists()

    activated = store.transition("canary-challenger", "active", actor="alice", reason="shadow passed", at=AT)
    ramped = store.set_share("canary-challenger", 0.25, actor="bob", reason="ramp", at=AT + dt.timedelta(hours=1))
    lowered = store.set_share("canary-challenger", 0.05, actor="bob", reason="incident", at=AT + dt.timedelta(hours=2))

    reloaded = ExperimentStore(tmp_path / "experiments.json").load()
    assert reloaded.version == ex.load_book().version + 3
    assert reloaded.get("canary-challenger") == lowered
    assert (activated.version, ramped.version, lowered.version) == (2, 3, 4)
    assert [e.id for e in reloaded.active()] == ["canary-challenger", "shadow-challenger"]

    audit = store.audit()
    assert [(a["from_version"], a["to_version"]) for a in audit] == [(1, 2), (2, 3), (3, 4)]
    assert [a["change"] for a in audit] == ["transition", "share", "share"]
    assert [a["actor"] for a in audit] == ["alice", "bob", "bob"]
    assert audit[0]["reason"] == "shadow passed"
    assert audit[0]["at"] == AT.isoformat()
    assert audit[0]["details"] == {"from_status": "draft", "to_status": "active"}
    assert (audit[1]["flags"], audit[2]["flags"]) == ([], ["SHARE_LOWERED"])
    assert audit[2]["details"] == {"from_share": 0.25, "to_share": 0.05}
    assert (audit[2]["experiment_from_version"], audit[2]["experiment_to_version"]) == (3, 4)
    assert store.audit_path == tmp_path / "experiments.audit.jsonl"
    assert len(store.audit_path.read_text().splitlines()) == 3


def test_store_file_wins_over_the_seed(tmp_path: Path) -> None:
    store = ExperimentStore(tmp_path / "experiments.json")
    store.transition("shadow-challenger", "stopped", actor="alice", reason="challenger broken", at=AT)
    assert ExperimentStore(tmp_path / "experiments.json").load().active() == ()


def test_failed_changes_are_not_persisted(tmp_path: Path) -> None:
    store = ExperimentStore(tmp_path / "experiments.json")
    with pytest.raises(IllegalTransitionError):
        store.transition("shadow-challenger", "draft", actor="alice", reason="undo", at=AT)
    with pytest.raises(ex.ExperimentNotFoundError):
        store.set_share("nope", 0.5, actor="alice", reason="ramp")
    assert not store.path.exists()
    assert store.audit() == []


def test_store_adds_drafts_only(tmp_path: Path) -> None:
    store = ExperimentStore(tmp_path / "experiments.json")
    new = _exp(S.DRAFT, id="canary-2", salt="canary-2-salt")
    store.add(new, actor="alice", reason="next challenger", at=AT)
    assert store.load().get("canary-2") == new
    with pytest.raises(ValueError, match="exists already"):
        store.add(new, actor="alice", reason="again", at=AT)
    with pytest.raises(IllegalTransitionError, match="start as draft"):
        store.add(_exp(S.ACTIVE, id="canary-3", salt="c3"), actor="alice", reason="skip draft", at=AT)
    assert [a["change"] for a in store.audit()] == ["add"]


def test_crash_between_write_and_replace_keeps_the_old_book(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ExperimentStore(tmp_path / "experiments.json")
    store.transition("canary-challenger", "active", actor="alice", reason="go", at=AT)
    before = store.path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(ex.os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        store.set_share("canary-challenger", 0.5, actor="alice", reason="ramp", at=AT)
    monkeypatch.undo()

    assert store.path.read_bytes() == before
    assert [a["to_version"] for a in store.audit()] == [2]  # nothing audited for the failed change


def test_a_torn_temporary_file_left_by_a_killed_writer_is_ignored(tmp_path: Path) -> None:
    store = ExperimentStore(tmp_path / "experiments.json")
    store.transition("canary-challenger", "active", actor="alice", reason="go", at=AT)
    # What a SIGKILL mid-write leaves behind: a half-written temp file beside the store.
    torn = tmp_path / ".experiments.json.abc123.tmp"
    torn.write_text(store.path.read_text()[:57])
    assert store.load().version == 2
    store.set_share("canary-challenger", 0.5, actor="alice", reason="ramp", at=AT)
    assert ExperimentStore(tmp_path / "experiments.json").load().get("canary-challenger").treatment_share == 0.5
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp")
    assert leftovers == [torn.name]  # our own temp files never linger


def test_a_corrupt_store_file_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "experiments.json", '{"version": 3, "experiments": [')
    with pytest.raises(ConfigError, match=r"experiments\.json: invalid JSON"):
        ExperimentStore(path).load()
    _write(path, json.dumps({"version": 0, "experiments": []}))
    with pytest.raises(ConfigError, match=r"experiments\.json: version"):
        ExperimentStore(path).load()


def test_concurrent_stores_serialise_their_changes(tmp_path: Path) -> None:
    # Two store objects (as in two API replicas) on one file: each change sees the other's and versions stay dense.
    one = ExperimentStore(tmp_path / "experiments.json")
    two = ExperimentStore(tmp_path / "experiments.json")
    one.transition("canary-challenger", "active", actor="alice", reason="go", at=AT)
    two.set_share("canary-challenger", 0.3, actor="bob", reason="ramp", at=AT)
    one.set_share("canary-challenger", 0.4, actor="alice", reason="ramp", at=AT)
    assert [a["to_version"] for a in one.audit()] == [2, 3, 4]
    assert one.load().get("canary-challenger").version == 4


def test_store_uses_an_explicit_seed(tmp_path: Path) -> None:
    seed = _write(
        tmp_path / "seed.yaml",
        "version: 7\nexperiments:\n  - id: a\n    salt: s\n    mode: shadow\n    status: active\n",
    )
    store = ExperimentStore(tmp_path / "state" / "experiments.json", seed=seed)
    assert store.load().version == 7
    store.transition("a", "completed", actor="alice", reason="done", at=AT)
    assert store.load().version == 8
    assert os.path.exists(tmp_path / "state" / "experiments.audit.jsonl")
