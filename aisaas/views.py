from django.conf import settings
from django.shortcuts import redirect, render
from django.templatetags.static import static

from llm.provider import model_catalogue


def landing(request):
    return render(
        request,
        "landing.html",
        {"models": model_catalogue().models, "demo": settings.LLM_DEMO},
    )


def favicon(request):
    """Browsers ask for /favicon.ico on pages that name no icon (the admin, the API's docs pages). Not a
    permanent redirect: the icon's static URL carries a hash that changes when the icon does."""
    return redirect(static("favicon.svg"))
