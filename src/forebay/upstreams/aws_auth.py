"""How a Bedrock request proves who sends it: a Bedrock API key (a bearer
token), or a SigV4 signature made by botocore from AWS credentials.

Credentials come from the deployment's own keys, its profile, or botocore's
standard chain (environment, AWS_PROFILE, the shared files, SSO, the instance
or task role). Finding them may read files or call a metadata endpoint, so it
runs in a thread, once, on the first request; refreshable credentials (roles,
SSO) are refreshed in a thread too, ahead of their expiry, as botocore
advises. A request on the event loop only signs: a few HMACs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import botocore.session  # type: ignore[import-untyped]
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials, RefreshableCredentials  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]

from forebay.config.settings import AwsSettings
from forebay.errors import UpstreamFailure

SERVICE = "bedrock"
BEARER_ENV = "AWS_BEARER_TOKEN_BEDROCK"


class AwsAuth:
    def __init__(self, aws: AwsSettings, *, api_key: str | None = None) -> None:
        self.region = aws.region
        self._aws = aws
        # A configured API key wins; the environment's only when no keys or
        # profile were configured (explicit configuration beats ambient).
        explicit = aws.access_key_id or aws.profile
        self._bearer = api_key or (None if explicit else os.environ.get(BEARER_ENV) or None)
        self._source: Any = None  # botocore Credentials, once found
        self._frozen: Any = None  # their ReadOnlyCredentials snapshot
        self._lock = asyncio.Lock()

    @property
    def mode(self) -> str:
        return "api key" if self._bearer else "sigv4"

    async def headers(
        self, method: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> dict[str, str]:
        """`headers` plus those that authenticate this exact request."""
        if self._bearer:
            return {**headers, "authorization": f"Bearer {self._bearer}"}
        creds = await self._credentials()
        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
        SigV4Auth(creds, SERVICE, self.region).add_auth(request)
        return dict(request.headers.items())

    def forget(self) -> None:
        """AWS said the credentials are expired or wrong: find them again next time."""
        self._source = None
        self._frozen = None

    async def _credentials(self) -> Any:
        if self._frozen is None or self._stale():
            async with self._lock:
                if self._frozen is None or self._stale():
                    self._frozen = await asyncio.to_thread(self._load)
        return self._frozen

    def _stale(self) -> bool:
        source = self._source
        return isinstance(source, RefreshableCredentials) and bool(source.refresh_needed())

    def _load(self) -> Any:
        """Blocking: find (or refresh) the credentials. Runs in a thread."""
        try:
            if self._source is None:
                self._source = self._find()
            return self._source.get_frozen_credentials()
        except BotoCoreError as exc:
            raise _no_credentials(
                f"AWS credentials could not be loaded ({type(exc).__name__})"
            ) from None

    def _find(self) -> Any:
        aws = self._aws
        if aws.access_key_id and aws.secret_access_key:
            return Credentials(aws.access_key_id, aws.secret_access_key, aws.session_token)
        session = (
            botocore.session.Session(profile=aws.profile)
            if aws.profile
            else botocore.session.Session()
        )
        found = session.get_credentials()
        if found is None:
            raise _no_credentials(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
                "AWS_PROFILE, give the deployment aws.profile or keys, or a Bedrock api_key"
            )
        return found


def _no_credentials(detail: str) -> UpstreamFailure:
    """Like a refused key: the deployment's fault, never the request's."""
    body = b'{"message": "Forebay has no usable AWS credentials for this deployment"}'
    return UpstreamFailure("status", detail, status=401, body=body)
