"""Sticky experiment assignment: which arm a unit (customer, else transaction) falls into.

A unit's bucket is a pure function of ``(salt, unit_id)`` computed with a cryptographic hash, so every process,
restart and replica agrees on it without any shared state. A unit is treated when ``bucket < treatment_share``:
raising the share therefore only ever moves units from control to treatment (nobody flips back and forth during a
ramp-up), and two experiments with different salts assign independently of each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from shadowgate.registry import CHAMPION

if TYPE_CHECKING:
    from shadowgate.decisioning.experiments import Experiment, ExperimentBook

Arm = Literal["control", "treatment"]
UnitKind = Literal["customer", "transaction"]
Mode = Literal["shadow", "canary"]

CONTROL: Arm = "control"
TREATMENT: Arm = "treatment"

_MANTISSA_BITS = 53
_SHIFT = 64 - _MANTISSA_BITS
_SCALE = 2.0**-_MANTISSA_BITS


def _to_unit_interval(value: int) -> float:
    """Map a 64-bit unsigned integer to [0, 1).

    ``value / 2**64`` rounds to exactly 1.0 for the largest values (a float has 53 bits of mantissa), which would put
    a unit outside every arm at share 1.0. Keeping the top 53 bits is the same mapping truncated to float precision,
    and is strictly below 1.
    """
    return (value >> _SHIFT) * _SCALE


def unit_bucket(salt: str, unit_id: str) -> float:
    """The unit's position in [0, 1) for the experiment with this salt.

    The first 8 bytes (big-endian) of BLAKE2b over ``f"{salt}:{unit_id}"`` (UTF-8), scaled to [0, 1). Never Python's
    ``hash()``: that is randomised per process and would reshuffle units on every restart.

    Args:
        salt: the experiment's salt; different salts give independent buckets.
        unit_id: the customer id (or transaction id when there is no customer).
    """
    digest = hashlib.blake2b(f"{salt}:{unit_id}".encode(), digest_size=8).digest()
    return _to_unit_interval(int.from_bytes(digest, "big"))


@dataclass(frozen=True, slots=True)
class Assignment:
    """The arm one unit gets in one experiment.

    Attributes:
        experiment_id: the experiment.
        experiment_version: the experiment's config version the assignment was made under (for analysis joins).
        arm: the arm actually served. Always ``"control"`` in shadow mode.
        propensity: probability that this unit is served ``arm`` under this config (1.0 in shadow mode; the share or
            1 − share in canary mode), for inverse-propensity weighting.
        unit_id: the id that was hashed.
        unit_kind: ``"customer"`` or ``"transaction"`` (when the request carried no customer id).
        mode: ``"shadow"`` or ``"canary"``.
        bucket: the unit's bucket in [0, 1).
        shadow_arm: in shadow mode, the arm the bucket would have given in canary mode (nothing is served from it);
            ``None`` in canary mode, where ``arm`` is that arm.
    """

    experiment_id: str
    experiment_version: int
    arm: Arm
    propensity: float
    unit_id: str
    unit_kind: UnitKind
    mode: Mode
    bucket: float
    shadow_arm: Arm | None = None


def arm_for(bucket: float, treatment_share: float) -> Arm:
    """``"treatment"`` when ``bucket < treatment_share`` else ``"control"``."""
    return TREATMENT if bucket < treatment_share else CONTROL


def assign(experiment: Experiment, *, customer_id: str | None, transaction_id: str) -> Assignment:
    """Assign one request to an arm of ``experiment``.

    The unit is the customer so that one customer sees one model across purchases; requests without a customer id
    fall back to the transaction id (sticky per transaction only).

    Args:
        experiment: the experiment config (its status is not checked here; callers assign active experiments).
        customer_id: the customer, or None/empty when unknown.
        transaction_id: the purchase; the unit when there is no customer id.

    Raises:
        ValueError: when neither id is present.
    """
    unit_kind: UnitKind
    if customer_id:
        unit_id, unit_kind = customer_id, "customer"
    elif transaction_id:
        unit_id, unit_kind = transaction_id, "transaction"
    else:
        raise ValueError("assignment needs a customer_id or a transaction_id")
    share = experiment.treatment_share
    bucket = unit_bucket(experiment.salt, unit_id)
    would_be = arm_for(bucket, share)
    if experiment.mode == "shadow":
        # Shadow experiments never change what is served: everybody gets control with certainty.
        return Assignment(
            experiment_id=experiment.id,
            experiment_version=experiment.version,
            arm=CONTROL,
            propensity=1.0,
            unit_id=unit_id,
            unit_kind=unit_kind,
            mode="shadow",
            bucket=bucket,
            shadow_arm=would_be,
        )
    return Assignment(
        experiment_id=experiment.id,
        experiment_version=experiment.version,
        arm=would_be,
        propensity=share if would_be == TREATMENT else 1.0 - share,
        unit_id=unit_id,
        unit_kind=unit_kind,
        mode="canary",
        bucket=bucket,
    )


def assign_all(book: ExperimentBook, *, customer_id: str | None, transaction_id: str) -> list[Assignment]:
    """Assignments of one request in every active experiment of ``book``, in priority order."""
    return [assign(e, customer_id=customer_id, transaction_id=transaction_id) for e in book.active()]


def serving_alias(book: ExperimentBook, assignments: Sequence[Assignment]) -> tuple[str, Assignment | None]:
    """Which model alias serves the request, and the assignment that decided it.

    The treatment alias of the highest-priority canary experiment whose arm is treatment; otherwise the control
    alias of the first (highest-priority) active assignment — ``champion`` unless configured otherwise — with
    that assignment; ``("champion", None)`` when there is no active experiment. Shadow assignments never decide
    for treatment, because their arm is always control.
    """
    by_id = book.by_id
    known = [a for a in assignments if a.experiment_id in by_id]
    ordered = sorted(known, key=lambda a: (by_id[a.experiment_id].priority, a.experiment_id))
    for a in ordered:
        if a.mode == "canary" and a.arm == "treatment":
            return by_id[a.experiment_id].treatment_alias, a
    if ordered:
        return by_id[ordered[0].experiment_id].control_alias, ordered[0]
    return CHAMPION, None
