from django.urls import path

from jobs.live import consumers

websocket_urlpatterns = [
    path("ws/batches/<uuid:batch_id>/", consumers.BatchConsumer.as_asgi()),
    path("ws/batches/<uuid:batch_id>/operations/<int:seq>/", consumers.OperationConsumer.as_asgi()),
    path("ws/dashboard/", consumers.DashboardConsumer.as_asgi()),
    path("ws/workers/", consumers.WorkersConsumer.as_asgi()),
]
