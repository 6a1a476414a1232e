"""The usage services: one gate and one settlement for every paid call (the chat websocket, the HTTP API).

All async, on the event loop:
    gate_state              what the gate reads of a user, in one query (gate_state_for_api_key: of an API key's
                            holder, the key checked in the same query)
    gate_admit              rate limits -> global spend cap -> token quota reservation -> prompt cache lookup
    moderate_or_release     moderation of the user's text once admitted, before anything is sent to the
                            completion model; a refusal gives back what the gate holds
    usage_settle            the usage record, the quota, the spend ledger and the rollup in one statement (with
                            the caller's own), and the unused tokens of the tokens/day limit given back (once per
                            request) and a complete answer kept in the prompt cache
    gate_release            a request refused or abandoned after gate_admit: give everything back
Sync (ORM, in a database thread from async code):
    plan_change             the one way to move a user to another plan (billing, staff)
    bonus_tokens_grant, quota_period_reset, plan_change_by_staff, account_suspend, account_reactivate
                            staff actions from the admin, each with its audit entry
    usage_rollup_rebuild    recompute the analytics rollup (UsageDaily) for a range of days

Where each invariant is enforced, and the test that proves it: docs/architecture.md.
"""

from usage.errors import AccountSuspended, ContentFlagged, LimitReached, SpendCapReached
from usage.services.accounts import (
    account_action,
    account_reactivate,
    account_suspend,
    bonus_tokens_grant,
    plan_change_by_staff,
    quota_period_reset,
)
from usage.services.gate import (
    Admission,
    GateState,
    gate_admit,
    gate_release,
    gate_state,
    gate_state_for_api_key,
    moderate_or_release,
)
from usage.services.periods import (
    calendar_month,
    quota_period_current,
    quota_periods_roll_over,
    quota_reservations_expire,
)
from usage.services.plans import plan_change, user_plan_create
from usage.services.rollup import usage_rollup_rebuild
from usage.services.settle import Settlement, cost_of, usage_settle
from usage.services.spend import spend_cap_alert_send, spend_check

__all__ = [
    "AccountSuspended",
    "Admission",
    "ContentFlagged",
    "GateState",
    "LimitReached",
    "Settlement",
    "SpendCapReached",
    "account_action",
    "account_reactivate",
    "account_suspend",
    "bonus_tokens_grant",
    "calendar_month",
    "cost_of",
    "gate_admit",
    "gate_release",
    "gate_state",
    "gate_state_for_api_key",
    "moderate_or_release",
    "plan_change",
    "plan_change_by_staff",
    "quota_period_current",
    "quota_period_reset",
    "quota_periods_roll_over",
    "quota_reservations_expire",
    "spend_cap_alert_send",
    "spend_check",
    "usage_rollup_rebuild",
    "usage_settle",
    "user_plan_create",
]
