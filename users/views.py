"""The API keys page: create (the key is shown once), list, revoke."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.errors import ApplicationError
from users import outbox, services
from users.models import ApiKey


@login_required
def api_keys(request):
    new_key = None
    if request.method == "POST":
        try:
            _, new_key = services.api_key_create(
                user=request.user, name=request.POST.get("name", ""), form_token=request.POST.get("form_token")
            )
        except ApplicationError as error:
            messages.error(request, error.message)
            return redirect("api_keys")
    keys = ApiKey.objects.filter(user=request.user).order_by("revoked_at", "-created_at")
    # The new key is in this response only: it is never stored, so a reload cannot show it again, and the form's
    # one-time token makes the reload's resubmitted form create no second key.
    context = {"keys": keys, "new_key": new_key, "form_token": services.api_key_form_token()}
    response = render(request, "users/api_keys.html", context)
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def api_key_revoke(request, key_id: int):
    try:
        key = services.api_key_revoke(user=request.user, key_id=key_id)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"The key “{key.name}” is revoked: it no longer works.")
    return redirect("api_keys")


def dev_outbox(request):
    """The mail this development server wrote instead of sending it (users.outbox); a 404 anywhere else."""
    if not outbox.outbox_enabled():
        raise Http404
    return render(request, "users/outbox.html", {"mails": outbox.outbox_mails()})
