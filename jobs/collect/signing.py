"""Signing Planetary Computer asset hrefs with SAS tokens, under our own time limits.

`planetary_computer` fetches tokens with no timeout and ten retries of its own: offline it gave
up after 443 s, and an endpoint that never answered held it for good. Here a token request has a
connect and a read timeout and a few attempts within a deadline; when the service cannot be
reached the part fails in seconds with a line that says what to fix. The endpoint and the optional
subscription key are planetary_computer's own settings (PC_SDK_SAS_URL, PC_SDK_SUBSCRIPTION_KEY).
Hrefs are signed just before each read, not at search time, and a read refused with 403 is signed
again with a fresh token: tokens run out mid-run (PlanetaryComputer#388, #418, #463).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import pystac
import requests

from jobs.collect.outcomes import StopPart

TOKEN_TIMEOUT_S = (3.0, 5.0)  # connect, read: one request to the token service
TOKEN_DEADLINE_S = 15.0  # all attempts together
TOKEN_ATTEMPTS = 3
RENEW_BEFORE_S = 60.0  # a cached token with less left is renewed before use, as planetary_computer does
RESIGNS = 2  # fresh tokens for one read that storage refuses with 403
BLOB_DOMAIN = ".blob.core.windows.net"
SAS_QUERY = re.compile(r"\?[^\s'\"]*\bsig=[^\s'\"]*")

Read = TypeVar("Read")


class TokenServiceUnreachable(StopPart):
    """No token can be had: every location would fail the same way, so the part stops."""


@dataclass(frozen=True)
class Token:
    query: str
    expiry: datetime


def storage_container(href: str) -> tuple[str, str]:
    """(account, container) of a blob href: `https://ACCOUNT.blob.core.windows.net/CONTAINER/...`, or the
    path-style `http://HOST:PORT/ACCOUNT/CONTAINER/...` that Azure's storage emulator uses."""
    url = urlsplit(href)
    segments = url.path.lstrip("/").split("/")
    host = url.hostname or ""
    if host.endswith(BLOB_DOMAIN):
        return host.split(".", 1)[0], segments[0]
    if len(segments) < 3:
        raise ValueError(f"{redact(href)} names no storage account and container")
    return segments[0], segments[1]


def redact(text: str) -> str:
    """`text` with every SAS query replaced: tokens must not reach logs or chunk records."""
    return SAS_QUERY.sub("?<SAS token>", text)


def refused(error: BaseException) -> bool:
    """Whether storage answered 403 (GDAL's message, wherever stackstac wrapped it)."""
    while error is not None:
        if re.search(r"HTTP response code: 403\b", str(error)):
            return True
        error = error.__cause__ or error.__context__
    return False


class Signer:
    """Tokens per storage container, cached until a minute before they expire."""

    def __init__(self, sas_url: str, subscription_key: str | None = None) -> None:
        self.sas_url = sas_url.rstrip("/")
        self.headers = {"Ocp-Apim-Subscription-Key": subscription_key} if subscription_key else {}
        self.tokens: dict[tuple[str, str], Token] = {}
        self.failure: TokenServiceUnreachable | None = None
        self.lock = threading.Lock()
        self.session = requests.Session()

    @classmethod
    def from_settings(cls) -> Signer:
        from planetary_computer.settings import Settings

        settings = Settings.get()
        return cls(settings.sas_url, settings.subscription_key)

    def token(self, account: str, container: str) -> Token:
        with self.lock:
            if self.failure:
                raise self.failure
            cached = self.tokens.get((account, container))
            if cached and (cached.expiry - datetime.now(timezone.utc)).total_seconds() > RENEW_BEFORE_S:
                return cached
            try:
                fresh = self._fetch(f"{self.sas_url}/{account}/{container}")
            except TokenServiceUnreachable as failure:
                self.failure = failure
                raise
            self.tokens[(account, container)] = fresh
            return fresh

    def sign(self, href: str) -> str:
        return f"{href.split('?', 1)[0]}?{self.token(*storage_container(href)).query}"

    def sign_items(self, items: list[pystac.Item], assets: list[str]) -> list[pystac.Item]:
        """Copies of `items` whose `assets` carry a current token."""
        signed = []
        for item in items:
            copy = item.clone()
            for name in assets:
                copy.assets[name].href = self.sign(copy.assets[name].href)
            signed.append(copy)
        return signed

    def renew(self, items: list[pystac.Item], assets: list[str]) -> None:
        """Forget the tokens these signed items carry, so the next signing fetches new ones.

        Only a token still cached is dropped: reads refused at once by one expiry renew it once.
        """
        with self.lock:
            for item in items:
                for name in assets:
                    href = item.assets[name].href
                    key = storage_container(href)
                    cached = self.tokens.get(key)
                    if cached and cached.query == urlsplit(href).query:
                        del self.tokens[key]

    def _fetch(self, url: str) -> Token:
        started = time.monotonic()
        deadline = started + TOKEN_DEADLINE_S
        problem = "no attempt"
        for attempt in range(TOKEN_ATTEMPTS):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wait = 0.5 * 2**attempt
            try:
                response = self.session.get(
                    url, headers=self.headers, timeout=tuple(min(t, left) for t in TOKEN_TIMEOUT_S)
                )
            except requests.RequestException as error:
                problem = type(error).__name__
            else:
                if response.status_code == 200:
                    return _parse(url, response)
                if response.status_code not in (429, 500, 502, 503, 504):
                    raise TokenServiceUnreachable(_refused_message(url, response.status_code))
                problem = f"HTTP {response.status_code}"
                wait = _retry_after(response) or wait
            if attempt < TOKEN_ATTEMPTS - 1:
                time.sleep(max(min(wait, deadline - time.monotonic()), 0))
        raise TokenServiceUnreachable(
            f"no SAS token from {url} within {time.monotonic() - started:.0f} s ({problem}): the collect pods must "
            "reach Planetary Computer's token service; allow their egress to it, or set PC_SDK_SAS_URL to one "
            "they reach"
        )


def signed_read(
    signer: Signer, items: list[pystac.Item], assets: list[str], read: Callable[[list[pystac.Item]], Read]
) -> Read:
    """`read(signed items)`; a 403 (an expired or revoked token) is retried with fresh tokens, RESIGNS times."""
    for resign in range(RESIGNS + 1):
        signed = signer.sign_items(items, assets)
        try:
            return read(signed)
        except Exception as error:
            if resign == RESIGNS or not refused(error):
                raise
            signer.renew(signed, assets)
    raise AssertionError("unreachable")


def _parse(url: str, response: requests.Response) -> Token:
    try:
        body = response.json()
        query = body["token"]
        expiry = datetime.fromisoformat(body["msft:expiry"].replace("Z", "+00:00"))
        if not {"se", "sig"} <= parse_qs(query).keys():
            raise ValueError("token has no se and sig")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise TokenServiceUnreachable(
            f"{url} answered without a SAS token ({error}); set PC_SDK_SAS_URL to Planetary Computer's token endpoint"
        ) from None
    return Token(query, expiry if expiry.tzinfo else expiry.replace(tzinfo=timezone.utc))


def _refused_message(url: str, status: int) -> str:
    if status in (401, 403):
        return f"{url} refused a SAS token (HTTP {status}): check PC_SDK_SUBSCRIPTION_KEY"
    return f"{url} answered HTTP {status}: set PC_SDK_SAS_URL to Planetary Computer's token endpoint"


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None
