"""The API tokens page: your tokens (scope, team, last use), a new one (its key shown once), revoke."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from jobs import services
from jobs.errors import InvalidInput
from jobs.models import ApiToken, TokenScope
from jobs.teams.forms import OwnerForm


class TokenForm(forms.Form):
    name = forms.CharField(label="Name", max_length=100, help_text="What the token is for.")
    scope = forms.ChoiceField(label="Scope", choices=TokenScope.choices, initial=TokenScope.READ)


def _tokens_of(request: HttpRequest):
    return ApiToken.objects.filter(user_id=int(request.user.pk or 0))


def _render(request: HttpRequest, form: TokenForm, owner: OwnerForm, key: str = "", status: int = 200):
    tokens = _tokens_of(request).select_related("team").order_by("-created_at")
    context = {"tokens": tokens, "form": form, "owner_form": owner, "new_key": key}
    return render(request, "jobs/tokens.html", context, status=status)


@login_required
def token_list(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        owner = OwnerForm(user=request.user, action="view", label_suffix="")
        return _render(request, TokenForm(label_suffix=""), owner)
    form = TokenForm(request.POST, label_suffix="")
    owner = OwnerForm(request.POST, user=request.user, action="view", label_suffix="")
    if form.is_valid():
        try:
            token, key = services.token_create(user=request.user, team=owner.team, **form.cleaned_data)
        except InvalidInput as exc:
            for path, problems in exc.errors.items():
                for problem in problems:
                    form.add_error(path if path in form.fields else None, problem)
        else:
            messages.success(request, f"Token {token.name} created; copy its key now, it is shown only this once.")
            return _render(request, TokenForm(label_suffix=""), owner, key=key, status=201)
    return _render(request, form, owner, status=422)


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = _tokens_of(request).filter(pk=token_id).first()
    if token is None:  # another user's token is no business of this page
        raise Http404("No such token.")
    services.token_revoke(token=token)
    messages.success(request, f"Token {token.name} revoked.")
    return redirect("token_list")
