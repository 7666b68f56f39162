"""The contract fakes' server: routes, recorded requests, queued faults, contract violations."""

import httpx
import pytest

from tests.fakes.server import FakeServer, Reply


def test_routes_faults_and_violations():
    with FakeServer() as s:
        s.route("GET", r"/items/(?P<id>\d+)", lambda r: Reply(200, {"id": int(r.match["id"]), "q": r.arg("q")}))
        assert httpx.get(f"{s.url}/items/7?q=x").json() == {"id": 7, "q": "x"}
        s.fault("GET", r"/items/", status=429, headers={"Retry-After": "3"}, times=2)
        assert [httpx.get(f"{s.url}/items/1").status_code for _ in range(3)] == [429, 429, 200]
        assert httpx.get(f"{s.url}/items/1").status_code == 200
        s.fault("GET", r"/items/", status=502, body="<html>Bad Gateway</html>", content_type="text/html")
        r = httpx.get(f"{s.url}/items/1")
        assert r.status_code == 502 and r.headers["content-type"] == "text/html"
        s.fault("GET", r"/items/", status=None, delay=0.5)
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"{s.url}/items/1", timeout=0.1)
        assert httpx.post(f"{s.url}/nowhere").status_code == 400
        assert s.violations == ["POST /nowhere: no such endpoint in the vendor's API"]
        assert len(s.calls("GET", r"^/items/")) == 7
