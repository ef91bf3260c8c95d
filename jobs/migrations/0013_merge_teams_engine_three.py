# Teams and the third engine were built side by side from 0010; this joins the two lines.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0011_teams"),
        ("jobs", "0012_engine_three_limits"),
    ]

    operations = []
