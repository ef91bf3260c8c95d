from django.urls import path

from jobs.teams import views

urlpatterns = [
    path("teams/", views.team_list, name="team_list"),
    path("teams/<slug:slug>/", views.team_detail, name="team_detail"),
    path("teams/<slug:slug>/members/<str:username>/<slug:action>/", views.member_action, name="team_member_action"),
]
