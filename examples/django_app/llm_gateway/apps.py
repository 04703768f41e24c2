"""Builds the Router once per process, when Django starts."""

import atexit

from django.apps import AppConfig, apps
from django.conf import settings

from multi_llm_orchestrator import Router
from multi_llm_orchestrator.cli import DEFAULT_CONFIG


class LlmGatewayConfig(AppConfig):
    name = "llm_gateway"
    router = None

    def ready(self):
        # One Router per process: its connection pools, breakers and metrics are shared by
        # every request. A bad configuration fails here, at startup, not on the first request.
        self.router = Router.from_config(getattr(settings, "LLM_ROUTER_CONFIG", None) or DEFAULT_CONFIG)
        atexit.register(self.router.close)


def get_router() -> Router:
    """The process's Router (views call this)."""
    return apps.get_app_config("llm_gateway").router
