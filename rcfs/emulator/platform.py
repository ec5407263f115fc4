"""The platform host's API: OAuth, call log, call-log sync, recording metadata.

Owns parameter parsing and validation (400 CMN-100/CMN-101 as RingCentral
answers) and the response envelopes (CallLogResponse with paging and absolute
navigation URIs, CallLogSyncResponse, TokenInfo, GetCallRecordingResponse).
Every route goes through `EmulatorState.guard` for auth, throttling and faults.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rcfs.emulator.account import Query, digits
from rcfs.emulator.auth import REFRESH_TTL, SCOPE, Session, TokenError
from rcfs.emulator.errors import ParamError, api_error, json_response, not_found, oauth_error
from rcfs.emulator.errors import param_error as param_error_response
from rcfs.emulator.model import FAX, INBOUND, OUTBOUND, VOICE, Call
from rcfs.emulator.params import (
    boolean,
    enum,
    many,
    one,
    page_number,
    per_page,
    recording_filter,
    timestamp,
    view_detailed,
)
from rcfs.emulator.records import MIN_MS, iso
from rcfs.emulator.state import EmulatorState
from rcfs.emulator.sync import sync_response

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DAY_MS = 86_400_000
DETAILED_MAX_PER_PAGE = 250
PAGING_PAGE_MAX = 1000  # EnumeratedPagingModel.page's maximum


# -- handlers -----------------------------------------------------------------


class Platform:
    """Route handlers bound to one emulator's state."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        acc = "/restapi/v1.0/account/{accountId}"
        ext = acc + "/extension/{extensionId}"
        return [
            Route("/restapi/oauth/token", self.token, methods=["POST"]),
            Route("/restapi/oauth/revoke", self.revoke, methods=["POST"]),
            Route(acc, self.account_info, methods=["GET"]),
            Route(ext, self.extension_info, methods=["GET"]),
            Route(acc + "/call-log", self.company_call_log, methods=["GET"]),
            Route(ext + "/call-log", self.user_call_log, methods=["GET"]),
            Route(acc + "/call-log/{callRecordId}", self.company_record, methods=["GET"]),
            Route(ext + "/call-log/{callRecordId}", self.user_record, methods=["GET"]),
            Route(acc + "/call-log-sync", self.company_sync, methods=["GET"]),
            Route(ext + "/call-log-sync", self.user_sync, methods=["GET"]),
            Route(acc + "/recording/{recordingId}", self.recording, methods=["GET"]),
        ]

    # -- OAuth ----------------------------------------------------------------

    @staticmethod
    def _basic(request: Request) -> tuple[str, str] | None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (user, password) if sep else None

    async def _form(self, request: Request) -> list[tuple[str, str]]:
        body = (await request.body()).decode("utf-8", "replace")
        return parse_qsl(body, keep_blank_values=True) + list(request.query_params.multi_items())

    def _client(self, request: Request) -> tuple[str, Response | None]:
        creds = self._basic(request)
        if creds is None:
            return "anonymous", oauth_error(
                401, "invalid_client", "Client authentication is required", "OAU-123"
            )
        if not self.state.auth.check_client(*creds):
            return creds[0], oauth_error(401, "invalid_client", "Invalid client", "OAU-123")
        return creds[0], None

    async def token(self, request: Request) -> Response:
        client_id, refused = self._client(request)

        async def handle(request: Request, _: Session | None) -> Response:
            if refused is not None:
                return refused
            ctype = request.headers.get("content-type", "")
            if not ctype.lower().startswith("application/x-www-form-urlencoded"):
                return oauth_error(415, "invalid_request", "Unsupported Media Type", "OAU-101")
            form = await self._form(request)
            grant = one(form, "grant_type")
            now = trio.current_time()
            ttl = self.state.token_ttl()
            try:
                if grant == JWT_GRANT:
                    assertion = one(form, "assertion")
                    if not assertion:
                        return oauth_error(
                            400, "invalid_request", "Parameter [assertion] is missing", "OAU-101"
                        )
                    session = self.state.auth.login(assertion, client_id, now, ttl)
                elif grant == "refresh_token":
                    refresh = one(form, "refresh_token")
                    if not refresh:
                        return oauth_error(
                            400, "invalid_request", "Parameter [refresh_token] is missing", "OAU-101"
                        )
                    session = self.state.auth.refresh(refresh, client_id, now, ttl)
                else:
                    return oauth_error(
                        400, "unsupported_grant_type", "Unsupported grant type", "OAU-101"
                    )
            except TokenError as err:
                return oauth_error(400, "invalid_grant", err.message, err.code)
            return json_response(
                {
                    "access_token": session.access_token,
                    "token_type": "bearer",
                    "expires_in": max(1, math.ceil(ttl)),
                    "refresh_token": session.refresh_token,
                    "refresh_token_expires_in": int(REFRESH_TTL),
                    "scope": SCOPE,
                    "owner_id": session.owner_id,
                    "endpoint_id": session.endpoint_id,
                    "session_id": session.id,
                }
            )

        return await self.state.guard(request, "getToken", handle, key=client_id)

    async def revoke(self, request: Request) -> Response:
        client_id, refused = self._client(request)

        async def handle(request: Request, _: Session | None) -> Response:
            if refused is not None:
                return refused
            token = one(await self._form(request), "token")
            if not token:
                return oauth_error(400, "invalid_request", "Parameter [token] is missing", "OAU-101")
            self.state.auth.revoke(token)  # RFC 7009: unknown tokens are not an error
            return Response(status_code=200)

        return await self.state.guard(request, "revokeToken", handle, key=client_id)

    # -- account and extension ------------------------------------------------

    async def account_info(self, request: Request) -> Response:
        return await self.state.guard(request, "readAccountInfo", self._account_info)

    async def _account_info(self, request: Request, session: Session | None) -> Response:
        _, error = self._scope(request, session)
        if error is not None:
            return error
        account = self.state.account
        return json_response(
            {
                "uri": self.state.renderer.api,
                "id": int(account.account_id),
                "mainNumber": account.user.phone,
                "status": "Confirmed",
                "setupWizardState": "Completed",
            }
        )

    async def extension_info(self, request: Request) -> Response:
        return await self.state.guard(request, "readExtension", self._extension_info)

    async def _extension_info(self, request: Request, session: Session | None) -> Response:
        ext_id, error = self._scope(request, session)
        if error is not None:
            return error
        ext = self.state.account.extension(ext_id or "")
        if ext is None:
            return not_found("extensionId", str(ext_id))
        first, _, last = ext.name.partition(" ")
        return json_response(
            {
                "uri": self.state.renderer.extension_uri(ext),
                "id": int(ext.id),
                "extensionNumber": ext.number,
                "name": ext.name,
                "type": "User",
                "status": "Enabled",
                "contact": {"firstName": first, "lastName": last},
            }
        )

    # -- call log -------------------------------------------------------------

    def _forbidden_company(self) -> Response | None:
        if self.state.company_call_log:
            return None
        return api_error(
            403,
            "CMN-408",
            "In order to call this API endpoint, user needs to have "
            "[FullCompanyCallLog] permission for requested resource.",
        )

    def _call_log_scope(
        self, request: Request, session: Session | None
    ) -> tuple[str | None, Response | None]:
        """`_scope`, plus the company-wide permission when no extension is named."""
        ext_id, error = self._scope(request, session)
        if error is None and ext_id is None:
            error = self._forbidden_company()
        return ext_id, error

    def _scope(self, request: Request, session: Session | None) -> tuple[str | None, Response | None]:
        """Check {accountId} (and {extensionId}); returns the extension id to filter on."""
        account_id = request.path_params["accountId"]
        if not self.state.account_matches(account_id):
            return None, not_found("accountId", account_id)
        ext_id = request.path_params.get("extensionId")
        if ext_id is None:
            return None, None
        if ext_id == "~":
            return (session.owner_id if session else self.state.account.user.id), None
        if self.state.account.extension(ext_id) is None:
            return None, not_found("extensionId", ext_id)
        return ext_id, None

    async def company_call_log(self, request: Request) -> Response:
        return await self.state.guard(request, "readCompanyCallLog", self._call_log)

    async def user_call_log(self, request: Request) -> Response:
        return await self.state.guard(request, "readUserCallLog", self._call_log)

    async def _call_log(self, request: Request, session: Session | None) -> Response:
        ext_id, error = self._call_log_scope(request, session)
        if error is not None:
            return error
        params = list(request.query_params.multi_items())
        try:
            return self._call_log_page(request, params, ext_id)
        except ParamError as err:
            return param_error_response(err)

    def _call_log_page(
        self, request: Request, params: list[tuple[str, str]], ext_id: str | None
    ) -> Response:
        """One page of readCompanyCallLog / readUserCallLog.

        Where the spec is silent, the emulator chose (see also `params`):
        - `dateFrom` after `dateTo`: 400 CMN-101 naming `dateFrom` (an empty
          window, `dateFrom` == `dateTo`, is a valid, empty page);
        - a date without a zone is UTC (`records.parse_iso`);
        - an empty parameter is absent;
        - `phoneNumber` together with `extensionNumber` ("Cannot be combined with
          `phoneNumber` filter"): 400 CMN-101 naming `phoneNumber`.
        The spec says `perPage` above 1000 gets 1000 (clamped) and that `paging.page`
        "may be omitted if result is empty (because non-existent page was
        specified)": a page past the last one is an empty page without `page`,
        `pageStart` and `pageEnd`.
        """
        now = time.time()
        date_to = timestamp(params, "dateTo")
        date_to = int(now * 1000) if date_to is None else date_to
        date_from = timestamp(params, "dateFrom")
        date_from = max(MIN_MS, date_to - DAY_MS) if date_from is None else date_from
        if date_from > date_to:
            raise ParamError("dateFrom", one(params, "dateFrom"))
        detailed = view_detailed(params)
        size = per_page(params)
        if detailed:
            size = min(size, DETAILED_MAX_PER_PAGE)
        page = page_number(params)
        ext_number = one(params, "extensionNumber") or None
        phone = one(params, "phoneNumber") or None
        if phone is not None and ext_number is not None:
            raise ParamError("phoneNumber", phone)
        query = Query(
            date_from_ms=date_from,
            date_to_ms=date_to,
            extension_id=ext_id,
            kinds=enum(many(params, "type"), "type", (VOICE, FAX)),
            directions=enum(many(params, "direction"), "direction", (INBOUND, OUTBOUND)),
            recording_types=recording_filter(params),
            show_deleted=boolean(params, "showDeleted"),
            show_blocked=boolean(params, "showBlocked", default=True),
            extension_number=ext_number,
            session_id=one(params, "sessionId") or None,
            telephony_session_id=one(params, "telephonySessionId") or None,
            phone_digits=None if phone is None else digits(phone),
            transports=enum(many(params, "transport"), "transport", ("PSTN", "VoIP")),
        )
        calls = self.state.account.query(query, now)
        start = (page - 1) * size
        chosen = calls[start : start + size]
        records = [
            self.state.renderer.record(c, now, detailed=detailed, extension_level=ext_id is not None)
            for c in chosen
        ]
        # Navigation URIs pin the resolved window, so following them is stable
        # even while new calls arrive.
        fixed = [(k, v) for k, v in params if k not in ("page", "perPage", "dateFrom", "dateTo")]
        fixed += [("dateFrom", iso(date_from)), ("dateTo", iso(date_to)), ("perPage", str(size))]
        base = f"{self.state.server_url}{request.url.path}"

        def uri(n: int) -> dict[str, str]:
            return {"uri": f"{base}?{urlencode([*fixed, ('page', str(n))])}"}

        last = max(1, math.ceil(len(calls) / size))
        navigation = {"firstPage": uri(1)}
        if start + size < len(calls):
            navigation["nextPage"] = uri(page + 1)
        if page > 1:
            navigation["previousPage"] = uri(min(page - 1, last))
        navigation["lastPage"] = uri(last)
        paging: dict[str, int] = {"perPage": size}
        # EnumeratedPagingModel caps `page` at 1000; past that it is left out too.
        if (chosen or page == 1) and page <= PAGING_PAGE_MAX:
            paging["page"] = page
        if chosen:
            paging["pageStart"] = start
            paging["pageEnd"] = start + len(chosen) - 1
        body = {"uri": uri(page)["uri"], "records": records, "paging": paging}
        body["navigation"] = navigation
        return json_response(body)

    async def company_record(self, request: Request) -> Response:
        return await self.state.guard(request, "readCompanyCallRecord", self._record)

    async def user_record(self, request: Request) -> Response:
        return await self.state.guard(request, "readUserCallRecord", self._record)

    async def _record(self, request: Request, session: Session | None) -> Response:
        ext_id, error = self._call_log_scope(request, session)
        if error is not None:
            return error
        record_id = request.path_params["callRecordId"]
        try:
            detailed = view_detailed(list(request.query_params.multi_items()))
        except ParamError as err:
            return param_error_response(err)
        call: Call | None = self.state.account.call(record_id)
        if call is None or (ext_id is not None and call.ext.id != ext_id):
            return not_found("callRecordId", record_id)
        return json_response(
            self.state.renderer.record(
                call, time.time(), detailed=detailed, extension_level=ext_id is not None
            )
        )

    # -- sync -----------------------------------------------------------------

    async def company_sync(self, request: Request) -> Response:
        return await self.state.guard(request, "syncAccountCallLog", self._sync)

    async def user_sync(self, request: Request) -> Response:
        return await self.state.guard(request, "syncUserCallLog", self._sync)

    async def _sync(self, request: Request, session: Session | None) -> Response:
        ext_id, error = self._call_log_scope(request, session)
        if error is not None:
            return error
        params = list(request.query_params.multi_items())
        uri = f"{self.state.server_url}{request.url.path}"
        if request.url.query:
            uri += f"?{request.url.query}"
        try:
            body = sync_response(self.state, params, ext_id, uri)
        except ParamError as err:
            return param_error_response(err)
        if isinstance(body, Response):
            return body
        return json_response(body)

    # -- recordings -----------------------------------------------------------

    async def recording(self, request: Request) -> Response:
        return await self.state.guard(request, "readCallRecording", self._recording)

    async def _recording(self, request: Request, session: Session | None) -> Response:
        _, error = self._scope(request, session)
        if error is not None:
            return error
        rid = request.path_params["recordingId"]
        rec = self.state.account.recording(rid, time.time())
        if rec is None:
            return not_found("recordingId", rid)
        body: dict[str, Any] = self.state.renderer.recording_metadata(
            rec, self.state.content_type_for(rec.id)
        )
        return json_response(body)
