from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Batches"

    def ready(self) -> None:
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save

        from jobs.models import ApiToken
        from jobs.optypes import load_builtin_types, load_configured_types, load_plugin_types
        from jobs.services.tokens import forget_all

        load_builtin_types()
        load_configured_types(settings.BATCHSITE_OPERATION_TYPES)
        load_plugin_types()
        for model in (get_user_model(), ApiToken):
            post_save.connect(forget_all, sender=model, dispatch_uid=f"tokens-forget-{model.__name__}")
            post_delete.connect(forget_all, sender=model, dispatch_uid=f"tokens-forget-del-{model.__name__}")
