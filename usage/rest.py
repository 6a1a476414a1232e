"""The REST API's usage endpoint: the user's plan and current period, as the usage page shows them."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from usage import selectors


class CurrentUsage(APIView):
    @extend_schema(
        responses=inline_serializer(
            "CurrentUsage",
            {
                "plan": serializers.CharField(),
                "period_start": serializers.DateTimeField(),
                "period_end": serializers.DateTimeField(),
                "allowance": serializers.IntegerField(),
                "used": serializers.IntegerField(),
                "reserved": serializers.IntegerField(),
                "remaining": serializers.IntegerField(),
                "level": serializers.CharField(),
            },
        )
    )
    def get(self, request):
        """Your plan and this period's tokens: used, held by answers in progress, left, and when it resets."""
        plan, period = selectors.plan_and_period(user=request.user)
        meter = selectors.quota_meter(period=period)
        return Response(
            {
                "plan": plan.slug,
                "period_start": period.start,
                "period_end": period.end,
                "allowance": meter["allowance"],
                "used": meter["used"],
                "reserved": meter["reserved"],
                "remaining": meter["remaining"],
                "level": meter["level"],
            }
        )
