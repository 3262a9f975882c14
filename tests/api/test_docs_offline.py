"""/docs and /redoc work where the service runs: every asset they load is served by the app, none by another host."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient

from api.docs import ASSETS_PATH, DOCS_PATH, REDOC_PATH

# Every way the two pages name a resource: attributes, Swagger UI's `url:` option, and any bare URL in the text.
REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|\burl\s*:\s*["']([^"']+)["']""")
ABSOLUTE = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""")
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".json": "application/json",
}


@pytest.fixture(scope="module")
def app_client() -> TestClient:
    from api.main import create_app

    # The pages and their assets need no runtime: no lifespan, no models, no Redis.
    return TestClient(create_app())


def _references(html: str) -> list[str]:
    return [a or b for a, b in REFERENCE.findall(html)]


@pytest.mark.parametrize("page", [DOCS_PATH, REDOC_PATH])
def test_the_page_and_everything_it_loads_come_from_the_app(app_client: TestClient, page: str) -> None:
    answer = app_client.get(page)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    html = answer.text
    external = [u for u in ABSOLUTE.findall(html) if urlsplit(u).hostname not in (None, "testserver")]
    assert external == [], f"{page} references other hosts: {external}"
    assert "fonts.googleapis" not in html

    references = _references(html)
    expected = {"/openapi.json", f"{ASSETS_PATH}/favicon.png"}
    expected |= (
        {f"{ASSETS_PATH}/swagger-ui-bundle.js", f"{ASSETS_PATH}/swagger-ui.css"}
        if page == DOCS_PATH
        else {f"{ASSETS_PATH}/redoc.standalone.js"}
    )
    assert set(references) == expected
    for reference in references:
        url = urljoin(f"http://testserver{page}", reference)
        assert urlsplit(url).hostname == "testserver"
        asset = app_client.get(url)
        assert asset.status_code == 200, reference
        suffix = reference[reference.rindex(".") :]
        assert asset.headers["content-type"].split(";")[0] == CONTENT_TYPES[suffix], reference
        assert len(asset.content) > 1000, reference  # the real file, not an error page


def test_swagger_ui_does_not_call_the_online_validator(app_client: TestClient) -> None:
    # Swagger UI's default would send the document's URL to validator.swagger.io for a badge.
    assert '"validatorUrl": null' in app_client.get(DOCS_PATH).text


def test_behind_a_proxy_prefix_the_pages_point_under_it() -> None:
    from api.main import create_app

    proxied = TestClient(create_app(), root_path="/risk")
    html = proxied.get(DOCS_PATH).text
    assert set(_references(html)) == {
        "/risk/openapi.json",
        f"/risk{ASSETS_PATH}/favicon.png",
        f"/risk{ASSETS_PATH}/swagger-ui-bundle.js",
        f"/risk{ASSETS_PATH}/swagger-ui.css",
    }


def test_a_missing_asset_is_a_404_not_a_crash(app_client: TestClient) -> None:
    assert app_client.get(f"{ASSETS_PATH}/nope.js").status_code == 404
