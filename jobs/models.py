"""Batches, their operations, result rows and timeline events.

Rows are the source of truth; every write to them goes through jobs.services.
"""

import re
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from jobs.errors import InvalidInput
from jobs.secrets import SecretUnreadable, decrypt, encrypt, mask_url
from jobs.teams import access


class BatchStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    # Created with `after`: starts by itself once its predecessor ends as `after_condition` asks.
    WAITING = "waiting", "Waiting"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    # A drain cancel: nothing new starts, the running operations finish, then `cancelled`.
    CANCELLING = "cancelling", "Cancelling"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    PARTIAL_SUCCESS = "partial_success", "Partial success"
    CANCELLED = "cancelled", "Cancelled"
    # Its deadline passed before it ended.
    EXPIRED = "expired", "Expired"


# Statuses in which lanes may be working or may be started again.
ACTIVE_STATUSES = (BatchStatus.QUEUED, BatchStatus.RUNNING, BatchStatus.PAUSED, BatchStatus.CANCELLING)
TERMINAL_STATUSES = (
    BatchStatus.COMPLETED,
    BatchStatus.FAILED,
    BatchStatus.PARTIAL_SUCCESS,
    BatchStatus.CANCELLED,
    BatchStatus.EXPIRED,
)
# Not started yet: created (pending) or waiting for another batch.
NOT_STARTED_STATUSES = (BatchStatus.PENDING, BatchStatus.WAITING)


class AfterCondition(models.TextChoices):
    """When a batch created with `after` starts, by how its predecessor ended."""

    COMPLETED = "completed", "completed"
    FINISHED = "finished", "finished"
    FAILED = "failed", "failed"


# The predecessor's terminal statuses that let a waiting batch start, by condition. `failed`: the
# predecessor ended without doing all its work, other than by a person's cancel.
AFTER_CONDITION_STATUSES: dict[str, tuple[str, ...]] = {
    AfterCondition.COMPLETED: (BatchStatus.COMPLETED,),
    AfterCondition.FINISHED: TERMINAL_STATUSES,
    AfterCondition.FAILED: (BatchStatus.FAILED, BatchStatus.PARTIAL_SUCCESS, BatchStatus.EXPIRED),
}


class OperationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class Priority(models.TextChoices):
    HIGH = "high", "High"
    DEFAULT = "default", "Default"
    LOW = "low", "Low"


class BatchQuerySet(models.QuerySet):
    def visible_to(self, user, action: str = "view") -> "BatchQuerySet":
        """The batches `user` may `action` (jobs.teams.access: own, their teams' by role; staff: all)."""
        return access.filter_visible(self, user, action)


class Batch(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    type = models.CharField(max_length=100)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batches")
    # A team's batch belongs to the team: its members reach it by role (jobs.teams.access).
    team = models.ForeignKey("teams.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="batches")
    params = models.JSONField(default=dict, blank=True)

    # The options' defaults, limits, labels and help are defined here once; the form, the API schema
    # and the `batch create` command read them from these fields (see option_field_bounds).
    max_parallel = models.PositiveSmallIntegerField(
        "max parallel",
        default=4,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Operations running at once, 1 to 100; 1 runs them one after another.",
    )
    stop_on_error = models.BooleanField(
        "stop on error", default=False, help_text="Skip the pending operations once one fails for good."
    )
    max_retries = models.PositiveSmallIntegerField(
        "automatic retries",
        default=0,
        validators=[MinValueValidator(0), MaxValueValidator(10)],
        help_text="Automatic retries per operation, 0 to 10.",
    )
    retry_backoff_s = models.FloatField(
        "retry backoff (s)",
        default=1.0,
        validators=[MinValueValidator(0), MaxValueValidator(3600)],
        help_text="Seconds before the first retry, doubled for each next one; 0 to 3600.",
    )
    timeout_s = models.PositiveIntegerField(
        "timeout per operation (s)",
        default=300,
        validators=[MinValueValidator(1), MaxValueValidator(86_400)],
        help_text="Seconds one run of an operation may take, 1 to 86400.",
    )
    priority = models.CharField(
        max_length=10,
        choices=Priority.choices,
        default=Priority.DEFAULT,
        help_text="The RQ queue its lanes wait on: high, default or low.",
    )
    webhook_url = models.URLField(
        "webhook URL",
        max_length=2000,
        blank=True,
        default="",
        help_text="Optional: receives a signed POST when the batch ends (delivered by jobs.notifications).",
    )

    deadline_s = models.PositiveIntegerField(
        "deadline (s)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(366 * 86_400)],
        help_text="Optional: seconds from its start after which the batch expires: pending operations are "
        "skipped, running ones stopped, results so far kept.",
    )
    # Chains: this batch waits (status `waiting`) until `after` ends as `after_condition` asks.
    after = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="dependents", verbose_name="after"
    )
    after_condition = models.CharField(
        "after condition",
        max_length=10,
        choices=AfterCondition.choices,
        default=AfterCondition.COMPLETED,
        help_text="With `after`: start when that batch ends completed (default), finished (any end) or failed.",
    )

    status = models.CharField(max_length=20, choices=BatchStatus.choices, default=BatchStatus.PENDING)
    total = models.PositiveIntegerField(default=0)
    pending = models.PositiveIntegerField(default=0)
    running = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    # Sum and count of recorded attempt durations: the ETA's mean without scanning operations.
    duration_total_ms = models.BigIntegerField(default=0)
    duration_count = models.PositiveIntegerField(default=0)
    # Two marks of (time, finished operations), taken at least ETA_WINDOW_S apart by the engine's
    # outcome records: the ETA is the throughput observed since the older one.
    rate_at = models.DateTimeField(null=True, blank=True)
    rate_done = models.PositiveIntegerField(default=0)
    rate_prev_at = models.DateTimeField(null=True, blank=True)
    rate_prev_done = models.PositiveIntegerField(default=0)
    current_operation = models.CharField(max_length=255, blank=True)
    # Bumped by every transition so subscribers can drop events older than what they showed.
    version = models.PositiveBigIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # started (queued) + deadline_s: the reaper and the claim compare it with now, no query per operation.
    deadline_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=500, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Some operation targets an instance with max_connections: its claims take the path that counts
    # connections (jobs.services.instance_limits); every other batch pays nothing for it.
    instance_limited = models.BooleanField(default=False)
    # The `select` its items were resolved from ({"tags", "region", "names"} and the names found).
    selection = models.JSONField(null=True, blank=True)
    # Named limits (Limit) every operation of the batch counts against, besides its type's.
    limit_keys = models.JSONField(
        "limit keys",
        default=list,
        blank=True,
        help_text="Optional: names of limits (e.g. api:billing) every operation of this batch counts against.",
    )
    # The limit its operations last waited for ("api:billing: 50/min"); cleared by its next start.
    waiting_for = models.CharField(max_length=300, blank=True, default="")

    objects = BatchQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "batches"
        indexes = [
            models.Index(fields=["team", "-created_at"], name="batch_team_created"),
            models.Index(fields=["owner", "-created_at"], name="batch_owner_created"),
            models.Index(fields=["owner", "status", "-created_at"], name="batch_owner_status_created"),
            models.Index(fields=["status", "-created_at"], name="batch_status_created"),
            models.Index(fields=["status", "finished_at"], name="batch_status_finished"),
            models.Index(fields=["status", "deadline_at"], name="batch_status_deadline"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.short_id})"

    @property
    def short_id(self) -> str:
        return str(self.id)[:8]

    @property
    def finished_count(self) -> int:
        return self.completed + self.failed + self.skipped

    @property
    def percent_complete(self) -> int:
        """Rounded down, so 100 only once nothing is pending or running."""
        if not self.total:
            return 0
        return self.finished_count * 100 // self.total

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def deadline_left_s(self) -> float | None:
        """Seconds until the deadline while the batch may still run (None without one)."""
        if self.deadline_at is None or self.is_terminal:
            return None
        return max(0.0, (self.deadline_at - timezone.now()).total_seconds())

    @property
    def eta_seconds(self) -> float | None:
        """Remaining operations at the throughput observed over the recent window (operations
        finished per second since the older rate mark, up to now): it follows what the workers
        really do, whatever max_parallel says. None before two marks exist."""
        remaining = self.pending + self.running
        if self.status not in (BatchStatus.QUEUED, BatchStatus.RUNNING) or not remaining:
            return None
        since, done = (self.rate_prev_at, self.rate_prev_done) if self.rate_prev_at else (self.rate_at, self.rate_done)
        if since is None:
            return None
        elapsed = (timezone.now() - since).total_seconds()
        finished = self.finished_count - done
        if elapsed <= 0 or finished <= 0:
            return None
        return round(remaining * elapsed / finished, 1)

    @property
    def misses_deadline(self) -> bool:
        """At the pace observed (eta_seconds), the deadline passes before the last operation
        ends: what is still pending then is skipped."""
        eta, left = self.eta_seconds, self.deadline_left_s
        return eta is not None and left is not None and eta > left

    @property
    def elapsed(self) -> timedelta | None:
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at


# What a batch is created with besides its type, items and params, in form order.
BATCH_OPTIONS = (
    "name",
    "description",
    "max_parallel",
    "stop_on_error",
    "max_retries",
    "retry_backoff_s",
    "timeout_s",
    "priority",
    "webhook_url",
    "deadline_s",
)


def option_field(name: str) -> models.Field:
    """The model field of a Batch option: its default, limits, label and help text are the one
    definition the form, the API schema and the command read."""
    field = Batch._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field


def option_field_bounds(name: str) -> tuple[float | None, float | None]:
    """The (minimum, maximum) the validators of a Batch option field allow (None: unbounded)."""
    low = high = None
    for validator in option_field(name).validators:
        if isinstance(validator, MinValueValidator):
            low = validator.limit_value
        elif isinstance(validator, MaxValueValidator):
            high = validator.limit_value
    return low, high


class Operation(models.Model):
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="operations")
    seq = models.PositiveIntegerField()
    label = models.CharField(max_length=255)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=OperationStatus.choices, default=OperationStatus.PENDING)
    # Every claim increments attempts; it is the fencing token that makes a late or duplicate
    # outcome of an earlier attempt a no-op.
    attempts = models.PositiveIntegerField(default=0)
    auto_retries = models.PositiveSmallIntegerField(default=0)
    not_before = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    # What an operation waiting on outside work saved for its next run (an external job id, poll
    # backoff); None for operations that never waited. Kept across automatic retries, so a retry
    # goes on following the same external job; a person's retry starts afresh.
    state = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    error_type = models.CharField(max_length=100, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    quality_score = models.FloatField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Runs lost with their worker (killed, out of memory, machine gone): such a run is repeated
    # without spending an automatic retry, until BATCHSITE_MAX_LOST losses fail it as WorkerLost.
    lost = models.PositiveSmallIntegerField(default=0)
    # The database instance the operation connects to ("" for none), set at creation: the claim
    # counts running operations by it to hold instances' max_connections across all batches.
    resource = models.CharField(max_length=100, blank=True, default="")
    # What the latest attempt said of itself (ctx.progress, ctx.log, ctx.heartbeat's note): written
    # by its worker every half second or so while it runs, and with its outcome.
    progress_done = models.FloatField(null=True, blank=True)
    progress_total = models.FloatField(null=True, blank=True)
    progress_note = models.CharField(max_length=500, blank=True, default="")
    log = models.TextField(blank=True, default="")
    # The named limits it counts against, set at creation, each between newlines ("\nhost:a\n"), so
    # a limit's waiters are found with one LIKE on either database.
    limit_keys = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["seq"]
        constraints = [models.UniqueConstraint(fields=["batch", "seq"], name="operation_batch_seq")]
        indexes = [
            models.Index(fields=["batch", "status", "seq"], name="operation_batch_status_seq"),
            models.Index(fields=["status", "heartbeat_at"], name="operation_status_heartbeat"),
            models.Index(
                fields=["resource", "status"], name="operation_resource_status", condition=~models.Q(resource="")
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.label}"

    @property
    def progress(self) -> dict[str, Any] | None:
        return progress_of(self)


class AttemptOutcome(models.TextChoices):
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    # Waiting on outside work (an external job it polls): the run ended, the operation goes on later.
    RESCHEDULED = "rescheduled", "Waiting"
    # Handed back unfinished by a worker that stopped; another worker runs it again.
    RELEASED = "released", "Handed back"
    # Its worker stopped heartbeating (killed, out of memory, machine gone).
    LOST = "lost", "Worker lost"
    CANCELLED = "cancelled", "Cancelled"


class OperationAttempt(models.Model):
    """One run of an operation (SPEC §10), written when the run's outcome is recorded: in bulk with
    the group of outcomes the engine records together, by the reaper for a lost run, by a cancel
    for a stopped one. The running attempt is the operation row itself (its worker, started_at and
    attempts); `number` is that attempts value, the claim's fence."""

    # No database constraints: these rows are inserted on the engine's hot path, under the batch's
    # lock, where PostgreSQL's per-row foreign key checks (a locking read of the batch and of the
    # operation for each row) cost more than the insert. The rows come from the operations the
    # same transaction just updated, and the batch's deletion removes them (Django's cascade).
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="attempt_records", db_constraint=False)
    # DO_NOTHING, as ResultRow: deleting a batch stays a few DELETE statements (the batch cascade
    # removes these rows in the same transaction).
    operation = models.ForeignKey(
        Operation, on_delete=models.DO_NOTHING, related_name="attempt_records", db_index=False, db_constraint=False
    )
    number = models.PositiveIntegerField()
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=12, choices=AttemptOutcome.choices)
    error_type = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    # Kept server-side: the operation page and API show it to the batch's owner only.
    traceback = models.TextField(blank=True)
    # The run's last progress report and its log (the last lines, bounded), as its outcome had them.
    progress_done = models.FloatField(null=True, blank=True)
    progress_total = models.FloatField(null=True, blank=True)
    progress_note = models.CharField(max_length=500, blank=True, default="")
    log = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["operation", "number", "id"]
        indexes = [models.Index(fields=["operation", "number"], name="attempt_operation_number")]

    def __str__(self) -> str:
        return f"attempt {self.number} of operation {self.operation_id}: {self.outcome}"

    @property
    def progress(self) -> dict[str, Any] | None:
        return progress_of(self)


def progress_of(row: "Operation | OperationAttempt") -> dict[str, Any] | None:
    """{done, total, note} as an operation last reported it (None if it never did), with
    `percent` when a total is known."""
    if row.progress_done is None and not row.progress_note:
        return None
    done, total = row.progress_done, row.progress_total
    percent = round(100 * done / total, 1) if done is not None and total else None
    return {"done": done, "total": total, "note": row.progress_note, "percent": percent}


class ResultRow(models.Model):
    """One row of an operation's output, kept apart so a batch's results page and stream."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="result_rows")
    # DO_NOTHING so deleting a batch is a few DELETE statements, not a Python-side cascade
    # over every operation; the batch cascade removes these rows in the same transaction.
    operation = models.ForeignKey(Operation, on_delete=models.DO_NOTHING, related_name="result_rows")
    data = models.JSONField(default=dict)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["batch", "id"], name="resultrow_batch_id")]


class BatchEventKind(models.TextChoices):
    CREATED = "created", "Created"
    STARTED = "started", "Started"
    PAUSED = "paused", "Paused"
    RESUMED = "resumed", "Resumed"
    CANCELLED = "cancelled", "Cancelled"
    RETRIED = "retried", "Retried"
    STOPPED = "stopped", "Stopped on error"
    FINISHED = "finished", "Finished"
    REAPED = "reaped", "Reaped"
    # Operations added to an existing batch (by a person, or by an operation through its context).
    EXTENDED = "extended", "Extended"
    # A waiting batch's predecessor ended as its condition asks: it starts.
    UNBLOCKED = "unblocked", "Condition met"
    # A drain cancel was asked: nothing new starts, running operations finish.
    CANCELLING = "cancelling", "Cancelling"
    # The deadline passed (read by the notifications outbox as the end of the batch).
    EXPIRED = "expired", "Expired"
    # An operation failed with no automatic retries left (the notifications outbox reads it).
    OPERATION_FAILED_FINAL = "operation_failed_final", "Operation failed"
    # A person cancelled one operation; the batch goes on (not the batch's "cancelled").
    OPERATION_CANCELLED = "operation_cancelled", "Operation cancelled"


class BatchEvent(models.Model):
    """Append-only timeline of a batch."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=30, choices=BatchEventKind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class TokenScope(models.TextChoices):
    # Each scope includes the ones before it; the token's user's own rights still apply.
    READ = "read", "Read: only look (every write is a 403)"
    OPERATE = "operate", "Operate: also create, cancel, pause, resume, retry, run"
    ADMIN = "admin", "Admin: everything its user may do"


class ApiToken(models.Model):
    """A bearer token for the JSON API. Only a SHA-256 of the key is stored; the key is shown once.

    `scope` caps what it may do (jobs.teams.access); with a `team` it reaches only that team's
    objects, and what it creates belongs to the team."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=10, choices=TokenScope.choices, default=TokenScope.ADMIN)
    team = models.ForeignKey("teams.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="api_tokens")
    prefix = models.CharField(max_length=12, help_text="The key's first characters, to tell tokens apart.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class IdempotencyRecord(models.Model):
    """The first answer to a POST /api/batches with an Idempotency-Key, replayed for 24 hours."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    batch = models.ForeignKey(Batch, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_user_key")]


class DatabaseInstanceQuerySet(models.QuerySet):
    def visible_to(self, user, action: str = "view") -> "DatabaseInstanceQuerySet":
        """The instances `user` may `action`: their own, their teams' by role, and (to view and use)
        the shared ones; staff: all."""
        if access.is_staff(user) or not access.signed_in(user) or action == "manage":
            return access.filter_visible(self, user, action)
        return self.filter(models.Q(shared=True) | access.owned_q(user, action))

    def usable_by(self, owner, team=None) -> "DatabaseInstanceQuerySet":
        """The instances a batch of `owner` (or of `team`, when given) may run against: a team's
        batch uses the team's instances and the shared ones; a person's, those they may operate."""
        if team is None or access.is_staff(owner):
            return self.visible_to(owner, "operate")
        return self.filter(models.Q(shared=True) | models.Q(team=team))


class DatabaseInstance(models.Model):
    """A database that operation types (sql.workflow, metadata.extract, ...) connect to by name.

    The connection URL holds credentials: it is stored encrypted (`url_encrypted`, Fernet, see
    jobs.secrets) and never shown back (admin, API, pages and commands show `masked_url`). `url`
    reads and sets it in clear for the code that connects.

    Who may see and use it: its owner or its team (jobs.teams.access), or everyone when `shared`
    (set by staff); staff see all.
    """

    name = models.SlugField(max_length=100, unique=True, help_text="Letters, digits, - and _; what items refer to.")
    url_encrypted = models.TextField(
        "connection URL (encrypted)",
        help_text="SQLAlchemy connection URL, e.g. postgresql://user:password@host:5432/db; stored encrypted.",
    )
    engine = models.CharField(max_length=30, blank=True, help_text="postgresql, mysql or sqlite (from the URL).")
    region = models.CharField(max_length=100, blank=True)
    tags = models.JSONField(default=list, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="database_instances"
    )
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="database_instances"
    )
    shared = models.BooleanField(default=False, help_text="Everyone may see and use it (staff decide).")
    max_connections = models.PositiveIntegerField(
        "max connections",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Operations running against it at once, across all batches and users (empty: no limit).",
    )
    last_test_ok = models.BooleanField(null=True, blank=True)
    last_test_message = models.CharField(max_length=500, blank=True)
    last_test_ms = models.PositiveIntegerField(null=True, blank=True)
    last_tested_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DatabaseInstanceQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "database instance"

    def __str__(self) -> str:
        return self.name

    @property
    def url(self) -> str:
        return decrypt(
            self.url_encrypted,
            what=f"The URL of database instance '{self.name}'",
            reenter="enter its URL again (Instances page: Edit; or `manage.py batch instance remove` and `add`)",
        )

    @url.setter
    def url(self, value: str) -> None:
        self.url_encrypted = encrypt(value)

    @property
    def masked_url(self) -> str:
        try:
            return mask_url(self.url)
        except SecretUnreadable:
            return "(unreadable with this process's key: enter the URL again)"


# Limit keys: what a Limit row and a batch's `limit_keys` option accept.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.:/@+\-]{1,200}$")
KEY_MESSAGE = "1 to 200 letters, digits or _ . : / @ + -, no spaces (e.g. api:billing)."
MAX_BATCH_KEYS = 10


def check_key(key: Any, path: str = "key") -> str:
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise InvalidInput({path: [KEY_MESSAGE]})
    return key


def check_batch_keys(keys: Any, path: str = "limit_keys") -> list[str]:
    """The batch option: a list of limit keys (a text of keys separated by commas or lines, from a form)."""
    if keys in (None, "", []):
        return []
    if isinstance(keys, str):
        keys = [part.strip() for part in re.split(r"[,\n]", keys) if part.strip()]
    if not isinstance(keys, list):
        raise InvalidInput({path: ["A list of limit keys."]})
    if len(keys) > MAX_BATCH_KEYS:
        raise InvalidInput({path: [f"At most {MAX_BATCH_KEYS} limit keys."]})
    for index, key in enumerate(keys):
        check_key(key, f"{path}[{index}]")
    return list(dict.fromkeys(keys))


class LimitPer(models.TextChoices):
    SECOND = "second", "second"
    MINUTE = "minute", "minute"
    HOUR = "hour", "hour"


LIMIT_WINDOW_S = {LimitPer.SECOND: 1, LimitPer.MINUTE: 60, LimitPer.HOUR: 3600}
LIMIT_PER_SHORT = {LimitPer.SECOND: "s", LimitPer.MINUTE: "min", LimitPer.HOUR: "h"}


class Limit(models.Model):
    """A named limit shared by every batch and worker: at most `concurrency` of its operations
    running at once and/or at most `rate` starts per `per`. Operations name the limits they count
    against through their type (`limit_keys(params)`), their batch (`limit_keys`), their instance
    (`instance:<name>`, whose concurrency is the instance's max_connections) or host (`host:<name>`)."""

    key = models.CharField(max_length=200, unique=True)
    concurrency = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    rate = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    per = models.CharField(max_length=10, choices=LimitPer.choices, default=LimitPer.MINUTE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.key}: {self.describe()}"

    @property
    def window_s(self) -> int:
        return LIMIT_WINDOW_S[LimitPer(self.per)]

    def describe(self) -> str:
        """`2 at once, 50/min`."""
        parts = []
        if self.concurrency:
            parts.append(f"{self.concurrency} at once")
        if self.rate:
            parts.append(f"{self.rate}/{LIMIT_PER_SHORT[LimitPer(self.per)]}")
        return ", ".join(parts) or "no limit"
