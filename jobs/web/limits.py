"""`/limits/`: the named limits every batch and worker shares. Everyone signed in sees them; staff
add, change and remove them."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from jobs import services
from jobs.errors import IllegalTransition, InvalidInput
from jobs.models import KEY_MESSAGE, LimitPer


class LimitForm(forms.Form):
    key = forms.CharField(max_length=200, label="Key", help_text=KEY_MESSAGE)
    concurrency = forms.IntegerField(
        min_value=1, required=False, label="At most running at once", help_text="Empty: no concurrency limit."
    )
    rate = forms.IntegerField(min_value=1, required=False, label="At most starts", help_text="Empty: no rate limit.")
    per = forms.ChoiceField(choices=LimitPer.choices, initial=LimitPer.MINUTE, label="Per")


def _context(request: HttpRequest, form: LimitForm | None = None) -> dict:
    return {"rows": services.limits_list(), "form": form or LimitForm(label_suffix="")}


@login_required
def limit_list(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return render(request, "jobs/limits.html", _context(request))
    if not request.user.is_staff:
        raise PermissionDenied("Staff only: limits hold for every user's batches.")
    form = LimitForm(request.POST, label_suffix="")
    if form.is_valid():
        values = {name: form.cleaned_data[name] for name in ("concurrency", "rate", "per")}
        try:
            row = services.limit_set(key=form.cleaned_data["key"], values=values)
        except InvalidInput as exc:
            for field, errors in exc.errors.items():
                form.add_error(field if field in form.fields else None, errors)
        except IllegalTransition as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Limit {row['key']}: {row['description']}.")
            return redirect("limits")
    return render(request, "jobs/limits.html", _context(request, form), status=422)


@login_required
@require_POST
def limit_remove(request: HttpRequest, key: str) -> HttpResponse:
    if not request.user.is_staff:
        raise PermissionDenied("Staff only: limits hold for every user's batches.")
    if services.limit_remove(key=key):
        messages.success(request, f"Limit {key} removed.")
    return redirect("limits")
