"""Forms of teams, and the "Owner" chooser every create form carries."""

from django import forms
from django.core.exceptions import PermissionDenied

from jobs.teams.models import Role
from jobs.teams.selectors import owner_choices


class TeamForm(forms.Form):
    name = forms.CharField(label="Name", max_length=100)
    slug = forms.SlugField(label="Slug", max_length=100, required=False, help_text="Empty: made from the name.")
    description = forms.CharField(label="Description", required=False, widget=forms.Textarea(attrs={"rows": 2}))


class MemberForm(forms.Form):
    user = forms.CharField(label="User", max_length=150, help_text="Their username.")
    role = forms.ChoiceField(label="Role", choices=Role.choices, initial=Role.VIEWER)


class OwnerForm(forms.Form):
    """`owner`: "" for the user themself, or the slug of a team where `action` is allowed
    (operate for batches, manage for templates, instances and subscriptions)."""

    owner = forms.ChoiceField(label="Owner", required=False)

    def __init__(self, *args, user, action: str = "operate", **kwargs) -> None:
        kwargs.setdefault("prefix", "owner")
        super().__init__(*args, **kwargs)
        choices = owner_choices(user, action)
        field = self.fields["owner"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = choices
        self.offers_teams = len(choices) > 1

    @property
    def team(self) -> str | None:
        """The chosen team's slug, None for "me"; a team not offered (not in it, role too low) is
        refused, never quietly replaced by "me"."""
        if not self.is_valid():
            raise PermissionDenied("You may not create this for that team: it takes a higher role there.")
        return self.cleaned_data.get("owner") or None
