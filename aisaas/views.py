from django.conf import settings
from django.shortcuts import render

from chat.llm import model_catalogue


def landing(request):
    return render(
        request,
        "landing.html",
        {"models": model_catalogue().models, "demo": settings.LLM_DEMO},
    )
