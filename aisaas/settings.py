"""aisaas settings: one module, driven by the environment (see .env.example).

Every mode runs on PostgreSQL (DATABASE_URL) and Redis (REDIS_URL). The *embedded default* (`make run`,
`make test` on a bare machine) starts both from Python packages (aisaas.embedded) and names them in the
environment, with DEBUG on, eager Celery and the built-in dev LLM. Production sets DEBUG=false, and then the
secrets and service URLs below have no defaults: start-up stops with one message naming what is missing.
"""

from decimal import Decimal
from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

# ------------------------------------------------------------------------------------------------------------
# Core
# ------------------------------------------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=True)

_missing: list[str] = []


def _required(name: str, dev_default: str | None) -> str:
    """A value production must set explicitly; with DEBUG on it may fall back to dev_default (None: it may not)."""
    value = env.str(name, default="")
    if value:
        return value
    if DEBUG and dev_default is not None:
        return dev_default
    _missing.append(name)
    return ""


SECRET_KEY = _required("SECRET_KEY", "django-insecure-embedded-default-only-never-use-in-production")
# The embedded default's come from aisaas.embedded, which starts the servers and sets these.
DATABASE_URL = _required("DATABASE_URL", None)
REDIS_URL = _required("REDIS_URL", None)
# The embedded default's dev LLM listens on DEVLLM_PORT (`make run DEVLLM_PORT=...`).
LLM_BASE_URL = _required("LLM_BASE_URL", f"http://127.0.0.1:{env.int('DEVLLM_PORT', default=8001)}/v1")
LLM_API_KEY = _required("LLM_API_KEY", "devllm-no-key-needed")

if _missing:
    raise ImproperlyConfigured(
        ("DEBUG is off, so these" if not DEBUG else "These")
        + " environment variables must be set: "
        + ", ".join(_missing)
        + ". See .env.example; `make run` and `make test` start embedded servers and set them"
        + " (python -m aisaas.embedded -- COMMAND)."
    )

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

TIME_ZONE = "UTC"
USE_TZ = True
LANGUAGE_CODE = "en-us"
USE_I18N = True

ROOT_URLCONF = "aisaas.urls"
ASGI_APPLICATION = "aisaas.asgi.application"
WSGI_APPLICATION = None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
SITE_ID = 1

# ------------------------------------------------------------------------------------------------------------
# Apps
# ------------------------------------------------------------------------------------------------------------
INSTALLED_APPS = [
    "daphne",
    "aisaas.admin_site.ProductAdminConfig",  # django.contrib.admin, the product's sections first
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.sites",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.google",
    "allauth.socialaccount.providers.github",
    "aisaas",
    "users",
    "chat",
    "usage",
    "djstripe",
    "billing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "core.middleware.ContentSecurityPolicyMiddleware",
    "core.middleware.StaticFilesMiddleware",  # WhiteNoise, async-capable
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "core.middleware.ApplicationErrorMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "users.outbox.context",
            ],
        },
    },
]

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# In the embedded default whitenoise serves straight from static/ (no collectstatic step).
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# ------------------------------------------------------------------------------------------------------------
# Database
# ------------------------------------------------------------------------------------------------------------
DATABASES = {"default": env.db_url_config(DATABASE_URL)}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":  # the gate's SQL is PostgreSQL's
    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL (postgres://...).")
# Reused connections, checked before each unit of work reuses one (core.db.in_db_thread): after a restart or a
# failover the first query on a pooled connection would fail, and the request with it, so a connection PostgreSQL
# dropped is replaced before anything runs on it. The check is one round trip per unit of work.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# psycopg prepares a statement a connection runs for the 5th time, so PostgreSQL plans it once. A
# transaction-mode pooler (pgbouncer) cannot keep prepared statements across transactions: DB_PREPARE_THRESHOLD=0
# turns them off, for the ORM's connections and the event loop's pool (core.db) alike.
DB_PREPARE_THRESHOLD = env.int("DB_PREPARE_THRESHOLD", default=5)
DATABASES["default"].setdefault("OPTIONS", {}).update(
    {"server_side_binding": True, "prepare_threshold": DB_PREPARE_THRESHOLD}
    if DB_PREPARE_THRESHOLD > 0
    else {"prepare_threshold": None}
)
# The gate and the settlement query from each web process's event loop, on a pool of connections of its own
# (core.db): at most this many per process, beside the thread pool's. Requests beyond it wait for one.
DB_LOOP_CONNECTIONS = env.int("DB_LOOP_CONNECTIONS", default=8)

AUTH_USER_MODEL = "users.User"

# ------------------------------------------------------------------------------------------------------------
# Redis: cache, channel layer, rate limits, Celery broker
# ------------------------------------------------------------------------------------------------------------
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX", default="aisaas")
# The cache holds nothing the site cannot do without: while Redis is down a read is a miss and a write is dropped
# and logged, so sign-in, history and the rest of the site keep working (core.cache). Paid calls do not use it;
# their limits fail closed (usage.limits, I8).
CACHES = {
    "default": {
        "BACKEND": "core.cache.OutageTolerantRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": CACHE_KEY_PREFIX,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1, "IGNORE_EXCEPTIONS": True},
    },
}
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
# Rate-limit counters (usage.limits) may live on a Redis of their own.
LIMITS_REDIS_URL = env.str("LIMITS_REDIS_URL", default=REDIS_URL)
LIMITS_REDIS_TIMEOUT_SECONDS = env.float("LIMITS_REDIS_TIMEOUT_SECONDS", default=1.0)
CHANNEL_LAYERS = {
    "default": {
        # channels-redis, riding out a Redis outage without closing the open sockets (core.channels).
        "BACKEND": "core.channels.OutageTolerantRedisChannelLayer",
        "CONFIG": {
            # Each consumer waits on its channel with a 5 s blocking pop; redis-py's default 5 s socket
            # timeout would cut that wait and crash idle sockets (close 1011), so reads get longer. redis-py's
            # pool refuses a connection past its cap (100 unless set) instead of waiting, and a burst of sockets
            # opening at once takes one each to join its group: the cap is set above any burst a process takes.
            "hosts": [
                {
                    "address": REDIS_URL,
                    "socket_timeout": 30,
                    "max_connections": env.int("CHANNEL_LAYER_MAX_CONNECTIONS", default=2000),
                }
            ],
            "prefix": f"{CACHE_KEY_PREFIX}:asgi",
        },
    }
}

# ------------------------------------------------------------------------------------------------------------
# Celery
# ------------------------------------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL
# The embedded default runs no worker: tasks run where they are queued.
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=DEBUG)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE = {
    "chat-expire-stale-streams": {
        "task": "chat.tasks.expire_stale_streams",
        "schedule": 300.0,
    },
    # Periods also roll over on access (lazily); this sweep only keeps them tidy. Hourly, so a missed run
    # is caught up within the hour; running it twice is harmless.
    "chat-purge-old-content": {
        "task": "chat.tasks.purge_old_content",
        "schedule": crontab(hour=3, minute=30),
    },
    "usage-reset-monthly-quotas": {
        "task": "usage.tasks.reset_monthly_quotas",
        "schedule": crontab(minute=5),
    },
    # Settlements deferred through a PostgreSQL outage, left by a process that died before replaying them.
    "usage-replay-deferred-settlements": {
        "task": "usage.tasks.replay_deferred_settlements",
        "schedule": 60.0,
    },
    "usage-expire-stale-reservations": {
        "task": "usage.tasks.expire_stale_reservations",
        "schedule": 300.0,
    },
    # Metered usage to Stripe (an outbox: safe to run twice or concurrently).
    "billing-report-usage": {
        "task": "billing.tasks.report_usage",
        "schedule": 60.0,
    },
    "billing-purge-webhook-events": {
        "task": "billing.tasks.purge_webhook_events",
        "schedule": crontab(hour=4, minute=10),
    },
    "billing-enforce-past-due-grace": {
        "task": "billing.tasks.enforce_past_due_grace",
        "schedule": crontab(minute=15),
    },
}

# ------------------------------------------------------------------------------------------------------------
# Accounts (django-allauth)
# ------------------------------------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "chat:new"
ACCOUNT_LOGOUT_REDIRECT_URL = "landing"
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_SESSION_REMEMBER = None
# allauth's defaults, written out so nobody turns them off by accident: they stop password guessing.
ACCOUNT_RATE_LIMITS = {
    "change_password": "5/m/user",
    "manage_email": "10/m/user",
    "reset_password": "20/m/ip,5/m/key",
    "reauthenticate": "10/m/user",
    "reset_password_from_key": "20/m/ip",
    "signup": "20/m/ip",
    "login": "30/m/ip",
    "login_failed": "10/m/ip,5/5m/key",
    "confirm_email": "1/3m/key",
}
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[aisaas] "
ACCOUNT_ADAPTER = "users.adapter.AccountAdapter"
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True


# A provider appears on the login page only when its OAuth app is configured here: "<PREFIX>_CLIENT_ID" and
# "<PREFIX>_SECRET" switch it on, no code change.
_SOCIAL_LOGINS = {"google": ("GOOGLE_OAUTH", ["profile", "email"]), "github": ("GITHUB_OAUTH", ["user:email"])}
SOCIALACCOUNT_PROVIDERS = {
    name: {
        "APP": {"client_id": env.str(f"{prefix}_CLIENT_ID"), "secret": env.str(f"{prefix}_SECRET")},
        "SCOPE": scope,
    }
    for name, (prefix, scope) in _SOCIAL_LOGINS.items()
    if env.str(f"{prefix}_CLIENT_ID", default="")
}

# ------------------------------------------------------------------------------------------------------------
# Email
# ------------------------------------------------------------------------------------------------------------
# With DEBUG on (the embedded default) nothing is sent: each mail is written to a file in EMAIL_FILE_PATH, and
# the outbox page (/dev/outbox/, DEBUG only) shows them, so signing up works with no mail server.
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.filebased.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default=str(BASE_DIR / ".embedded" / "outbox"))
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
# The product's name in its mails ("Hello from aisaas!"), rather than the Sites framework's "example.com".
SITE_NAME = env.str("SITE_NAME", default="aisaas")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="aisaas <noreply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
ADMINS = [("Staff", address) for address in env.list("ADMIN_EMAILS", default=[])]
# Error reports (the e-mails to ADMINS, the debug page) mask every setting that may carry a credential.
DEFAULT_EXCEPTION_REPORTER_FILTER = "core.errors.CredentialMaskingReporterFilter"

# ------------------------------------------------------------------------------------------------------------
# Security
# ------------------------------------------------------------------------------------------------------------
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# How many reverse proxies of ours stand in front of daphne, each appending the address it got the request from
# to X-Forwarded-For. The client's address is then the entry that many places from the right; anything left of
# it was sent by the client and may be forged. The login and sign-up limits key on that address. 0: no proxy,
# X-Forwarded-For is ignored and the connection's own address is the client's.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
ALLAUTH_TRUSTED_PROXY_COUNT = TRUSTED_PROXY_COUNT
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Everything the pages load comes from this origin; 'self' also covers the same-origin websocket.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self' https://checkout.stripe.com https://billing.stripe.com; "
    "frame-ancestors 'none'"
)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# ------------------------------------------------------------------------------------------------------------
# Logging: secrets never reach a log line (no settings dumps, no request bodies).
# ------------------------------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "httpx2": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
        "stripe": {"level": "WARNING"},
        # Django logs these refusals of hostile requests (a 400 each) as errors, which would e-mail the staff once
        # per request: anyone could flood their inbox. They are logged here, not mailed.
        **{
            f"django.security.{name}": {"handlers": ["console"], "propagate": False}
            for name in ("RequestDataTooBig", "TooManyFieldsSent", "TooManyFilesSent", "DisallowedHost")
        },
    },
}

# ------------------------------------------------------------------------------------------------------------
# LLM provider (any OpenAI-compatible server; the embedded default is llm.devllm on port 8001)
# ------------------------------------------------------------------------------------------------------------
# "id:input_usd_per_1M:output_usd_per_1M", comma separated. The first is the default unless LLM_DEFAULT_MODEL.
LLM_MODELS = env.list("LLM_MODELS", default=["demo-mini:0.15:0.60", "demo-large:2.50:10.00"])
LLM_DEFAULT_MODEL = env.str("LLM_DEFAULT_MODEL", default="")
# True when the models are the built-in dev LLM: the UI labels them as demo models.
LLM_DEMO = env.bool("LLM_DEMO", default=not env.str("LLM_BASE_URL", default=""))
# A ceiling over every plan's max_tokens per request.
LLM_MAX_TOKENS = env.int("LLM_MAX_TOKENS", default=4096)
LLM_TEMPERATURE = Decimal(env.str("LLM_TEMPERATURE", default="0.7"))
LLM_TIMEOUT_SECONDS = env.float("LLM_TIMEOUT_SECONDS", default=30.0)
LLM_MAX_RETRIES = env.int("LLM_MAX_RETRIES", default=0)
# Idle connections to the provider are dropped after this long: shorter than the provider keeps them (the dev
# LLM, like many providers and load balancers, closes them after 5 s), so no request goes out on a connection
# the provider is closing.
LLM_KEEPALIVE_SECONDS = env.float("LLM_KEEPALIVE_SECONDS", default=4.0)
# {user_name} and {today} are filled in per request.
LLM_SYSTEM_PROMPT = env.str(
    "LLM_SYSTEM_PROMPT",
    default="You are a helpful assistant. You are talking to {user_name}. Today is {today}.",
)
# Used only when the primary provider fails before the first token reached the user.
LLM_FALLBACK_BASE_URL = env.str("LLM_FALLBACK_BASE_URL", default="")
LLM_FALLBACK_API_KEY = env.str("LLM_FALLBACK_API_KEY", default="")
LLM_FALLBACK_MODEL = env.str("LLM_FALLBACK_MODEL", default="")  # same "id:input:output" form as LLM_MODELS

# ------------------------------------------------------------------------------------------------------------
# Chat
# ------------------------------------------------------------------------------------------------------------
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=8000)
CHAT_MAX_FRAME_BYTES = env.int("CHAT_MAX_FRAME_BYTES", default=65536)
CHAT_HISTORY_MESSAGES = env.int("CHAT_HISTORY_MESSAGES", default=40)
# Deltas arriving within this window go out as one websocket frame (the first one is never held back).
CHAT_STREAM_COALESCE_MS = env.int("CHAT_STREAM_COALESCE_MS", default=25)
# A message still 'streaming' after this long belongs to a process that died; the beat task closes it.
CHAT_STALE_STREAM_MINUTES = env.int("CHAT_STALE_STREAM_MINUTES", default=15)
# The REST API (/api/): the signed-in user's conversations, messages and usage, by session or API key; the chat
# page's own JSON calls (rename, delete, feedback) are this API too.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "users.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "core.api.Pagination",
    "DEFAULT_PARSER_CLASSES": ["core.text.NestingSafeJSONParser"],
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "aisaas API",
    "DESCRIPTION": "Your conversations, messages and usage. The OpenAI-compatible endpoints are under /v1.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # served from our static files: no CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_PATCH": False,  # a rename's PATCH needs its title: the schema says so
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.api.schema_errors_documented",
    ],
}
# The OpenAI-compatible API (/v1): the most characters a request's messages may hold.
API_MAX_PROMPT_CHARS = env.int("API_MAX_PROMPT_CHARS", default=100_000)
# Prompts and answers (and flagged text) older than this many days are erased by a daily beat task; usage
# records, rollups and feedback ratings stay. 0 keeps content forever.
CHAT_CONTENT_RETENTION_DAYS = env.int("CHAT_CONTENT_RETENTION_DAYS", default=0)

# ------------------------------------------------------------------------------------------------------------
# Usage: the gate in front of every paid call (usage.services)
# ------------------------------------------------------------------------------------------------------------
# Global ceilings on what the provider may cost us, across all users (USD). Staff can override them, and
# pause everything, in the admin (Spend control).
SPEND_CAP_DAILY_USD = Decimal(env.str("SPEND_CAP_DAILY_USD", default="100"))
SPEND_CAP_MONTHLY_USD = Decimal(env.str("SPEND_CAP_MONTHLY_USD", default="2000"))
SPEND_KILL_SWITCH = env.bool("SPEND_KILL_SWITCH", default=False)
MODERATION_ENABLED = env.bool("MODERATION_ENABLED", default=True)
MODERATION_MODEL = env.str("MODERATION_MODEL", default="omni-moderation-latest")
PROMPT_CACHE_ENABLED = env.bool("PROMPT_CACHE_ENABLED", default=True)
PROMPT_CACHE_TTL_SECONDS = env.int("PROMPT_CACHE_TTL_SECONDS", default=3600)
# "none": a cache hit costs the user no quota; "full": it is charged like a generated answer.
PROMPT_CACHE_HIT_CHARGE = env.str("PROMPT_CACHE_HIT_CHARGE", default="none")
# Longer than any request may run: reservations older than this belong to a process that died.
USAGE_STALE_RESERVATION_MINUTES = env.int("USAGE_STALE_RESERVATION_MINUTES", default=15)

# ------------------------------------------------------------------------------------------------------------
# Billing: Stripe through dj-stripe (docs/billing.md). Without a secret key billing is off: the pricing and
# billing pages say so and everyone stays on the default plan (the embedded default).
# ------------------------------------------------------------------------------------------------------------
STRIPE_LIVE_MODE = env.bool("STRIPE_LIVE_MODE", default=False)
STRIPE_TEST_SECRET_KEY = env.str("STRIPE_TEST_SECRET_KEY", default="")
STRIPE_LIVE_SECRET_KEY = env.str("STRIPE_LIVE_SECRET_KEY", default="")
# Pinned: the stripe library would otherwise send its own, newer version and objects could change shape.
STRIPE_API_VERSION = env.str("STRIPE_API_VERSION", default="2026-05-27.dahlia")
# Only for a local fake of Stripe's API (dj-stripe refuses it with DEBUG off).
if env.str("STRIPE_API_HOST", default=""):
    STRIPE_API_HOST = env.str("STRIPE_API_HOST")
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_WEBHOOK_VALIDATION = "verify_signature"
# Links in emails (billing notices) point here.
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000")
# Usage is reported to this Stripe Billing Meter (billing.metering); value = tokens.
STRIPE_METER_EVENT_NAME = env.str("STRIPE_METER_EVENT_NAME", default="aisaas_tokens")
# A subscription that is past_due keeps its plan this long after its period ended, then falls back to free.
BILLING_PAST_DUE_GRACE_DAYS = env.int("BILLING_PAST_DUE_GRACE_DAYS", default=7)
# Raw webhook deliveries (headers and body, for staff to look into or reprocess) are deleted after this many days.
BILLING_WEBHOOK_RETENTION_DAYS = env.int("BILLING_WEBHOOK_RETENTION_DAYS", default=30)
