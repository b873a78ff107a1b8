"""Business logic of the emulated Pinterest operations, keyed by operationId.

Requests reach these handlers only after routing, authentication, contract
validation and the ad-account check, so handlers trust the parameter and body
shapes and only apply the rules the description states in prose (or the
emulator's documented choices):

* customer-list create/PATCH with no records at all (``""`` or only commas)
  is a 400: Pinterest describes records as the users to upload, and an empty
  batch is a client bug the emulator should surface rather than count;
* ``order`` defaults to ``ASCENDING``;
* audiences: only ``audience_type: CUSTOMER_LIST`` is modelled (others are a
  400 saying so); its ``rule.customer_list_id`` must name a list of the same
  ad account (else 400); an ``ad_account_id`` in the body must equal the
  one in the path (else 400); ``ownership_type=RECEIVED`` lists nothing;
* ``/oauth/token`` implements only ``grant_type=refresh_token``; the other
  grant types validate against their schemas and then get a 400; an unknown,
  expired or rotated-out refresh token is a 400 (code 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import invalid
from .faults import FaultInjector
from .pagination import ASCENDING
from .records import split_records
from .requestlog import LogEntry
from .state import EmulatorState
from .tokens import TokenStore


@dataclass(frozen=True)
class ApiResult:
    """A successful answer (errors are raised as ApiError)."""

    body: Any
    status: int = 200


Handler = Callable[[Mapping[str, Any], Any, LogEntry], ApiResult]


class PinterestApi:
    """Implements each operation of the vendored subset."""

    def __init__(
        self,
        state: EmulatorState,
        tokens: TokenStore,
        faults: FaultInjector,
        *,
        created_time: int,
    ) -> None:
        self._state = state
        self._tokens = tokens
        self._faults = faults
        self._created_time = created_time
        self._handlers: dict[str, Handler] = {
            "ad_accounts/get": self._get_ad_account,
            "customer_lists/create": self._create_customer_list,
            "customer_lists/list": self._list_customer_lists,
            "customer_lists/get": self._get_customer_list,
            "customer_lists/update": self._update_customer_list,
            "audiences/create": self._create_audience,
            "audiences/list": self._list_audiences,
            "audiences/get": self._get_audience,
            "oauth/token": self._oauth_token,
        }

    @property
    def operation_ids(self) -> frozenset[str]:
        """The operations this class implements."""
        return frozenset(self._handlers)

    def handle(
        self, operation_id: str, params: Mapping[str, Any], body: Any, log: LogEntry
    ) -> ApiResult:
        """Run one validated request; fills ``log`` with write details."""
        return self._handlers[operation_id](params, body, log)

    # --- ad accounts --------------------------------------------------------------

    def _get_ad_account(self, params: Mapping[str, Any], body: Any, log: LogEntry) -> ApiResult:
        account_id = params["ad_account_id"]
        return ApiResult(
            {
                "id": account_id,
                "name": f"Emulator ad account {account_id}",
                "owner": {"id": "1000000000000000001", "username": "emulator"},
                "country": "US",
                "currency": "USD",
                "permissions": ["OWNER"],
                "created_time": self._created_time,
                "updated_time": self._created_time,
            }
        )

    # --- customer lists -------------------------------------------------------------

    def _records(self, raw: str, operation_type: str, log: LogEntry) -> list[str]:
        records = split_records(raw)
        log.operation_type = operation_type
        log.record_count = len(records)
        if not records:
            raise invalid("Invalid request: records must contain at least one record.")
        self._faults.check_records(records)
        return records

    def _create_customer_list(
        self, params: Mapping[str, Any], body: Any, log: LogEntry
    ) -> ApiResult:
        records = self._records(body["records"], "CREATE", log)
        return ApiResult(
            self._state.create_customer_list(
                params["ad_account_id"], body["name"], body.get("list_type", "EMAIL"), records
            )
        )

    def _update_customer_list(
        self, params: Mapping[str, Any], body: Any, log: LogEntry
    ) -> ApiResult:
        operation_type = body["operation_type"]
        # Look the list up before counting records against fault limits: a 404
        # for a missing list is what Pinterest would answer first.
        self._state.get_customer_list(params["ad_account_id"], params["customer_list_id"])
        records = self._records(body["records"], operation_type, log)
        return ApiResult(
            self._state.update_customer_list(
                params["ad_account_id"], params["customer_list_id"], operation_type, records
            )
        )

    def _get_customer_list(self, params: Mapping[str, Any], body: Any, log: LogEntry) -> ApiResult:
        return ApiResult(
            self._state.get_customer_list(params["ad_account_id"], params["customer_list_id"])
        )

    def _list_customer_lists(
        self, params: Mapping[str, Any], body: Any, log: LogEntry
    ) -> ApiResult:
        items, bookmark = self._state.list_customer_lists(
            params["ad_account_id"],
            page_size=params["page_size"],
            order=params.get("order", ASCENDING),
            bookmark=params.get("bookmark"),
        )
        return ApiResult({"items": items, "bookmark": bookmark})

    # --- audiences --------------------------------------------------------------------

    def _create_audience(self, params: Mapping[str, Any], body: Any, log: LogEntry) -> ApiResult:
        account_id = params["ad_account_id"]
        if body["audience_type"] != "CUSTOMER_LIST":
            raise invalid(
                f"Invalid ad account audience parameters: audience_type "
                f"{body['audience_type']} is not supported by the emulator (only CUSTOMER_LIST)."
            )
        if body.get("ad_account_id", account_id) != account_id:
            raise invalid("Invalid ad account audience parameters: ad_account_id does not match.")
        list_id = body["rule"].get("customer_list_id")
        if list_id is None:
            raise invalid(
                "Invalid ad account audience parameters: rule.customer_list_id is required "
                "for CUSTOMER_LIST audiences."
            )
        if not self._state.has_customer_list(account_id, list_id):
            raise invalid(
                f"Invalid ad account audience parameters: customer list {list_id} "
                f"does not exist in ad account {account_id}."
            )
        return ApiResult(
            self._state.create_audience(
                account_id,
                name=body["name"],
                audience_type=body["audience_type"],
                rule=body["rule"],
                description=body.get("description"),
            )
        )

    def _list_audiences(self, params: Mapping[str, Any], body: Any, log: LogEntry) -> ApiResult:
        if params.get("ownership_type", "OWNED") == "RECEIVED":
            return ApiResult({"items": [], "bookmark": None})
        items, bookmark = self._state.list_audiences(
            params["ad_account_id"],
            page_size=params["page_size"],
            order=params.get("order", ASCENDING),
            bookmark=params.get("bookmark"),
        )
        return ApiResult({"items": items, "bookmark": bookmark})

    def _get_audience(self, params: Mapping[str, Any], body: Any, log: LogEntry) -> ApiResult:
        return ApiResult(self._state.get_audience(params["ad_account_id"], params["audience_id"]))

    # --- OAuth ------------------------------------------------------------------------

    def _oauth_token(self, params: Mapping[str, Any], body: Any, log: LogEntry) -> ApiResult:
        grant_type = body["grant_type"]
        if grant_type != "refresh_token":
            raise invalid(
                f"Invalid request: grant_type {grant_type} is not supported by the emulator "
                "(only refresh_token)."
            )
        issued = self._tokens.refresh(body["refresh_token"])
        if issued is None:
            raise invalid("Invalid refresh token.")
        return ApiResult(
            {
                "access_token": issued.access_token,
                "token_type": "bearer",
                "expires_in": issued.expires_in,
                "scope": issued.scope,
                "response_type": "refresh_token",
                "refresh_token": issued.refresh_token,
                "refresh_token_expires_in": issued.refresh_token_expires_in,
                "refresh_token_expires_at": issued.refresh_token_expires_at,
            }
        )
