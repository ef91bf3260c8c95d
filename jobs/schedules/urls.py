from django.urls import path

from jobs.schedules import views

urlpatterns = [
    path("templates/", views.template_list, name="template_list"),
    path("templates/new/<str:type_key>/", views.template_new, name="template_new"),
    path("templates/<int:template_id>/", views.template_detail, name="template_detail"),
    path("templates/<int:template_id>/edit/", views.template_edit, name="template_edit"),
    path("templates/<int:template_id>/run/", views.template_run, name="template_run"),
    path("templates/<int:template_id>/delete/", views.template_delete, name="template_delete"),
    path("templates/from-batch/<uuid:batch_id>/", views.template_from_batch, name="template_from_batch"),
    path("schedules/", views.schedule_list, name="schedule_list"),
    path("schedules/preview/", views.schedule_preview, name="schedule_preview"),
    path("schedules/<int:schedule_id>/", views.schedule_detail, name="schedule_detail"),
    path("schedules/<int:schedule_id>/toggle/", views.schedule_toggle, name="schedule_toggle"),
    path("schedules/<int:schedule_id>/delete/", views.schedule_delete, name="schedule_delete"),
]
