"""Forms shared by pages, API and commands; the type-specific parameter forms live in optypes/."""

from django import forms
from django.conf import settings
from django.utils.module_loading import import_string

from jobs.models import Priority


class BatchOptionsForm(forms.Form):
    """Name and execution options of a batch, with the defaults of SPEC §1."""

    name = forms.CharField(max_length=200, label="Name")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), label="Description")
    max_parallel = forms.IntegerField(min_value=1, max_value=100, initial=4, label="Max parallel")
    stop_on_error = forms.BooleanField(required=False, initial=False, label="Stop on error")
    max_retries = forms.IntegerField(min_value=0, max_value=10, initial=0, label="Automatic retries")
    retry_backoff_s = forms.FloatField(min_value=0, max_value=3600, initial=1.0, label="Retry backoff (s)")
    timeout_s = forms.IntegerField(min_value=1, max_value=86_400, initial=300, label="Timeout per operation (s)")
    priority = forms.ChoiceField(choices=Priority.choices, initial=Priority.DEFAULT, label="Priority")
    webhook_url = forms.URLField(
        required=False,
        max_length=2000,
        assume_scheme="https",
        label="Webhook URL",
        help_text="Optional: receives a signed POST when the batch ends.",
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

    MAX_UPLOAD_BYTES = 20 * 1024 * 1024

    items = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
        label="Items",
        help_text="One label per line. A pasted JSON array or a CSV with a label column works too.",
    )
    items_file = forms.FileField(
        required=False,
        label="Or upload items",
        help_text="CSV with a label column (other columns are per-item parameters) or a JSON array.",
    )

    def clean_items_file(self):
        upload = self.cleaned_data.get("items_file")
        if upload and upload.size > self.MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"The file is larger than {self.MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
        return upload

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("items", "").strip() and cleaned.get("items_file"):
            raise forms.ValidationError("Give the items in the box or as a file, not both.")
        return cleaned
