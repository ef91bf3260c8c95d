"""Forms of the template and schedule pages; the services do the real checks."""

from django import forms

from jobs.forms import BatchOptionsForm
from jobs.schedules.models import DEFAULT_NAME_PATTERN, BatchTemplate, Missed, Overlap


class TemplateMetaForm(forms.Form):
    name = forms.CharField(max_length=100, label="Template name")
    name_pattern = forms.CharField(
        required=False,
        max_length=200,
        initial=DEFAULT_NAME_PATTERN,
        label="Batch name pattern",
        help_text="{template}, {date}, {datetime} and {n} (run number) are filled in for each run.",
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), label="Description")


class OptionsForm(BatchOptionsForm):
    """The batch options without the name and description (the template has its own)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        del self.fields["name"]
        del self.fields["description"]


class RunItemsForm(forms.Form):
    only = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        label="Only these items",
        help_text="One label per line; leave empty to run every item of the template.",
    )

    def labels(self) -> list[str] | None:
        lines = [line.strip() for line in self.cleaned_data.get("only", "").splitlines() if line.strip()]
        return lines or None


class SaveAsTemplateForm(forms.Form):
    name = forms.CharField(max_length=100, label="Template name")


class ScheduleForm(forms.Form):
    template = forms.ModelChoiceField(queryset=BatchTemplate.objects.none(), label="Template")
    cron = forms.CharField(
        max_length=100,
        label="Cron expression",
        help_text="minute hour day-of-month month day-of-week, e.g. 0 6 * * mon",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"}),
    )
    timezone = forms.CharField(max_length=64, initial="UTC", label="Time zone", help_text="e.g. Europe/Paris")
    overlap = forms.ChoiceField(choices=Overlap.choices, initial=Overlap.SKIP, label="If the previous run is active")
    missed = forms.ChoiceField(choices=Missed.choices, initial=Missed.SKIP, label="Runs missed while down")
    enabled = forms.BooleanField(required=False, initial=True, label="Enabled")

    def __init__(self, *args, templates=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if templates is not None:
            field = self.fields["template"]
            assert isinstance(field, forms.ModelChoiceField)
            field.queryset = templates
