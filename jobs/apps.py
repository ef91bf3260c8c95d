from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Batches"

    def ready(self) -> None:
        from django.conf import settings

        from jobs.optypes import load_builtin_types, load_configured_types

        load_builtin_types()
        load_configured_types(settings.BATCHSITE_OPERATION_TYPES)
