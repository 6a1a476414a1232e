"""The REST API for a user's conversations and messages (list, read, delete): Django REST framework, by
session or API key. Only the user's own objects exist here: another user's id is simply not found (I7)."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action

from chat import services
from chat.models import Conversation, Message


class MessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = ["id", "role", "content", "status", "model", "prompt_tokens", "completion_tokens", "created_at"]


class ConversationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Conversation
        fields = ["id", "title", "created_at", "updated_at"]


class ConversationDetailSerializer(ConversationSerializer):
    messages = MessageSerializer(many=True, read_only=True)

    class Meta(ConversationSerializer.Meta):
        fields = [*ConversationSerializer.Meta.fields, "messages"]


class ConversationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Your conversations, most recently active first; one with its messages; delete one."""

    queryset = Conversation.objects.none()  # for the schema; get_queryset is what serves requests

    def get_queryset(self):
        conversations = Conversation.objects.filter(user=self.request.user).order_by("-updated_at", "-id")
        if self.action == "retrieve":
            conversations = conversations.prefetch_related("messages")
        return conversations

    def get_serializer_class(self):
        return ConversationDetailSerializer if self.action == "retrieve" else ConversationSerializer

    def perform_destroy(self, instance):
        services.conversation_delete(user=self.request.user, conversation_id=instance.pk)

    @extend_schema(responses=MessageSerializer(many=True))
    @action(detail=True)
    def messages(self, request, pk=None):
        """The conversation's messages, oldest first (paginated)."""
        conversation = self.get_object()
        page = self.paginate_queryset(conversation.messages.order_by("created_at", "id"))
        return self.get_paginated_response(MessageSerializer(page, many=True).data)
