# Teams and the chat channels were built side by side from 0001; this joins the two lines.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0002_chat_channels"),
        ("notifications", "0002_teams"),
    ]

    operations = []
