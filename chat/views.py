from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.utils.http import content_disposition_header
from django.utils.text import slugify

from chat import selectors, services
from usage import selectors as usage_selectors


@login_required
def chat_page(request, conversation_id: int | None = None):
    conversation = None
    messages = []
    if conversation_id is not None:
        conversation = selectors.conversation_get(user=request.user, conversation_id=conversation_id)
        messages = selectors.message_list(conversation=conversation)
    plan, period = usage_selectors.plan_and_period(user=request.user)
    meter = usage_selectors.quota_meter(period=period)
    models, default_model = services.models_for(plan)
    conversations, older_conversations = selectors.conversation_list(user=request.user)
    return render(
        request,
        "chat/chat.html",
        {
            "conversations": conversations,
            "older_conversations": older_conversations,
            "conversation": conversation,
            "plan": plan,
            "meter": meter,
            "chat_config": {
                "conversation": conversation.pk if conversation else None,
                "messages": [
                    {
                        **m,
                        "created_at": m["created_at"].isoformat(),
                        "content_purged_at": m["content_purged_at"] and m["content_purged_at"].isoformat(),
                    }
                    for m in messages
                ],
                "models": models,
                "defaultModel": default_model,
                "plan": plan.name,
                "quota": meter,
                "demo": settings.LLM_DEMO,
                "maxMessageChars": settings.CHAT_MAX_MESSAGE_CHARS,
            },
        },
    )


@login_required
def conversation_export(request, conversation_id: int):
    """The conversation as a Markdown file to download."""
    conversation = selectors.conversation_get(user=request.user, conversation_id=conversation_id)
    text = services.conversation_markdown(
        conversation=conversation, messages=selectors.message_list(conversation=conversation)
    )
    response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
    filename = f"{slugify(conversation.title, allow_unicode=True)[:60] or 'conversation'}.md"
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=filename)
    return response
