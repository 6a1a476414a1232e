from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.chat_page, name="new"),
    path("c/<int:conversation_id>/", views.chat_page, name="conversation"),
    path("c/<int:conversation_id>/rename/", views.conversation_rename, name="rename"),
    path("c/<int:conversation_id>/export/", views.conversation_export, name="export"),
    path("c/<int:conversation_id>/delete/", views.conversation_delete, name="delete"),
    path("m/<int:message_id>/feedback/", views.message_feedback, name="feedback"),
]
