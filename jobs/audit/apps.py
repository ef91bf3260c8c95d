from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "jobs.audit"
    label = "audit"
    verbose_name = "Audit log"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs.audit import signals  # noqa: F401  (sign-ins and lock-outs)
