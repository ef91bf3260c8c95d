from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    name = "jobs.schedules"
    label = "schedules"
    verbose_name = "Templates and schedules"
    default_auto_field = "django.db.models.BigAutoField"
