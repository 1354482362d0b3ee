"""CloudFront Functions' event shape (``shape="function"``), translated to and from Lambda@Edge's.

The edge keeps one internal shape — Lambda@Edge's — and every check lives in
:mod:`reflow.edge.triggers`. A hook registered with ``shape="function"`` gets
CloudFront Functions' lighter event instead::

    {"version": "1.0",
     "context": {"eventType": "viewer-request", "distributionId": ..., ...},
     "viewer": {"ip": "10.0.0.1"},
     "request": {"method": "GET", "uri": "/", "querystring": {"a": {"value": "1"}},
                 "headers": {"host": {"value": "x"}}, "cookies": {"id": {"value": "7"}}},
     "response": {"statusCode": 200, "statusDescription": "OK", "headers": {...},
                  "cookies": {...}}}

and what it returns is translated back before the same checks run. Repeated
values use ``multiValue`` lists, as CloudFront Functions does. Only the viewer
hooks accept this shape, as on CloudFront.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote

from reflow.errors import HookError

__all__ = ["from_function_result", "to_function_event"]

FUNCTION_HOOKS = ("viewer-request", "viewer-response")


def _values(entries: list[dict[str, str]]) -> dict[str, Any]:
    first = {"value": entries[0]["value"]}
    if len(entries) > 1:
        first["multiValue"] = [{"value": e["value"]} for e in entries]  # type: ignore[assignment]
    return first


def _headers_out(cf_headers: dict[str, list[dict[str, str]]], skip: str) -> dict[str, Any]:
    return {name: _values(entries) for name, entries in cf_headers.items() if name != skip}


def _cookies_from(values: list[str], *, response: bool) -> dict[str, Any]:
    jar: dict[str, Any] = {}
    for value in values:
        parts = [value] if response else value.split(";")
        for part in parts:
            text = part.split(";", 1)[0] if response else part
            name, sep, cookie = text.strip().partition("=")
            if sep:
                jar[name] = {"value": cookie}
    return jar


def to_function_event(
    hook: str,
    distribution: str,
    request: dict[str, Any],
    response: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The CloudFront Functions event for Lambda@Edge-shaped ``request``/``response``."""
    headers = request.get("headers", {})
    query: dict[str, Any] = {}
    for name, value in parse_qsl(request.get("querystring", ""), keep_blank_values=True):
        if name in query:
            query[name].setdefault("multiValue", [{"value": query[name]["value"]}])
            query[name]["multiValue"].append({"value": value})
        else:
            query[name] = {"value": value}
    event: dict[str, Any] = {
        "version": "1.0",
        "context": {
            "distributionDomainName": "localhost",
            "distributionId": distribution,
            "eventType": hook,
            "requestId": "",
        },
        "viewer": {"ip": request.get("clientIp", "")},
        "request": {
            "method": request.get("method"),
            "uri": request.get("uri"),
            "querystring": query,
            "headers": _headers_out(headers, "cookie"),
            "cookies": _cookies_from(
                [e["value"] for e in headers.get("cookie", [])], response=False
            ),
        },
    }
    if response is not None:
        response_headers = response.get("headers", {})
        event["response"] = {
            "statusCode": int(response.get("status", 200)),
            "statusDescription": response.get("statusDescription", ""),
            "headers": _headers_out(response_headers, "set-cookie"),
            "cookies": _cookies_from(
                [e["value"] for e in response_headers.get("set-cookie", [])], response=True
            ),
        }
    return event


def _headers_in(hook: str, where: str, headers: Any) -> dict[str, list[dict[str, str]]]:
    if not isinstance(headers, dict):
        raise HookError(hook, where, "must be an object of lowercase names to {value}")
    out: dict[str, list[dict[str, str]]] = {}
    for name, item in headers.items():
        if not isinstance(item, dict):
            raise HookError(hook, f"{where}.{name}", "must be an object with a 'value'")
        many = item.get("multiValue")
        values = [m.get("value") for m in many] if isinstance(many, list) else [item.get("value")]
        out[name] = [{"key": name, "value": v} for v in values]  # type: ignore[dict-item]
    return out


def _querystring(hook: str, query: Any) -> str:
    if isinstance(query, str):
        return query
    if not isinstance(query, dict):
        raise HookError(hook, "request.querystring", "must be an object of name to {value}")
    pairs = []
    for name, item in query.items():
        many = item.get("multiValue") if isinstance(item, dict) else None
        values = [m["value"] for m in many] if isinstance(many, list) else [item.get("value")]
        for value in values:
            pairs.append(f"{quote(str(name), safe='')}={quote(str(value), safe='')}")
    return "&".join(pairs)


def from_function_result(hook: str, result: Any, request: dict[str, Any]) -> Any:
    """A CloudFront Functions return value in Lambda@Edge's shape (checked afterwards)."""
    if not isinstance(result, dict):
        return result  # the Lambda@Edge checks name the problem
    if "statusCode" in result:
        headers = _headers_in(hook, "response.headers", result.get("headers", {}))
        for name, cookie in (result.get("cookies") or {}).items():
            attributes = cookie.get("attributes", "")
            value = f"{name}={cookie.get('value', '')}" + (f"; {attributes}" if attributes else "")
            headers.setdefault("set-cookie", []).append({"key": "set-cookie", "value": value})
        translated: dict[str, Any] = {
            "status": str(result["statusCode"]),
            "statusDescription": result.get("statusDescription", ""),
            "headers": headers,
        }
        body = result.get("body")
        if isinstance(body, dict):
            translated["body"] = body.get("data", "")
            translated["bodyEncoding"] = body.get("encoding", "text")
        elif isinstance(body, str):
            translated["body"] = body
        return translated
    headers = _headers_in(hook, "request.headers", result.get("headers", {}))
    cookies = result.get("cookies") or {}
    if cookies:
        joined = "; ".join(f"{name}={c.get('value', '')}" for name, c in cookies.items())
        headers["cookie"] = [{"key": "cookie", "value": joined}]
    return {
        "clientIp": request.get("clientIp"),
        "method": result.get("method"),
        "uri": result.get("uri"),
        "querystring": _querystring(hook, result.get("querystring", {})),
        "headers": headers,
    }
