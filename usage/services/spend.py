"""The global spend cap: daily and monthly ceilings on what the provider may cost, and a kill switch."""

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import cache
from django.core.mail import mail_admins
from django.utils import timezone

from usage.errors import SpendCapReached
from usage.services.periods import calendar_month

if TYPE_CHECKING:
    from usage.services.gate import GateState

logger = logging.getLogger(__name__)


def spend_check(state: "GateState") -> None:
    """Refuse every paid call once today's or this month's provider cost reached its cap, or the kill switch
    is on. The cap is checked against settled cost: calls already in flight when it is crossed still finish,
    so it can be passed by at most their cost (each bounded by the plan's max_tokens)."""
    if settings.SPEND_KILL_SWITCH or state.kill_switch:
        raise SpendCapReached("The AI service is paused by the operators. Please try again later.", code="paused")
    daily_cap, monthly_cap = _caps(state)
    for period, amount, cap in (("day", state.spent_today, daily_cap), ("month", state.spent_this_month, monthly_cap)):
        if amount >= cap:
            _spend_cap_alert(period=period, amount=amount, cap=cap)
            now = timezone.now()
            reopens = _next_day(now) if period == "day" else calendar_month(now)[1]
            raise SpendCapReached(
                "The service has reached its spending limit for now. Please try again later.",
                limit=f"spend_per_{period}",
                reset_at=reopens.isoformat(),  # unless staff raise the cap first
                retry_after=max(1, round((reopens - now).total_seconds())),
            )


def spend_cap_reached(state: "GateState") -> bool:
    """Whether spend_check would refuse (it also tells staff, which is I/O: async code checks this first)."""
    daily_cap, monthly_cap = _caps(state)
    return (
        settings.SPEND_KILL_SWITCH
        or state.kill_switch
        or state.spent_today >= daily_cap
        or state.spent_this_month >= monthly_cap
    )


def _caps(state: "GateState") -> tuple[Decimal, Decimal]:
    """Today's and this month's ceilings: the staff override, else the setting."""
    return (
        settings.SPEND_CAP_DAILY_USD if state.daily_cap is None else state.daily_cap,
        settings.SPEND_CAP_MONTHLY_USD if state.monthly_cap is None else state.monthly_cap,
    )


def _next_day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


def _spend_cap_alert(*, period: str, amount: Decimal, cap: Decimal) -> None:
    """Tell staff once per day (or month) that the cap refuses paid calls: the first refusal logs and
    queues a mail to ADMINS; the rest find the cache key already there."""
    from usage.tasks import alert_spend_cap

    when = timezone.now().strftime("%Y-%m-%d" if period == "day" else "%Y-%m")
    try:
        first = cache.add(f"spend-cap-alert:{period}:{when}", True, timeout=32 * 86400)
    except Exception:
        first = True
    if first:
        logger.error("Global spend cap reached (%s: $%s of $%s): refusing paid calls", period, amount, cap)
        alert_spend_cap.delay(period=period, amount=str(amount), cap=str(cap))


def spend_cap_alert_send(*, period: str, amount: str, cap: str) -> None:
    mail_admins(
        f"Spend cap reached for this {period}",
        f"Provider cost this {period} is ${amount}, at or over the cap of ${cap}. Paid calls are being refused "
        "until the next period, or until the cap is raised in the admin (Usage > Spend controls).",
    )
