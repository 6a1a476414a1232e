"""The usage services: one gate and one settlement for every paid call (the chat websocket, the HTTP API).

    gate_state, gate_admit  rate limits -> global spend cap -> token quota reservation -> prompt cache lookup
    moderation_check        async, after the gate, before anything is sent to the completion model
    usage_settle            in the caller's transaction: the usage record, the quota, the spend ledger
    limits_settle           after the commit: give back the unused tokens of the tokens/day limit
    gate_release            a request refused or abandoned after gate_admit: give everything back
    plan_change             the one way to move a user to another plan (the admin, billing)

Where each invariant is enforced, and the test that proves it: docs/architecture.md.
"""

from usage.errors import ContentFlagged, LimitReached, SpendCapReached
from usage.services.gate import Admission, GateState, gate_admit, gate_release, gate_state, moderation_check
from usage.services.periods import (
    calendar_month,
    quota_period_current,
    quota_periods_roll_over,
    quota_reservations_expire,
    quota_reserve,
)
from usage.services.plans import plan_change, user_plan_create
from usage.services.settle import Settlement, cost_of, limits_settle, usage_settle
from usage.services.spend import spend_cap_alert_send, spend_check

__all__ = [
    "Admission",
    "ContentFlagged",
    "GateState",
    "LimitReached",
    "Settlement",
    "SpendCapReached",
    "calendar_month",
    "cost_of",
    "gate_admit",
    "gate_release",
    "gate_state",
    "limits_settle",
    "moderation_check",
    "plan_change",
    "quota_period_current",
    "quota_periods_roll_over",
    "quota_reservations_expire",
    "quota_reserve",
    "spend_cap_alert_send",
    "spend_check",
    "usage_settle",
    "user_plan_create",
]
