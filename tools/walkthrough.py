"""The walk-through, through a Python client generated from openapi.yaml by openapi-python-client.

``python walkthrough.py BASE_URL`` with the generated package ``msgapi_client`` importable
(``.ci/tools`` generates it). Exits non-zero, naming the step, at the first surprise.
"""

from __future__ import annotations

import re
import sys
import uuid
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

from msgapi_client import AuthenticatedClient, Client
from msgapi_client.api.auth import obtain_token_pair, register_user
from msgapi_client.api.messages import (
    create_message,
    delete_message,
    get_message,
    list_messages,
    replace_message,
    update_message,
)
from msgapi_client.models import (
    Message,
    MessageOrdering,
    MessageRequest,
    Problem,
    RegisterRequest,
    TokenObtainRequest,
    TokenPair,
    UpdateMessageDataBody,
    User,
)
from msgapi_client.types import UNSET

NEXT_LINK = re.compile(r'^<([^>]+)>; rel="next"$')


def list_pages(client: Client, query: dict[str, str], follow: str) -> list[list[int]]:
    """The message ids of every page from ``query`` on, each next page found through the ``follow`` header."""
    pages = []
    while True:
        page = list_messages.sync_detailed(
            client=client,
            author=query["author"],
            ordering=MessageOrdering(query["ordering"]),
            limit=int(query["limit"]),
            cursor=query.get("cursor", UNSET),
        )
        assert page.status_code == HTTPStatus.OK and isinstance(page.parsed, list), page
        pages.append([item.id for item in page.parsed])
        link, cursor = page.headers.get("Link"), page.headers.get("X-Next-Cursor")
        assert (link is None) == (cursor is None), (link, cursor)
        if link is None:
            return pages
        next_url = NEXT_LINK.match(link)
        assert next_url, link
        next_query = dict(parse_qsl(urlsplit(next_url[1]).query, keep_blank_values=True))
        # Link's URL is this query with the cursor X-Next-Cursor holds.
        assert next_query == {**query, "cursor": cursor}, (next_query, query, cursor)
        query = next_query if follow == "Link" else {**query, "cursor": cursor}


def main(base_url: str) -> None:
    public = Client(base_url=base_url, raise_on_unexpected_status=True)
    username = f"py-{uuid.uuid4().hex[:12]}"
    password = "generated-client-9"

    # Register, then log in: typed models in, typed models out.
    created = register_user.sync_detailed(client=public, body=RegisterRequest(username=username, password=password))
    assert created.status_code == HTTPStatus.CREATED and isinstance(created.parsed, User), created
    assert created.parsed.username == username
    tokens = obtain_token_pair.sync(client=public, body=TokenObtainRequest(username=username, password=password))
    assert isinstance(tokens, TokenPair), tokens
    me = AuthenticatedClient(base_url=base_url, token=tokens.access, raise_on_unexpected_status=True)

    # Create, then read twice: each read counts a view and shows it.
    response = create_message.sync_detailed(client=me, body=MessageRequest(content="from the Python client"))
    assert response.status_code == HTTPStatus.CREATED and isinstance(response.parsed, Message), response
    message = response.parsed
    assert response.headers["Location"] == f"/api/messages/{message.id}"
    assert message.author == username and message.views == 0
    views = [get_message.sync(message.id, client=public).views for _ in range(2)]
    assert views == [1, 2], views

    # PUT replaces the content and resets the views; PATCH here sends a form body, as old clients do.
    replaced = replace_message.sync(message.id, client=me, body=MessageRequest(content="replaced"))
    assert isinstance(replaced, Message) and (replaced.content, replaced.views) == ("replaced", 0), replaced
    assert get_message.sync(message.id, client=public).views == 1
    patched = update_message.sync(message.id, client=me, body=UpdateMessageDataBody(content="patched by form"))
    assert isinstance(patched, Message) and (patched.content, patched.views) == ("patched by form", 0), patched

    # Page through this user's messages two at a time, once following Link (its URL's query, sent
    # through the typed call) and once following X-Next-Cursor: both must visit the same pages.
    for n in range(4):
        create_message.sync(client=me, body=MessageRequest(content=f"page item {n}"))
    first = {"author": username, "ordering": "id", "limit": "2"}
    by_link, by_cursor = list_pages(public, first, follow="Link"), list_pages(public, first, follow="X-Next-Cursor")
    assert by_link == by_cursor, (by_link, by_cursor)
    seen = [item for page in by_link for item in page]
    assert len(by_link) == 3 and len(seen) == 5 and seen == sorted(seen) and seen[0] == message.id, by_link

    # Delete, then read it: a 404 parsed as a typed problem.
    assert delete_message.sync_detailed(message.id, client=me).status_code == HTTPStatus.NO_CONTENT
    missing = get_message.sync_detailed(message.id, client=public)
    assert missing.status_code == HTTPStatus.NOT_FOUND and isinstance(missing.parsed, Problem), missing
    assert missing.parsed.status == 404 and missing.headers["Content-Type"] == "application/problem+json"
    print(f"Python client walk-through: ok ({len(by_link)} pages, 404 is a {type(missing.parsed).__name__})")


if __name__ == "__main__":
    main(sys.argv[1])
