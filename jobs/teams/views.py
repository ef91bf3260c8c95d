"""Pages of teams: the list (and a new team), one team's members and roles (its admins change them)."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from jobs.errors import InvalidInput
from jobs.teams import access, selectors, services
from jobs.teams.forms import MemberForm, TeamForm
from jobs.teams.models import Role, Team


def _add_errors(form: forms.Form, exc: InvalidInput) -> None:
    for path, problems in exc.errors.items():
        for problem in problems:
            form.add_error(path if path in form.fields else None, problem)


@login_required
def team_list(request: HttpRequest) -> HttpResponse:
    form = TeamForm(request.POST or None, label_suffix="")
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                team = services.team_create(by=request.user, **form.cleaned_data)
            except InvalidInput as exc:
                _add_errors(form, exc)
            else:
                messages.success(request, f"Team {team.name} created; you are its admin.")
                return redirect("team_detail", slug=team.slug)
        status = 422
    teams = [
        {"team": team, "role": access.role_of(request.user, team), "members": team.memberships.count()}
        for team in selectors.teams_of(request.user)
    ]
    return render(request, "teams/team_list.html", {"teams": teams, "form": form}, status=status)


def _detail(request: HttpRequest, team: Team, form: MemberForm | None = None, status: int = 200) -> HttpResponse:
    context = {
        "team": team,
        "role": access.role_of(request.user, team),
        "may_manage": access.can(request.user, "manage", team),
        "members": selectors.memberships_of(team),
        "roles": Role.choices,
        "form": form or MemberForm(label_suffix=""),
    }
    return render(request, "teams/team_detail.html", context, status=status)


@login_required
def team_detail(request: HttpRequest, slug: str) -> HttpResponse:
    team = selectors.team_get_visible(request.user, slug)
    if request.method != "POST":
        return _detail(request, team)
    access.require(request.user, "manage", team)
    form = MemberForm(request.POST, label_suffix="")
    if form.is_valid():
        try:
            membership = services.membership_set(team=team, by=request.user, **form.cleaned_data)
        except InvalidInput as exc:
            _add_errors(form, exc)
        else:
            messages.success(request, f"{membership.user.get_username()} is {membership.role} of {team.name}.")
            return redirect("team_detail", slug=team.slug)
    return _detail(request, team, form, status=422)


@login_required
@require_POST
def member_action(request: HttpRequest, slug: str, username: str, action: str) -> HttpResponse:
    """`role` (POST `role`) or `remove`; the team's admins only (a member may remove themself)."""
    team = selectors.team_get_visible(request.user, slug)
    try:
        if action == "remove":
            services.membership_remove(team=team, user=username, by=request.user)
            messages.success(request, f"{username} left {team.name}.")
        elif action == "role":
            membership = services.membership_set(
                team=team, user=username, role=request.POST.get("role", ""), by=request.user
            )
            messages.success(request, f"{username} is now {membership.role} of {team.name}.")
        else:
            return HttpResponse("No such action.", status=404)
    except InvalidInput as exc:
        messages.error(request, " ".join(problem for problems in exc.errors.values() for problem in problems))
        return _detail(request, team, status=422)
    if action == "remove" and not access.can(request.user, "view", team):
        return redirect("team_list")
    return redirect("team_detail", slug=team.slug)
