from datetime import timedelta

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from usage import selectors
from usage.charts import bar_chart


@login_required
def usage_overview(request):
    """The user's own usage this period: the meter, tokens per day (chart) and per model."""
    plan, period = selectors.plan_and_period(user=request.user)
    period_start, period_end = period.start, period.end
    days = selectors.usage_by_day(user=request.user, start=period_start, end=period_end)
    return render(
        request,
        "usage/overview.html",
        {
            "plan": plan,
            "meter": selectors.quota_meter(period=period),
            "period_start": period_start,
            "period_end": period_end,
            "period_last_day": period_end - timedelta(seconds=1),
            "chart": bar_chart([(day.day.strftime("%b %-d"), day.tokens) for day in days]),
            "days": days,
            "by_model": selectors.usage_by_model(user=request.user, start=period_start, end=period_end),
            "cache_hits_free": settings.PROMPT_CACHE_HIT_CHARGE != "full",
        },
    )
