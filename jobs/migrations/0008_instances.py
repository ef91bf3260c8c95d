"""Database instances as a managed resource: URLs encrypted at rest, owner and sharing, a
per-instance connection limit and the last connection test; operations remember the instance they
target; batches remember the `select` they were made from."""

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from jobs import secrets


def encrypt_urls(apps, schema_editor):
    """Encrypt the URLs stored in clear; instances registered before owners existed stay usable by
    everyone (shared), as they were."""
    DatabaseInstance = apps.get_model("jobs", "DatabaseInstance")
    for instance in DatabaseInstance.objects.all():
        plain = secrets.decrypt(instance.url_encrypted)
        try:
            engine = secrets.make_url(plain).get_backend_name()
        except Exception:
            engine = ""
        DatabaseInstance.objects.filter(pk=instance.pk).update(
            url_encrypted=secrets.encrypt(plain), shared=True, engine=engine[:30]
        )


def decrypt_urls(apps, schema_editor):
    DatabaseInstance = apps.get_model("jobs", "DatabaseInstance")
    for instance in DatabaseInstance.objects.all():
        DatabaseInstance.objects.filter(pk=instance.pk).update(url_encrypted=secrets.decrypt(instance.url_encrypted))


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0007_batch_webhook_url_event_kinds"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RenameField(model_name="databaseinstance", old_name="url", new_name="url_encrypted"),
        migrations.AlterField(
            model_name="databaseinstance",
            name="url_encrypted",
            field=models.TextField(
                help_text="SQLAlchemy connection URL, e.g. postgresql://user:password@host:5432/db; stored encrypted.",
                verbose_name="connection URL (encrypted)",
            ),
        ),
        migrations.AddField(
            model_name="batch",
            name="instance_limited",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="batch",
            name="selection",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="databaseinstance",
            name="engine",
            field=models.CharField(blank=True, help_text="postgresql, mysql or sqlite (from the URL).", max_length=30),
        ),
        migrations.AddField(
            model_name="databaseinstance",
            name="last_test_message",
            field=models.CharField(blank=True, max_length=500),
        ),
        migrations.AddField(
            model_name="databaseinstance",
            name="last_test_ms",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="databaseinstance",
            name="last_test_ok",
            field=models.BooleanField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="databaseinstance",
            name="last_tested_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="databaseinstance",
            name="max_connections",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Operations running against it at once, across all batches and users (empty: no limit).",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(1),
                    django.core.validators.MaxValueValidator(1000),
                ],
                verbose_name="max connections",
            ),
        ),
        migrations.AddField(
            model_name="databaseinstance",
            name="owner",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="database_instances",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="databaseinstance",
            name="shared",
            field=models.BooleanField(default=False, help_text="Everyone may see and use it (staff decide)."),
        ),
        migrations.AddField(
            model_name="operation",
            name="resource",
            field=models.CharField(blank=True, default="", max_length=100),
        ),
        migrations.AddIndex(
            model_name="operation",
            index=models.Index(
                condition=models.Q(("resource", ""), _negated=True),
                fields=["resource", "status"],
                name="operation_resource_status",
            ),
        ),
        migrations.RunPython(encrypt_urls, decrypt_urls),
    ]
