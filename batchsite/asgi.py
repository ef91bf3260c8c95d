import os
from typing import Any

from batchsite.asgi_http import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchsite.settings")
# Build the Django app before anything imports models (the consumers do).
django_asgi_app: Any = get_asgi_application()

from django.conf import settings  # noqa: E402

if settings.DEBUG:
    # Static files (htmx, CSS, the admin's) from the app folders, as runserver serves them; without
    # DEBUG they come from collectstatic and the proxy in front.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from jobs.engine import keycheck  # noqa: E402
from jobs.live.routing import websocket_urlpatterns  # noqa: E402

# The workers check at start-up that they can read what this process encrypts.
keycheck.write_probe()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
