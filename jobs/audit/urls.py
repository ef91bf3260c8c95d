from django.urls import path

from jobs.audit import views

urlpatterns = [path("audit/", views.audit_list, name="audit_list")]
