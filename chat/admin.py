from django.contrib import admin

from chat.models import Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    can_delete = False
    fields = ["role", "status", "model", "content", "prompt_tokens", "completion_tokens", "created_at"]
    readonly_fields = fields


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "user", "created_at", "updated_at"]
    list_select_related = ["user"]
    search_fields = ["title", "user__email"]
    readonly_fields = ["user", "created_at", "updated_at"]
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "conversation", "role", "status", "model", "completion_tokens", "created_at"]
    list_filter = ["role", "status", "model"]
    list_select_related = ["conversation"]
    search_fields = ["content"]
    readonly_fields = [field.name for field in Message._meta.fields]
