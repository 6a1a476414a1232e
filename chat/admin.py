"""Staff audit prompts and answers here: read-only and searchable (content may be erased by the retention
task, CHAT_CONTENT_RETENTION_DAYS; usage records are kept)."""

from django.contrib import admin

from chat.models import Conversation, Feedback, Message
from usage.admin import ReadOnlyAdmin


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    can_delete = False
    fields = ["role", "status", "model", "content", "prompt_tokens", "completion_tokens", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    list_display = ["id", "title", "user", "created_at", "updated_at"]
    list_select_related = ["user"]
    search_fields = ["title", "user__email"]
    date_hierarchy = "created_at"
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "conversation", "role", "status", "model", "completion_tokens", "created_at"]
    list_filter = ["role", "status", "model"]
    list_select_related = ["conversation"]
    search_fields = ["content", "conversation__user__email"]
    date_hierarchy = "created_at"
    show_full_result_count = False


@admin.register(Feedback)
class FeedbackAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "user", "rating", "message", "comment"]
    list_filter = ["rating"]
    list_select_related = ["user", "message"]
    search_fields = ["user__email", "comment"]
    date_hierarchy = "created_at"
