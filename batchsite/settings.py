"""Batchsite settings: everything comes from environment variables with safe local defaults.

A bad value fails loudly at start-up instead of being silently replaced by a default.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from batchsite.keyfile import ensure_key, read_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("BATCHSITE_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {value!r}")


def env_number(name: str, default: float, kind: type = int, minimum: float | None = None) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a {kind.__name__}, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {number}")
    return number


DEBUG = env_bool("DEBUG", True)
# One key for every process of an installation: SECRET_KEY, or else the key kept in
# $BATCHSITE_VAR_DIR/secret_key. With DEBUG on the file is made on first use; without DEBUG it must
# exist already (scripts/run makes it), so that a production host never invents a key of its own.
SECRET_KEY_FILE = VAR_DIR / "secret_key"
SECRET_KEY = env_str("SECRET_KEY", "") or (ensure_key(SECRET_KEY_FILE) if DEBUG else read_key(SECRET_KEY_FILE))
if not SECRET_KEY:
    raise ImproperlyConfigured(
        f"SECRET_KEY must be set when DEBUG is off (or kept in {SECRET_KEY_FILE}, which scripts/run creates); "
        "every web server, worker and command of one installation needs the same key"
    )
ALLOWED_HOSTS = [h.strip() for h in env_str("ALLOWED_HOSTS", "").split(",") if h.strip()]
if not ALLOWED_HOSTS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "ALLOWED_HOSTS must be set when DEBUG is off: the host names the site answers to, "
            "comma-separated (e.g. batches.example.com)"
        )
    ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
# Origins allowed to POST forms besides the site's own host (e.g. https://batches.example.com when
# a proxy in front rewrites the Host header).
CSRF_TRUSTED_ORIGINS = [o.strip() for o in env_str("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"CSRF_TRUSTED_ORIGINS entries start with https:// or http://, got {_origin!r}")

# HTTPS, usually ended by a reverse proxy in front of daphne (deploy/). The proxy says the request
# came over HTTPS in X-Forwarded-Proto: trust it only when the proxy sets it (it must overwrite what
# clients send). Then redirect plain HTTP, mark cookies Secure and send HSTS.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("TRUST_X_FORWARDED_PROTO", False) else None
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Health checks come from the proxy and the container engine over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", SECURE_SSL_REDIRECT)
SECURE_HSTS_SECONDS = env_number("SECURE_HSTS_SECONDS", 0, int, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_rq",
    "django_htmx",
    "ninja",
    "template_partials",
    "axes",
    "jobs.teams",
    "jobs.audit",
    "jobs",
    "jobs.schedules",
    "jobs.notifications",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "jobs.web.middleware.RefuseNulMiddleware",
    "jobs.api.middleware.ApiJsonErrorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before the CSRF check, the first to read a form's body.
    "jobs.web.middleware.OversizeFormMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "jobs.web.middleware.ViewerTimezoneMiddleware",
    "jobs.audit.middleware.AuditSurfaceMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into the lock-out page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "batchsite.urls"
ASGI_APPLICATION = "batchsite.asgi.application"

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
                "jobs.web.context.limits",
            ],
        },
    },
]

# SQLite under var/ by default; several processes (web, workers) write to it, so WAL and
# IMMEDIATE transactions: writers queue on the lock instead of failing with "database is locked".
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'batchsite.sqlite3'}"), conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL",
    }
    # Worker processes must share the test database, so it cannot be in memory.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool("DATABASE_POOL", False):
    # A new PostgreSQL connection costs several milliseconds, more than a whole hot read: a web
    # process (batchsite.serve turns this on for them) keeps a pool (psycopg_pool) and lends a connection per request or operation thread.
    # Under ASGI every request runs on a thread of its own, so persistent per-thread connections
    # (CONN_MAX_AGE) would pile up; a pool does not. Health checks drop connections the server
    # closed (a restart) before they are lent.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_number("DATABASE_POOL_MIN", 2, int, minimum=0),
        "max_size": env_number("DATABASE_POOL_MAX", 20, int, minimum=1),
        "timeout": env_number("DATABASE_POOL_TIMEOUT_S", 10.0, float, minimum=0.1),
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"

# Sign-in throttling (django-axes), for /accounts/login/ and /admin/login/ alike: after
# LOGIN_FAILURE_LIMIT failed sign-ins for one username, or from one client address, further attempts
# are refused for LOGIN_LOCKOUT_MINUTES (each failure while locked out restarts the wait). Unlock
# early in the admin (Axes: access attempts) or with `manage.py axes_reset`. The client address is
# REMOTE_ADDR: behind a reverse proxy, see django-axes' AXES_IPWARE_* settings.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_number("LOGIN_FAILURE_LIMIT", 5, int, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_number("LOGIN_LOCKOUT_MINUTES", 15, float, minimum=0.1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "jobs.web.signin.lockout_response"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")

RQ_QUEUES = {name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 600} for name in ("high", "default", "low")}
# Lanes are enqueued from transaction.on_commit by the service layer itself.
RQ = {"COMMIT_MODE": "auto", "WORKER_CLASS": "jobs.engine.worker.BatchsiteWorker"}

CHANNEL_LAYERS = {
    "default": {
        # Pub/sub: one PUBLISH per group send, no per-channel capacity that drops messages and no
        # group expiry for pages left open; pages resync from a snapshot on (re)connect anyway.
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": env_str("CHANNELS_PREFIX", "batchsite")},
    }
}

# Largest request body read into memory (the API's JSON bodies, form fields; uploaded files are
# not counted): a larger one is a 413 in the API.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_number("MAX_REQUEST_BODY_BYTES", 10 * 1024 * 1024, int, minimum=1024)

# Batch limits and engine timing.
BATCH_MAX_OPERATIONS = env_number("BATCH_MAX_OPERATIONS", 100_000, int, minimum=1)
# Batches one user may create per window through the API (0 turns the limit off).
BATCH_CREATE_RATE_LIMIT = env_number("BATCH_CREATE_RATE_LIMIT", 60, int, minimum=0)
BATCH_CREATE_RATE_WINDOW_S = env_number("BATCH_CREATE_RATE_WINDOW_S", 60, int, minimum=1)
BATCHSITE_REDIS_PREFIX = env_str("BATCHSITE_REDIS_PREFIX", "batchsite")
# /metrics for Prometheus: open when empty (keep it off the public internet at the proxy), else
# only for `Authorization: Bearer <this>` and for staff signed in.
BATCHSITE_METRICS_TOKEN = env_str("BATCHSITE_METRICS_TOKEN", "")
BATCHSITE_HEARTBEAT_S = env_number("BATCHSITE_HEARTBEAT_S", 5.0, float, minimum=0.1)
BATCHSITE_STALE_AFTER_S = env_number("BATCHSITE_STALE_AFTER_S", 30.0, float, minimum=0.5)
BATCHSITE_REAP_INTERVAL_S = env_number("BATCHSITE_REAP_INTERVAL_S", 10.0, float, minimum=0.5)
# Operations one worker process runs at once (threads), across all the batches it serves.
BATCHSITE_WORKER_CONCURRENCY = env_number("BATCHSITE_WORKER_CONCURRENCY", 8, int, minimum=1)
# Operations of `async def` types one worker process runs at once on its event loop.
BATCHSITE_WORKER_ASYNC_CONCURRENCY = env_number("BATCHSITE_WORKER_ASYNC_CONCURRENCY", 500, int, minimum=1)
# Losses of an operation with its worker (SIGKILL, OOM) after which it fails as WorkerLost.
BATCHSITE_MAX_LOST = env_number("BATCHSITE_MAX_LOST", 3, int, minimum=1)
# Operation threads a worker may leave running past their timeout before it recycles itself.
BATCHSITE_MAX_ABANDONED = env_number("BATCHSITE_MAX_ABANDONED", 16, int, minimum=1)
# Seconds a stopping worker lets its running operations finish before it hands them back.
BATCHSITE_STOP_GRACE_S = env_number("BATCHSITE_STOP_GRACE_S", 10.0, float, minimum=0.0)
# Workers' PostgreSQL transactions commit without waiting for the WAL flush (jobs.engine.worker).
BATCHSITE_RELAXED_COMMIT = env_bool("BATCHSITE_RELAXED_COMMIT", True)
# A worker's PostgreSQL session idle this long inside a transaction is ended by the server (a
# worker whose network went away mid-transaction must not hold a batch's row lock).
BATCHSITE_WORKER_IDLE_IN_TRANSACTION_S = env_number("BATCHSITE_WORKER_IDLE_IN_TRANSACTION_S", 30.0, float, minimum=1.0)
# Seconds between the ETA's throughput marks.
BATCHSITE_ETA_WINDOW_S = env_number("BATCHSITE_ETA_WINDOW_S", 10.0, float, minimum=0.5)
BATCHSITE_PROGRESS_INTERVAL_S = env_number("BATCHSITE_PROGRESS_INTERVAL_S", 0.2, float, minimum=0.0)
# Modules that register a project's own operation types, imported by every process at start-up.
BATCHSITE_OPERATION_TYPES = [m.strip() for m in env_str("BATCHSITE_OPERATION_TYPES", "").split(",") if m.strip()]
# Django Tasks (the django-tasks backport): `@task` functions' enqueue() runs them as batches.
TASKS = {"default": {"BACKEND": "jobs.tasks_backend.BatchsiteBackend"}}

# Verbs of `manage.py batch` added by feature apps: functions called with the verbs' subparsers.
BATCHSITE_COMMAND_VERBS = ["jobs.schedules.cli.add_verbs"]
# Templates of feature apps rendered in the core's pages, by slot ({% slot "name" %} in templates/).
BATCHSITE_TEMPLATE_SLOTS = {
    "nav": ["schedules/slots/nav.html", "teams/slots/nav.html"],
    # The navigation's "More" menu: pages people open now and then.
    "nav_more": ["teams/slots/nav_more.html"],
    "batch_actions": ["schedules/slots/batch_actions.html"],
    "batch_info": ["schedules/slots/batch_info.html"],
    "create_actions": ["schedules/slots/create_actions.html"],
}
# Templates and schedules: a cron slot found later than this (workers were down) counts as missed.
BATCHSITE_SCHEDULE_MISSED_AFTER_S = env_number("BATCHSITE_SCHEDULE_MISSED_AFTER_S", 300, int, minimum=1)

# Operation types that reach registered database instances.
# sql.workflow runs only SELECT/WITH statements in read-only transactions unless this is on.
BATCHSITE_SQL_ALLOW_WRITES = env_bool("BATCHSITE_SQL_ALLOW_WRITES", False)
# Fernet keys (comma-separated; the first encrypts, all decrypt) for secrets at rest: instance URLs
# and secret params. Empty: one key derived from SECRET_KEY (jobs.secrets).
BATCHSITE_ENCRYPTION_KEY = env_str("BATCHSITE_ENCRYPTION_KEY", "")
for _key in filter(None, (part.strip() for part in BATCHSITE_ENCRYPTION_KEY.split(","))):
    try:
        __import__("cryptography.fernet", fromlist=["Fernet"]).Fernet(_key.encode())
    except ValueError:
        raise ImproperlyConfigured(
            "BATCHSITE_ENCRYPTION_KEY: each comma-separated key must be a Fernet key (32 url-safe base64-encoded "
            'bytes; make one with: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())")'
        ) from None
# How often a claim that found every targeted instance at its max_connections looks again.
BATCHSITE_INSTANCE_RECHECK_S = env_number("BATCHSITE_INSTANCE_RECHECK_S", 0.2, float, minimum=0.01)
# Files operations produce (data.generate's CSV output), one directory per batch.
BATCHSITE_ARTIFACTS_DIR = Path(env_str("BATCHSITE_ARTIFACTS_DIR", str(VAR_DIR / "artifacts")))
# Where those files are kept: `local` (BATCHSITE_ARTIFACTS_DIR) or `s3` (an S3-compatible bucket
# through django-storages; operations write locally first, then upload and delete the local copy).
BATCHSITE_STORAGE = env_str("BATCHSITE_STORAGE", "local")
if BATCHSITE_STORAGE not in ("local", "s3"):
    raise ImproperlyConfigured(f"BATCHSITE_STORAGE must be local or s3, got {BATCHSITE_STORAGE!r}")
STORAGES: dict[str, dict[str, object]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if BATCHSITE_STORAGE == "s3":
    if not os.environ.get("BATCHSITE_S3_BUCKET"):
        raise ImproperlyConfigured(
            "BATCHSITE_STORAGE=s3 needs BATCHSITE_S3_BUCKET (and usually BATCHSITE_S3_ENDPOINT_URL)."
        )
    STORAGES["artifacts"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ["BATCHSITE_S3_BUCKET"],
            "endpoint_url": os.environ.get("BATCHSITE_S3_ENDPOINT_URL") or None,
            # Unset keys: boto3's own chain (AWS_* variables, ~/.aws, an instance role).
            "access_key": os.environ.get("AWS_ACCESS_KEY_ID") or None,
            "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
            "region_name": os.environ.get("AWS_S3_REGION_NAME") or os.environ.get("AWS_DEFAULT_REGION") or None,
            # Downloads are redirects to presigned URLs that expire.
            "querystring_auth": True,
            "querystring_expire": int(env_number("BATCHSITE_S3_URL_EXPIRE_S", 300, int, minimum=1)),
            "file_overwrite": True,
        },
    }

# Features the core calls without importing them (dotted paths).
# Functions every RQ worker calls on a timer of their own, every BATCHSITE_TICK_INTERVAL_S (the
# schedules' tick, the notifications outbox and deliveries): jobs.engine.ticks.
BATCHSITE_WORKER_TICKS = ["jobs.schedules.tick.run", "jobs.notifications.tick.run", "jobs.audit.tick.run"]
# Audit records older than this many days are deleted by the workers' tick (0: kept for ever).
BATCHSITE_AUDIT_RETENTION_DAYS = env_number("BATCHSITE_AUDIT_RETENTION_DAYS", 365, int, minimum=0)
BATCHSITE_TICK_INTERVAL_S = env_number("BATCHSITE_TICK_INTERVAL_S", 1.0, float, minimum=0.05)
# Extra tabs of the batch page: key -> label, template, context function (batch, query) -> dict.
BATCHSITE_BATCH_TABS = {
    "notifications": {
        "label": "Notifications",
        "template": "notifications/_batch_tab.html",
        "context": "jobs.notifications.views.batch_tab_context",
    }
}
# Checks of a batch's webhook_url at creation; each raises django.forms.ValidationError.
BATCHSITE_WEBHOOK_URL_VALIDATORS = ["jobs.notifications.policy.validate_webhook_url"]

# Notifications (jobs.notifications). Webhook targets on private, loopback or link-local addresses
# are refused outside DEBUG unless their host or a CIDR holding their address is listed here.
BATCHSITE_WEBHOOK_ALLOW = [h.strip() for h in env_str("BATCHSITE_WEBHOOK_ALLOW", "").split(",") if h.strip()]
# Allow every private or loopback target (local development). Follows DEBUG unless set; scripts/run
# hands the web server's DEBUG to its workers here, since they always run with DEBUG off.
BATCHSITE_WEBHOOK_ALLOW_PRIVATE = env_bool("BATCHSITE_WEBHOOK_ALLOW_PRIVATE", DEBUG)
BATCHSITE_WEBHOOK_TIMEOUT_S = env_number("BATCHSITE_WEBHOOK_TIMEOUT_S", 10.0, float, minimum=0.1)
# Failed deliveries are retried with exponential backoff from this base, for this long.
BATCHSITE_WEBHOOK_BACKOFF_S = env_number("BATCHSITE_WEBHOOK_BACKOFF_S", 10.0, float, minimum=0.0)
BATCHSITE_WEBHOOK_RETRY_FOR_S = env_number("BATCHSITE_WEBHOOK_RETRY_FOR_S", 86_400, int, minimum=0)
# Links in notification emails.
BATCHSITE_BASE_URL = env_str("BATCHSITE_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_number("EMAIL_PORT", 25, int, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "batchsite@localhost")

# Logs go to the console: readable text by default, or one JSON object per line on stdout
# (LOG_FORMAT=json) for a log collector; RQ's and daphne's loggers use the same handler.
LOG_FORMAT = env_str("LOG_FORMAT", "text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "batchsite.logformat.JsonLinesFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler"}
        if LOG_FORMAT == "text"
        else {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "json"}
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's own handler would print every line a second time through the root logger.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.db.backends": {"level": "INFO"},
    },
}
