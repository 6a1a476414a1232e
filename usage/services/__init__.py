"""The usage services: one gate and one settlement for every paid call (the chat websocket, the HTTP API).

    gate_state, gate_admit  rate limits -> global spend cap -> token quota reservation -> prompt cache lookup
                            (gate_state_for_api_key: the API's key check in the gate's own query);
                            gate_pass_on_loop runs the same gate on the event loop (PostgreSQL: gate_on_loop)
    gate_and_moderate       async: the gate and moderation of the user's text, before anything is sent to
                            the completion model (moderate_or_release: moderation alone, after the gate)
    usage_settle            in the caller's transaction: the usage record, the quota, the spend ledger
    usage_settle_on_loop    async: the same (on the loop on PostgreSQL), and meanwhile the unused tokens of the
                            tokens/day limit given back (once per request) and a complete answer kept in the
                            prompt cache
    gate_release            a request refused or abandoned after gate_admit: give everything back
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
    gate_and_moderate,
    gate_on_loop,
    gate_pass_on_loop,
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
    quota_reserve,
)
from usage.services.plans import plan_change, user_plan_create
from usage.services.rollup import usage_rollup_rebuild
from usage.services.settle import Settlement, cost_of, usage_settle, usage_settle_on_loop
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
    "gate_and_moderate",
    "gate_on_loop",
    "gate_pass_on_loop",
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
    "quota_reserve",
    "spend_cap_alert_send",
    "spend_check",
    "usage_rollup_rebuild",
    "usage_settle",
    "usage_settle_on_loop",
    "user_plan_create",
]
