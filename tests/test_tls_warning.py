"""verify_ssl=False (issue 11): one ``warnings.warn`` per provider, visible without any
logging set up, and urllib3's warnings stay on for the rest of the process."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings

from urllib3.exceptions import InsecureRequestWarning

from multi_llm_orchestrator.http import InsecureProviderWarning
from multi_llm_orchestrator.providers.base import ProviderConfig
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider


def insecure(name):
    return OpenAICompatibleProvider(
        ProviderConfig(name=name, model="m", base_url="https://llm.test/v1", verify_ssl=False)
    )


def test_verify_ssl_false_warns_once_per_provider_at_the_callers_line():
    first, second = f"insecure-a-{time.monotonic_ns()}", f"insecure-b-{time.monotonic_ns()}"
    filters_before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        providers = [insecure(first), insecure(first), insecure(second)]
        filters_inside = [f for f in warnings.filters]
    for provider in providers:
        provider.close()
    ours = [w for w in caught if issubclass(w.category, InsecureProviderWarning)]
    assert [first in str(w.message) for w in ours] == [True, False]
    assert second in str(ours[1].message) and "ca_bundle" in str(ours[0].message)
    assert all(w.filename == __file__ for w in ours)  # points at the line that built it
    # Nothing was added to the process's filters (urllib3.disable_warnings adds an "ignore").
    assert filters_inside[1:] == filters_before and warnings.filters == filters_before
    assert not any(f[0] == "ignore" and f[2] is InsecureRequestWarning for f in warnings.filters)


def test_the_warning_is_visible_without_logging_and_urllib3_warnings_stay_on():
    script = (
        "import warnings, urllib3\n"
        "from multi_llm_orchestrator.providers.base import ProviderConfig\n"
        "from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider\n"
        "OpenAICompatibleProvider(ProviderConfig(name='dev', model='m', base_url='https://h/v1', verify_ssl=False))\n"
        "warnings.warn('user code unverified request', urllib3.exceptions.InsecureRequestWarning)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "InsecureProviderWarning: TLS verification is OFF for provider 'dev'" in result.stderr
    assert "user code unverified request" in result.stderr
