from django.urls import path

from . import views

urlpatterns = [
    path("ask", views.ask, name="ask"),
    path("ask/stream", views.ask_stream, name="ask-stream"),
    path("health", views.health, name="health"),
    path("stats", views.stats, name="stats"),
]
