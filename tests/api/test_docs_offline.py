"""`/docs` and `/redoc` work where only the service's host is reachable: every script,
stylesheet and icon they load is served by the service itself, without a token (issue 11)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx

from harness.service import ServiceServer

ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']|url:\s*["']([^"']+)["']""")


def loaded_urls(html: str) -> list[str]:
    return [a or b for a, b in ASSET.findall(html)]


def test_the_api_docs_load_nothing_from_another_host(service: ServiceServer) -> None:
    with httpx.Client(base_url=service.url, timeout=10) as client:
        for page in ("/docs", "/redoc"):
            response = client.get(page)
            assert response.status_code == 200, page
            urls = loaded_urls(response.text)
            assert len(urls) >= 2, (page, urls)  # the bundle, and the stylesheet or schema
            for url in urls:
                assert not urlsplit(url).netloc, f"{page} loads {url} from another host"
                asset = client.get(url)
                assert asset.status_code == 200, (page, url)
                assert asset.content, (page, url)
            assert "cdn." not in response.text
            assert "fonts.googleapis" not in response.text
        assert client.get("/openapi.json").status_code == 200
