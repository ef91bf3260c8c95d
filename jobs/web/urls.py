from django.urls import path

from jobs.web import compare, instances, limits, tokens, type_docs, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("batches/", views.batch_list, name="batch_list"),
    path("batches/bulk/", views.batch_bulk, name="batch_bulk"),
    path("search/", views.search, name="search"),
    path("batches/<uuid:batch_id>/operations-bulk/", views.operations_bulk, name="operations_bulk"),
    path("batches/new/", views.batch_new, name="batch_new"),
    path("batches/new/<str:type_key>/", views.batch_create, name="batch_create"),
    path("types/<str:type_key>/", type_docs.type_docs, name="type_docs"),
    path("batches/<uuid:batch_id>/", views.batch_detail, name="batch_detail"),
    path("batches/<uuid:batch_id>/operations/<int:seq>/", views.operation_detail, name="operation_detail"),
    path(
        "batches/<uuid:batch_id>/operations/<int:seq>/<slug:action>/",
        views.operation_action,
        name="operation_action",
    ),
    path("batches/<uuid:batch_id>/add-items/", views.batch_add_items, name="batch_add_items"),
    path("batches/<uuid:batch_id>/compare/", compare.batch_compare_pick, name="batch_compare_pick"),
    path("batches/<uuid:batch_id>/compare/<uuid:other_id>/", compare.batch_compare, name="batch_compare"),
    path("batches/<uuid:batch_id>/<slug:action>/", views.batch_action, name="batch_action"),
    path("stats/", views.stats, name="stats"),
    path("workers/", views.workers, name="workers"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
    path("tokens/", tokens.token_list, name="token_list"),
    path("tokens/<int:token_id>/revoke/", tokens.token_revoke, name="token_revoke"),
    path("limits/", limits.limit_list, name="limits"),
    path("limits/<str:key>/remove/", limits.limit_remove, name="limit_remove"),
    path("instances/", instances.instance_list, name="instance_list"),
    path("instances/import/", instances.instance_import, name="instance_import"),
    path("instances/<slug:name>/test/", instances.instance_test, name="instance_test"),
    path("instances/<slug:name>/edit/", instances.instance_edit, name="instance_edit"),
    path("instances/<slug:name>/remove/", instances.instance_remove, name="instance_remove"),
]
