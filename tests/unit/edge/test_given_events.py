"""The ``*_given`` runs hand functions the same event as :meth:`Hook.event` builds."""

from __future__ import annotations

import copy
from typing import Any

from reflow.edge import Hook
from reflow.edge.triggers import headers_to_cf


def test_request_and_response_given_events_equal_hook_event() -> None:
    seen: list[Any] = []

    def keep(event: dict[str, Any], context: object) -> Any:
        seen.append(copy.deepcopy(event))
        cf = event["Records"][0]["cf"]
        return cf["response"] if "response" in cf else cf["request"]

    template = headers_to_cf([("host", "e")])
    request = {
        "clientIp": "10.0.0.1",
        "method": "GET",
        "uri": "/a",
        "querystring": "",
        "headers": headers_to_cf([("host", "e")]),
    }
    asking = Hook("q", "viewer-request", "/*", keep, distribution="d1")
    asking.run_request_given(request, template)
    assert seen[-1] == asking.event(copy.deepcopy(request))
    response_template = headers_to_cf([("ETag", '"v"')])
    response = {
        "status": "200",
        "statusDescription": "OK",
        "headers": headers_to_cf([("ETag", '"v"')]),
    }
    answering = Hook("r", "viewer-response", "/*", keep, distribution="d2")
    answering.run_response_given(request, response, response_template)
    assert seen[-1] == answering.event(copy.deepcopy(request), copy.deepcopy(response))
    assert seen[-1]["Records"][0]["cf"]["config"]["eventType"] == "viewer-response"
    assert seen[-1]["Records"][0]["cf"]["config"]["distributionId"] == "d2"
