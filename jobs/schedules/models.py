"""Templates (saved batch definitions), their runs, and the schedules that run them on a cron.

Every write goes through jobs.schedules.services.
"""

from django.conf import settings
from django.db import models

from jobs.models import Batch
from jobs.teams import access

DEFAULT_NAME_PATTERN = "{template} {datetime}"


class BatchTemplateQuerySet(models.QuerySet):
    def visible_to(self, user, action: str = "view") -> "BatchTemplateQuerySet":
        """The templates `user` may `action` (jobs.teams.access)."""
        return access.filter_visible(self, user, action)


class BatchTemplate(models.Model):
    """What a batch is made of, saved under a name to be run again and again.

    `items` is a list of {"label", "params"} objects; `options` holds only the batch options given
    (BatchOptionsForm fields other than the name), so the others take their defaults at run time.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batch_templates")
    # A team's template runs batches of the team.
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="batch_templates"
    )
    name = models.CharField(max_length=100, help_text="What the template is called; unique per owner.")
    type = models.CharField(max_length=100)
    name_pattern = models.CharField(
        max_length=200,
        default=DEFAULT_NAME_PATTERN,
        help_text="Name of each batch; may hold {template}, {date}, {datetime} and {n} (run number).",
    )
    description = models.TextField(blank=True)
    items = models.JSONField(default=list, blank=True)
    params = models.JSONField(default=dict, blank=True)
    options = models.JSONField(default=dict, blank=True)
    # Runs so far; {n} of the next run is this plus one. Never goes down, even when runs are deleted.
    run_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BatchTemplateQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "template"
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="batchtemplate_owner_name")]

    def __str__(self) -> str:
        return self.name


class RunTrigger(models.TextChoices):
    MANUAL = "manual", "Manual"
    SCHEDULE = "schedule", "Schedule"


class TemplateRun(models.Model):
    """One batch created from a template: by a person, or by a schedule for one of its slots."""

    template = models.ForeignKey(BatchTemplate, on_delete=models.CASCADE, related_name="runs")
    batch = models.OneToOneField(Batch, on_delete=models.CASCADE, related_name="template_run")
    number = models.PositiveIntegerField()
    trigger = models.CharField(max_length=10, choices=RunTrigger.choices, default=RunTrigger.MANUAL)
    schedule = models.ForeignKey("Schedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    # The cron slot this run is for (scheduled runs only).
    slot = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The last line of defence against a slot fired twice (the claim on next_run_at is the first).
            models.UniqueConstraint(fields=["schedule", "slot"], name="templaterun_schedule_slot"),
        ]
        indexes = [models.Index(fields=["template", "-created_at"], name="templaterun_template_created")]

    def __str__(self) -> str:
        return f"{self.template} #{self.number}"

    @property
    def previous(self) -> "TemplateRun | None":
        """The run of the same template just before this one (the batch page compares with it)."""
        return self.template.runs.filter(number__lt=self.number).order_by("-number").first()


class Overlap(models.TextChoices):
    SKIP = "skip", "Skip while the previous run is active"
    QUEUE = "queue", "Queue after the previous run"
    CANCEL_PREVIOUS = "cancel_previous", "Cancel the previous run"


class Missed(models.TextChoices):
    SKIP = "skip", "Skip missed runs"
    RUN_ONCE = "run_once", "Run once for all missed runs"


class ScheduleQuerySet(models.QuerySet):
    def visible_to(self, user, action: str = "view") -> "ScheduleQuerySet":
        """The schedules `user` may `action`: those of the templates they may (a schedule is its
        template's, so it has no owner or team of its own to drift apart from it)."""
        return access.filter_visible(self, user, action, prefix="template__")


class Schedule(models.Model):
    """A template run on a cron expression in a time zone.

    `next_run_at` is the next slot to fire (None while disabled). Firing a slot is claiming it: a
    conditional UPDATE from the slot seen to the following one, so of several workers ticking at
    once exactly one fires it.
    """

    template = models.ForeignKey(BatchTemplate, on_delete=models.CASCADE, related_name="schedules")
    cron = models.CharField(max_length=100, help_text="Five fields: minute hour day-of-month month day-of-week.")
    timezone = models.CharField(max_length=64, default="UTC")
    enabled = models.BooleanField(default=True)
    overlap = models.CharField(max_length=20, choices=Overlap.choices, default=Overlap.SKIP)
    missed = models.CharField(max_length=10, choices=Missed.choices, default=Missed.SKIP)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScheduleQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["enabled", "next_run_at"], name="schedule_enabled_next")]

    def __str__(self) -> str:
        return f"{self.template}: {self.cron} {self.timezone}"

    @property
    def access_holder(self) -> BatchTemplate:
        """Whose the schedule is, for jobs.teams.access: its template's owner or team."""
        return self.template
