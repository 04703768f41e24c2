"""HttpProvider._prepare_request (issue 17): the URL's prepared form is computed once per
URL and reused, and the request is what requests itself would prepare."""

import pytest
import requests

from multi_llm_orchestrator import ProviderConfig
from multi_llm_orchestrator.errors import InvalidRequestError
from multi_llm_orchestrator.http import PREPARED_URLS_MAX
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider


def provider():
    return OpenAICompatibleProvider(ProviderConfig(name="prep", model="m", base_url="http://127.0.0.1:9/v1", max_retries=0))


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/v1/chat/completions",
    "http://user:pa%20ss@127.0.0.1:9/v1/x?q=a b&r=ü",
    "http://bücher.example/v1/models",
])
def test_a_prepared_request_matches_requests_own_the_first_time_and_from_the_cache(url):
    chat = provider()
    own = requests.PreparedRequest()
    own.prepare(method="post", url=url, headers={"A": "1"}, data=b"{}")
    for _ in range(2):
        prepared = chat._prepare_request("post", url, {"A": "1"}, b"{}")
        assert (prepared.method, prepared.url, prepared.body) == (own.method, own.url, own.body)
        assert prepared.headers.get("Authorization") == own.headers.get("Authorization")
        assert prepared.headers["Content-Length"] == "2"


def test_the_cache_of_prepared_urls_is_bounded():
    chat = provider()
    for index in range(3 * PREPARED_URLS_MAX):
        chat._prepare_request("GET", f"http://127.0.0.1:9/v1/operations/{index}", {}, None)
    assert 0 < len(chat._prepared_urls) <= PREPARED_URLS_MAX


def test_a_bad_url_is_refused_every_time_not_cached():
    chat = provider()
    for _ in range(2):
        with pytest.raises(InvalidRequestError, match="bad URL"):
            chat.request("GET", "http://", timeout=1)
    assert "http://" not in chat._prepared_urls
