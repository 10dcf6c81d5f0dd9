"""Schemathesis hooks for vodfarm.

- tus bodies are raw bytes.
- Two rejections that schemathesis' checks misread as acceptance; both are
  dropped only in exactly that shape, so every other finding still fails
  the run:
  * 412 for a missing or wrong `Tus-Resumable`: tus 1.0 requires that
    status (with `Tus-Version`), and the document lists it on every tus
    route, but it is not among the statuses schemathesis counts as a
    rejection.
  * An unknown extra request header on an otherwise valid request (HTTP
    servers ignore those). Schemathesis means to pass such cases, but
    re-validates integer headers (`Upload-Length: 0`) as the strings they
    are on the wire, sees "other negations", and reports the 201.
- Authentication: the fuzzer's user token on every request, except that a
  log-out (`DELETE /v1/tokens/current`) gets a token of its own, logged in
  for it, so it never revokes the token every other request uses; for the
  same reason a revocation that names that token (`DELETE
  /v1/tokens/{token_id}`, e.g. over a link schemathesis inferred from
  `GET /v1/tokens`) revokes a fresh token of the same account instead.
- One removal it cannot see: terminating a tus upload deletes its video
  (as the document says), so the video's routes answer 404 afterwards;
  the video ids whose uploads were terminated are recorded from the
  answers, and "created resource not found" for just those is dropped.
"""

import json
import os

import requests
import schemathesis
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.generation.meta import CoveragePhaseData, CoverageScenario
from schemathesis.openapi.checks import EnsureResourceAvailability, MissingHeaderNotRejected

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")

TUS_VERSION = "1.0.0"


def _log_in():
    """A fresh token of the fuzzer's account: the log-in's answer."""
    r = requests.post(
        os.environ["VODFARM_FUZZ_API"] + "/v1/tokens",
        json={"username": os.environ["VODFARM_FUZZ_USER"], "password": os.environ["VODFARM_FUZZ_PASSWORD"]},
        timeout=30,
    )
    r.raise_for_status()
    return r.json()


def _disposable_token():
    return _log_in()["token"]


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.method.upper() == "DELETE" and case.path == "/v1/tokens/{token_id}":
        params = case.path_parameters or {}
        if params.get("token_id") == os.environ["VODFARM_FUZZ_TOKEN_ID"]:
            params["token_id"] = _log_in()["token_id"]


@schemathesis.auth()
class FuzzerToken:
    def get(self, case, context):
        return os.environ["VODFARM_FUZZ_TOKEN"]

    def set(self, case, data, context):
        token = data
        if case.method.upper() == "DELETE" and case.path == "/v1/tokens/current":
            token = _disposable_token()
        if case.headers is None:
            case.headers = {}
        case.headers["Authorization"] = f"Bearer {token}"

# upload id -> video id, from creation answers; video ids whose upload a
# termination (204) deleted.
_VIDEO_OF_UPLOAD = {}
_VIDEOS_TERMINATED = set()


def _header(headers, name):
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def _first(value):
    return value[0] if isinstance(value, list) else value


@schemathesis.hook
def after_call(context, case, response):
    if case.method.upper() == "POST" and response.status_code == 201:
        if case.path == "/v1/videos":
            try:
                body = json.loads(response.content)
                _VIDEO_OF_UPLOAD[body["upload_id"]] = body["video_id"]
            except (ValueError, KeyError, TypeError):
                pass
        elif case.path == "/v1/uploads":
            location = _first(_header(response.headers, "Location")) or ""
            video = _first(_header(response.headers, "Vodfarm-Video-Id"))
            if video:
                _VIDEO_OF_UPLOAD[location.rstrip("/").rsplit("/", 1)[-1]] = video
    elif case.path == "/v1/uploads/{upload_id}" and response.status_code == 204:
        method = case.method.upper()
        if method == "POST":
            method = str(_header(response.request.headers, "X-HTTP-Method-Override") or "").upper()
        video = _VIDEO_OF_UPLOAD.get(str((case.path_parameters or {}).get("upload_id")))
        if method == "DELETE" and video:
            _VIDEOS_TERMINATED.add(video)


def _tus_version_refused(case, response):
    """A documented 412 because the request's Tus-Resumable is not 1.0.0."""
    if response.status_code != 412:
        return False
    if "412" not in case.operation.definition.raw.get("responses", {}):
        return False
    if _header(response.headers, "Tus-Version") is None:
        return False
    return _header(response.request.headers, "Tus-Resumable") != TUS_VERSION


def _only_an_extra_header(case):
    meta = case.meta
    data = meta.phase.data if meta is not None else None
    return (
        isinstance(data, CoveragePhaseData)
        and data.scenario == CoverageScenario.OBJECT_UNEXPECTED_PROPERTIES
        and data.parameter_location is not None
        and data.parameter_location.name == "HEADER"
    )


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if isinstance(failure, (AcceptedNegativeData, MissingHeaderNotRejected)) and _tus_version_refused(
        case, response
    ):
        return False
    if isinstance(failure, AcceptedNegativeData) and _only_an_extra_header(case):
        return False
    if (
        isinstance(failure, EnsureResourceAvailability)
        and response.status_code == 404
        and (case.path_parameters or {}).get("video_id") in _VIDEOS_TERMINATED
    ):
        return False
    return True
