"""``GET /api/runs?before=`` with an empty value: a position before every id (no runs), as
``Store.list_runs(before="")`` answers on every store and `RemoteStore` relies on; documented in
the OpenAPI document. The web UI, whose links a person edits, reads it as the first page."""

from __future__ import annotations

import httpx
import pytest

from agentspan.stores.remote import RemoteStore
from agentspan.stores.sqlite import SqliteStore
from agentspan.testing.conformance import make_run
from agentspan_server.app import create_app

from server_support import thread_server

pytestmark = pytest.mark.usefixtures("cli_home")  # an empty AGENTSPAN_HOME: nothing touches ~/.agentspan


def test_an_empty_before_is_a_position_before_every_id_and_documented(cli_store: SqliteStore) -> None:
    store = cli_store
    ids = sorted((store.create_run(make_run())[0].id for _ in range(3)), reverse=True)
    assert store.list_runs(before="") == []
    with thread_server(create_app(cli_store)) as url, httpx.Client(base_url=url) as http:
        assert [r["id"] for r in http.get("/api/runs").json()["runs"]] == ids
        assert http.get("/api/runs", params={"before": ""}).json() == {"runs": []}
        assert http.get("/api/runs?before=").json() == {"runs": []}
        assert [r["id"] for r in http.get("/api/runs", params={"before": ids[0]}).json()["runs"]] == ids[1:]
        remote = RemoteStore(url)
        try:  # sends before= as given: the same answer as the embedded store's
            assert remote.list_runs(before="") == []
            assert [r.id for r in remote.list_runs()] == ids
        finally:
            remote.close()
        page = http.get("/ui/runs?before=").text  # the UI: no position, the first page
        assert all(f'data-run="{i}"' in page for i in ids)
        (param,) = [p for p in http.get("/openapi.json").json()["paths"]["/api/runs"]["get"]["parameters"]
                    if p["name"] == "before"]  # fmt: skip
        assert "An empty value is a position too, before every id: no runs" in param["description"]
