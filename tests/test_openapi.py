"""The API description (``GET /api/openapi.json``) is a valid OpenAPI 3.1 document, and live
nodes answer as it says: Schemathesis generates requests from it against a real secondary node
and a real recursive node (the ``mini`` network on loopback ports) and checks every answer.

The network runs in a thread with its own event loop, because Schemathesis' requests block
the test's thread. Schemathesis runs its examples, coverage and fuzzing phases, positive and
negative data, ``EXAMPLES`` cases per operation, deterministic (the same cases every run):
there must be no server error, and every status, Content-Type, header and body must be one the
document lists. Redirects are never followed (no request leaves loopback).
"""
from __future__ import annotations

import asyncio
import threading
from urllib.parse import quote

import pytest
import requests
import schemathesis
from openapi_spec_validator import validate
from schemathesis import engine
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events

from network_fixtures import FakeClock, basic_token, start_net
from resolver.web import NodeAPI

EXAMPLES = 30
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance")
KNOWN = "88.118.8/SN000000001"  # seeded by the mini network at the 88.118 node


class Background:
    """The ``mini`` network served from its own thread and event loop."""

    def __init__(self, tmp_path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.topo, self.logins, self.host = self.run(start_net(tmp_path, FakeClock()))

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self.run(self.host.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    bg = Background(tmp_path_factory.mktemp("openapi"))
    yield bg
    bg.close()


def secondary(live) -> tuple[str, dict]:
    """The 88.118 node's URL and its node admin's Authorization header."""
    login = live.logins["nodes"]["88.118"]
    return (live.topo.node_for_prefix("88.118.8").address.http_url,
            {"Authorization": basic_token(login["username"], login["secret"])})


def fetch(url: str) -> dict:
    r = requests.get(url + "/api/openapi.json", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    return r.json()


def schemathesis_failures(url: str, headers: dict, *, write_headers: dict | None = None
                          ) -> tuple[int, list[str]]:
    """Run Schemathesis on the node at ``url`` with its own live document, sending
    ``headers`` (``write_headers`` instead on PUT and DELETE, when given); the number of
    requests checked and every failure found (one paragraph each, with a curl to repeat it)."""
    writes = [{"include-method-regex": "^(PUT|DELETE)$", "headers": write_headers}
              ] if write_headers else []
    config = SchemathesisConfig.from_dict({
        "seed": 1, "cache": {"enabled": False},  # no crash cache in the working tree
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "headers": headers, "max-redirects": 0, "request-timeout": 15, "workers": 1,
        # "not ready" is /readyz's documented 503 answer, not a server error
        "operations": [{"include-path-regex": "^/(healthz|readyz)$", "checks": {
            "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}}},
            *writes],
    })
    schema = schemathesis.openapi.from_url(url + "/api/openapi.json", config=config)
    checked, failures = 0, []
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for results in event.recorder.checks.values():
                for check in results:
                    checked += check.name == "not_a_server_error"
                    if check.failure_info is not None:
                        f = check.failure_info
                        failures.append(f"{event.recorder.label}: {check.name}: "
                                        f"{f.failure.title}\n{f.failure.message}\n{f.code_sample}")
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            failures.append(f"schemathesis error: {event}")
    return checked, failures


def test_document_is_valid_openapi_31_for_each_role(live):
    sec_url, _ = secondary(live)
    for url, role in ((sec_url, "secondary"), (live.topo.recursive.http_url, "recursive"),
                      (live.topo.top.http_url, "top")):
        doc = fetch(url)
        validate(doc)  # raises with the first error
        assert doc["openapi"] == "3.1.0" and role in doc["info"]["title"]
        for path in ("/api/handles/{handle}", "/api/handles", "/api/batch/register",
                     "/api/batch/resolve", "/api/admin/prefixes", "/api/prefixes", "/api/stats",
                     "/api/openapi.json", "/{handle}"):
            assert path in doc["paths"], (role, path)
        assert doc["components"]["securitySchemes"]["basic"]["scheme"] == "basic"


def test_every_route_is_documented(live):
    """A route added to ``NodeAPI``'s table without a description in resolver/openapi.py
    would go unchecked: each node's document names every route its router serves."""
    urls = {"top": live.topo.top.http_url, "recursive": live.topo.recursive.http_url,
            "88.118": secondary(live)[0]}
    for name, url in urls.items():
        paths = fetch(url)["paths"]
        api = NodeAPI(live.host.nodes[name])
        routes = {**{p: set(m) for p, m in api.exact.items()},
                  "/api/handles/{handle}": set(api.handle_methods)}
        routes.pop("/api/handles/")  # the empty handle: 400 / 102 (as /api/handles/{handle})
        for path, methods in routes.items():
            documented = {m.upper() for m in paths.get(path, {})}
            assert methods <= documented, f"{name}: {path} {methods - documented} is not " \
                                          "described in resolver/openapi.py"


def test_document_lists_role_differences(live):
    sec = fetch(secondary(live)[0])["paths"]
    rec = fetch(live.topo.recursive.http_url)["paths"]
    assert set(sec["/api/admin/prefixes"]["post"]["responses"]) >= {"201", "401", "403"}
    assert set(rec["/api/admin/prefixes"]["post"]["responses"]) == {"400"}
    assert "503" in rec["/api/handles/{handle}"]["put"]["responses"]  # passed on
    assert "503" not in sec["/api/handles/{handle}"]["put"]["responses"]


def test_schemathesis_secondary_node(live):
    url, admin = secondary(live)
    checked, failures = schemathesis_failures(url, admin)
    assert not failures, "\n\n".join(failures)
    assert checked > 9 * EXAMPLES  # every operation was exercised


def test_schemathesis_recursive_node(live):
    """Anonymous reads (a recursive node takes no credentials); writes with the 88.118 node
    admin's login, which the recursive node passes on to the serving node."""
    checked, failures = schemathesis_failures(live.topo.recursive.http_url, {},
                                              write_headers=secondary(live)[1])
    assert not failures, "\n\n".join(failures)
    assert checked > 9 * EXAMPLES


# ------------------------------------------------------------------ part 7 of issue 9

def test_recursive_node_names_the_node_that_lists_a_prefix(live):
    sec_url, admin = secondary(live)
    r = requests.get(live.topo.recursive.http_url + "/api/handles?prefix=88.118.8",
                     headers=admin, timeout=10)
    assert r.status_code == 400
    doc = r.json()
    assert doc["responseCode"] == 301 and doc["handle"] == "88.118.8"
    assert sec_url in doc["message"]  # the serving node, found as a resolve finds it
    # asked there, the same request lists the prefix
    r = requests.get(sec_url + "/api/handles?prefix=88.118.8", headers=admin, timeout=10)
    assert r.status_code == 200 and r.json()["responseCode"] == 1


@pytest.mark.parametrize("method, path", [("POST", "/api/admin/prefixes"),
                                          ("GET", "/api/prefixes"),
                                          ("POST", "/api/batch/register")])
def test_recursive_node_refuses_administration_with_301(live, method, path):
    r = requests.request(method, live.topo.recursive.http_url + path,
                         json={"prefix": "88.118.99"}, timeout=10)
    assert (r.status_code, r.headers["Content-Type"]) == (400, "application/json;charset=utf-8")
    doc = r.json()
    assert doc["responseCode"] == 301 and "node serving" in doc["message"]
    assert requests.get(live.topo.recursive.http_url + "/api/handles/0.NA/88.118.99",
                        timeout=10).status_code == 404  # nothing was allocated


@pytest.mark.parametrize("text", ["88.118.8", "notahandle"])
def test_no_slash_is_301_in_get_and_batch_alike(live, text):
    """Handle.Net 9.3.1 answers ``GET /api/handles/88.118.8`` with 400 / 301 "That prefix
    doesn't live here" (shared/reference): a batch resolve of the same text says the same."""
    for url in (secondary(live)[0], live.topo.recursive.http_url):
        r = requests.get(f"{url}/api/handles/{quote(text)}", timeout=10)
        single = r.json()
        assert r.status_code == 400
        batch = requests.post(url + "/api/batch/resolve", json={"handles": [text]},
                              timeout=10).json()["results"][0]
        assert single == batch == {"responseCode": 301,
                                   "message": "That prefix doesn't live here", "handle": text}
