"""A Django app that answers prompts through one shared multi-llm-orchestrator Router.

The Router is built once, when Django starts (``LlmGatewayConfig.ready``), from the file
named by the ``LLM_ROUTER_CONFIG`` setting (a path or a dict; default: three mock
providers), and shared by every request thread: the Router is thread-safe and blocking,
which is what Django's threaded servers (runserver, gunicorn --threads, uWSGI) expect.
"""
