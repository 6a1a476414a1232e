"""The Celery app. Configured from Django settings (CELERY_* names); tasks live in each app's tasks.py."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aisaas.settings")

app = Celery("aisaas")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
