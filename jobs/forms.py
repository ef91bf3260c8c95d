"""Forms shared by pages, API and commands; the type-specific parameter forms live in optypes/."""

from typing import Any

from django import forms
from django.conf import settings
from django.utils.module_loading import import_string

from jobs.errors import InvalidInput
from jobs.items import ITEMS_FILE_MAX_BYTES
from jobs.models import AfterCondition, Priority, check_batch_keys, option_field, option_field_bounds


def _option_field(name: str, **overrides) -> forms.Field:
    """The form field of a Batch option, from the model field: default, limits, label and help."""
    low, high = option_field_bounds(name)
    bounds: dict[str, Any] = {"min_value": low, "max_value": high} if low is not None or high is not None else {}
    field = option_field(name).formfield(**bounds, **overrides)
    assert field is not None
    return field


class LimitKeysField(forms.Field):
    """Names of limits: a list (API, command line) or a text of keys separated by commas or lines (form)."""

    widget = forms.TextInput

    def to_python(self, value):
        try:
            return check_batch_keys(value)
        except InvalidInput as exc:
            raise forms.ValidationError([m for messages in exc.errors.values() for m in messages]) from None

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list) else value


class BatchOptionsForm(forms.Form):
    """Name and execution options of a batch; defaults, limits and labels come from the Batch model."""

    name = _option_field("name", label="Name")
    description = _option_field("description", required=False, widget=forms.Textarea(attrs={"rows": 2}))
    max_parallel = _option_field("max_parallel")
    stop_on_error = _option_field("stop_on_error", required=False)
    max_retries = _option_field("max_retries")
    retry_backoff_s = _option_field("retry_backoff_s")
    timeout_s = _option_field("timeout_s")
    priority = _option_field("priority", choices=Priority.choices)
    webhook_url = _option_field("webhook_url", required=False, assume_scheme="https")
    deadline_s = _option_field("deadline_s", required=False)
    limit_keys = LimitKeysField(
        required=False,
        label="Limit keys",
        help_text="Optional: names of limits (see Limits) every operation counts against, e.g. api:billing.",
    )

    def clean_webhook_url(self) -> str:
        # Which targets are allowed is the notifications feature's policy, named by a setting so
        # the core does not import it.
        url = self.cleaned_data.get("webhook_url") or ""
        if url:
            for path in settings.BATCHSITE_WEBHOOK_URL_VALIDATORS:
                import_string(path)(url)
        return url

    @classmethod
    def defaults(cls) -> dict:
        return {name: field.initial for name, field in cls.base_fields.items() if field.initial is not None}


class ItemsForm(forms.Form):
    """Items as the create page takes them: one label per line, or an uploaded CSV/JSON file."""

    MAX_UPLOAD_BYTES = ITEMS_FILE_MAX_BYTES

    items = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
        label="Items",
        help_text="One label per line. A pasted JSON array or a CSV with a label column works too.",
    )
    items_file = forms.FileField(
        required=False,
        label="Or upload items",
        widget=forms.ClearableFileInput(attrs={"accept": ".jsonl,.ndjson,.csv,.xlsx,.json"}),
        help_text="JSONL (a label or {label, params} a line), CSV or Excel .xlsx (a label column; other "
        "columns are per-item parameters), or a JSON array. Up to 20 MB.",
    )

    def clean_items_file(self):
        upload = self.cleaned_data.get("items_file")
        if upload and upload.size > self.MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"The file is larger than {self.MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
        return upload

    def clean(self):
        cleaned = super().clean() or {}
        if cleaned.get("items", "").strip() and cleaned.get("items_file"):
            raise forms.ValidationError("Give the items in the box or as a file, not both.")
        return cleaned


class AfterForm(forms.Form):
    """The create page's chain fields: wait for another batch of yours before starting."""

    after = forms.ChoiceField(
        required=False,
        label="Start after",
        help_text="Optional: this batch waits for that one to end, then starts by itself.",
    )
    after_condition = forms.ChoiceField(
        required=False,
        choices=AfterCondition.choices,
        initial=AfterCondition.COMPLETED,
        label="When it ends",
        help_text="completed: only if it completed; finished: however it ends; failed: if it failed, partly "
        "failed or expired. Otherwise this batch is cancelled with the reason.",
    )

    def __init__(self, *args, batches=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "— start now —")]
        choices += [(str(b.pk), f"{b.name} ({b.short_id}, {b.get_status_display().lower()})") for b in batches]
        self.fields["after"].choices = choices  # type: ignore[attr-defined]


class AddItemsForm(ItemsForm):
    """The batch page's "Add items": items as on the create page, and whether a finished batch reopens."""

    reopen = forms.BooleanField(
        required=False, label="Reopen", help_text="The batch has finished: run it again with these items."
    )
