"""Settings of the example project: just enough Django to serve the llm_gateway app.

    cd examples/django_app
    python manage.py runserver          # threaded; three mock providers
    LLM_ROUTER_CONFIG=/path/to/router.json python manage.py runserver   # your providers
    curl -X POST localhost:8000/ask -d '{"prompt": "What is Python?"}'
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["llm_gateway"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "llm_gateway.urls"
DATABASES = {}
USE_TZ = True

# A JSON file (or a dict) in the format of Router.from_config; unset: three mock providers.
LLM_ROUTER_CONFIG = os.environ.get("LLM_ROUTER_CONFIG")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"multi_llm_orchestrator": {"handlers": ["console"], "level": "INFO"}},
}
