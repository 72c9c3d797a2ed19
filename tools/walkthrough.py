"""The walk-through, through a Python client generated from openapi.yaml by openapi-python-client.

``python walkthrough.py BASE_URL`` with the generated package ``msgapi_client`` importable
(``.ci/tools`` generates it). Exits non-zero, naming the step, at the first surprise.
"""

from __future__ import annotations

import sys
import uuid
from http import HTTPStatus

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

    # Page through this user's messages two at a time, following X-Next-Cursor (Link holds the same cursor).
    for n in range(4):
        create_message.sync(client=me, body=MessageRequest(content=f"page item {n}"))
    seen: list[int] = []
    cursor: str | None = ""
    pages = 0
    while cursor is not None:
        page = list_messages.sync_detailed(
            client=public, author=username, ordering=MessageOrdering.ID, limit=2, cursor=cursor
        )
        assert page.status_code == HTTPStatus.OK and isinstance(page.parsed, list), page
        seen += [item.id for item in page.parsed]
        cursor = page.headers.get("X-Next-Cursor")
        link = page.headers.get("Link")
        assert (cursor is None) == (link is None), (cursor, link)
        assert cursor is None or f"cursor={cursor}>" in link, (cursor, link)
        pages += 1
    assert pages == 3 and len(seen) == 5 and seen == sorted(seen) and seen[0] == message.id, (pages, seen)

    # Delete, then read it: a 404 parsed as a typed problem.
    assert delete_message.sync_detailed(message.id, client=me).status_code == HTTPStatus.NO_CONTENT
    missing = get_message.sync_detailed(message.id, client=public)
    assert missing.status_code == HTTPStatus.NOT_FOUND and isinstance(missing.parsed, Problem), missing
    assert missing.parsed.status == 404 and missing.headers["Content-Type"] == "application/problem+json"
    print(f"Python client walk-through: ok ({pages} pages, 404 is a {type(missing.parsed).__name__})")


if __name__ == "__main__":
    main(sys.argv[1])
