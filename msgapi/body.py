"""Reading request bodies (JSON or form-encoded) and validating their fields.

Every problem with a body is a value the client can act on: 415 for a content
type we do not read, 400 for a body we cannot parse, 400 with ``errors`` for
fields that are missing or wrong. Field messages follow DRF's wording, which
clients of the old service already show to their users.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import falcon

from .errors import ValidationFailed

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 50

REQUIRED = "This field is required."
BLANK = "This field may not be blank."
NOT_A_STRING = "Not a valid string."
NUL = "Null characters are not allowed."
NULL = "This field may not be null."
BAD_UNICODE = "Must be valid Unicode text (no lone surrogates)."


def _malformed(detail: str) -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(title="Malformed request body", description=detail)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # Which one wins differs between parsers; refusing is the only unambiguous answer.
            raise _malformed(f"Duplicate key {key!r} in JSON object.")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise _malformed(f"{name} is not valid JSON.")


# Built once: json.loads with options builds a new decoder on every call.
_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        document = _DECODER.decode(text)
    except falcon.HTTPError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _malformed("The body is not valid UTF-8 JSON.") from None
    if not isinstance(document, dict):
        raise _malformed("The JSON body must be an object.")
    return document


def _parse_form(raw: bytes) -> dict[str, Any]:
    try:
        pairs = parse_qsl(
            raw.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise _malformed("The form body is not valid URL-encoded UTF-8.") from None
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _malformed(f"Field {key!r} appears more than once.")
        result[key] = value
    return result


def read_body(req: falcon.Request) -> dict[str, Any]:
    """The request body as a dict of fields; an absent body is an empty dict.

    The size was already checked against ``Content-Length`` by the middleware;
    reading through ``bounded_stream`` never reads past the declared length.
    """
    raw = req.bounded_stream.read()
    media_type = (req.content_type or "").split(";", 1)[0].strip().lower()
    if not raw.strip():
        # No body at all: the missing fields are reported one by one, as DRF did.
        return {}
    if media_type == JSON or (media_type.startswith("application/") and media_type.endswith("+json")):
        return _parse_json(raw)
    if media_type == FORM:
        return _parse_form(raw)
    raise falcon.HTTPUnsupportedMediaType(
        title="Unsupported media type",
        description=f"Send the body as {JSON} or {FORM}.",
    )


class FieldErrors:
    """Collects field errors while a body is checked; ``raise_if_any`` turns them into a 400."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, []).append(message)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)

    def string(
        self,
        body: dict[str, Any],
        field: str,
        *,
        required: bool = True,
        strip: bool = False,
        allow_blank: bool = False,
        max_length: int | None = None,
        min_length: int | None = None,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        """The field's value if it is a valid string, else None with the reason recorded.

        Lengths count Unicode code points, so 160 emoji fit in 160 characters.
        """
        if field not in body:
            if required:
                self.add(field, REQUIRED)
            return None
        value = body[field]
        if value is None:
            if required:
                self.add(field, NULL)
            return None
        if not isinstance(value, str):
            self.add(field, NOT_A_STRING)
            return None
        if "\x00" in value:
            self.add(field, NUL)
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.add(field, BAD_UNICODE)
            return None
        if strip:
            value = value.strip()
        if not value:
            if allow_blank:
                return value
            self.add(field, BLANK)
            return None
        if max_length is not None and len(value) > max_length:
            self.add(field, f"Ensure this field has no more than {max_length} characters.")
            return None
        if min_length is not None and len(value) < min_length:
            self.add(field, f"Ensure this field has at least {min_length} characters.")
            return None
        if check is not None:
            problem = check(value)
            if problem:
                self.add(field, problem)
                return None
        return value
