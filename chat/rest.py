"""The REST API for a user's conversations and messages (list, read, rename, delete, rate an answer): Django
REST framework, by session or API key; the chat page uses it too. Only the user's own objects exist here: another
user's id is simply not found (I7). Thin: the writes are chat.services, which check what they are given."""

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import services
from chat.models import Conversation, Message
from core.errors import InvalidInput
from core.text import STORABLE_TEXT_PATTERN, STORABLE_TITLE_PATTERN


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

    def destroy(self, request, pk=None):
        """Delete the conversation and its messages."""
        services.conversation_delete(user=request.user, conversation_id=_id(pk))
        return Response(status=204)

    @extend_schema(
        request=inline_serializer("ConversationRename", {"title": serializers.RegexField(STORABLE_TITLE_PATTERN)}),
        responses={200: ConversationSerializer, 400: OpenApiResponse(description="An empty or missing title.")},
    )
    def partial_update(self, request, pk=None):
        """Rename the conversation (the title is trimmed and cut to 80 characters)."""
        conversation = services.conversation_rename(
            user=request.user, conversation_id=_id(pk), title=_body(request).get("title")
        )
        return Response(ConversationSerializer(conversation).data)

    @extend_schema(responses=MessageSerializer(many=True))
    @action(detail=True)
    def messages(self, request, pk=None):
        """The conversation's messages, oldest first (paginated)."""
        conversation = self.get_object()
        page = self.paginate_queryset(conversation.messages.order_by("created_at", "id"))
        return self.get_paginated_response(MessageSerializer(page, many=True).data)


class FeedbackView(APIView):
    """Rate one of your finished answers: 1 (up) or -1 (down), with an optional comment; 0 takes it back."""

    @extend_schema(
        request=inline_serializer(
            "FeedbackGive",
            {
                "rating": serializers.ChoiceField(choices=[1, -1, 0]),
                "comment": serializers.RegexField(STORABLE_TEXT_PATTERN, required=False, max_length=2000),
            },
        ),
        responses=inline_serializer(
            "FeedbackGiven", {"message": serializers.IntegerField(), "rating": serializers.IntegerField()}
        ),
    )
    def post(self, request, message_id: int):
        body = _body(request)
        feedback = services.feedback_give(
            user=request.user, message_id=message_id, rating=body.get("rating"), comment=body.get("comment", "")
        )
        return Response({"message": message_id, "rating": feedback.rating if feedback else 0})


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise InvalidInput("The request body must be a JSON object.")
    return request.data


def _id(pk) -> int:
    try:
        return int(pk)
    except (TypeError, ValueError):
        raise InvalidInput("The id must be a number.") from None
