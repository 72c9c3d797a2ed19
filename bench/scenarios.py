"""What the benchmark sends, as data: each scenario's request and what its numbers are compared to."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

from bench.load import LIST_PAGE, Load

if TYPE_CHECKING:
    from bench.seeding import Seeded

@dataclasses.dataclass(frozen=True)
class Scenario:
    """One kind of request, sent by each client in a loop.

    ``path`` may hold ``{hot}`` (the one hot message's id) or ``{id}`` (a random seeded id per request).
    """

    name: str
    method: str
    path: str
    body: dict | None = None
    credentials: bool = False  # the body is the seeded account's username and password
    auth: bool = False  # sends the seeded account's access token
    ceiling: str | None = None  # the bare app's ceiling it is compared to: "item" (a) or "list" (a')
    db_ceiling: str | None = None  # the view statement's ceiling (b) for min(a, b): "hot" or "random" ids
    counts_views: bool = False  # every 200 counts a view: checked for lost views
    creates_rows: bool = False  # the rows it creates are deleted after it
    smoke: bool = False  # also run with --smoke


SCENARIOS = (
    Scenario("get_hot", "GET", "/api/messages/{hot}", ceiling="item", db_ceiling="hot", counts_views=True, smoke=True),
    Scenario("get_random", "GET", "/api/messages/{id}", ceiling="item", db_ceiling="random", counts_views=True),
    Scenario("list", "GET", LIST_PAGE, ceiling="list", smoke=True),
    Scenario("update", "PUT", "/api/messages/{id}", body={"content": "bench update"}, auth=True, ceiling="item"),
    Scenario(
        "create",
        "POST",
        "/api/messages",
        body={"content": "bench message"},
        auth=True,
        ceiling="item",
        creates_rows=True,
        smoke=True,
    ),
    Scenario("login", "POST", "/api/auth/token/", credentials=True, smoke=True),
)

# The bare app's ceilings (a) and (a'), by the key the scenarios name them with.
APP_CEILINGS = {
    "item": Scenario("ceiling-item", "GET", "/item"),
    "list": Scenario("ceiling-list", "GET", "/list"),
}
STORM_LOGIN = Scenario("storm-login", "POST", "/api/auth/token/", credentials=True)
STORM_READER = Scenario("storm-reader", "GET", "/api/messages/{hot}")
PROFILED = Scenario("profile-get_hot", "GET", "/api/messages/{hot}")
GROWTH_GET = Scenario("growth-get", "GET", "/api/messages/{id}")
GROWTH_LIST = Scenario("growth-list", "GET", LIST_PAGE)


def scenarios(smoke: bool) -> list[Scenario]:
    return [s for s in SCENARIOS if s.smoke or not smoke]


def build_load(
    scenario: Scenario,
    clients: int,
    duration: float,
    seeded: Seeded | None = None,
    ids: tuple[int, int] | None = None,
) -> Load:
    """The load generator's request for ``scenario``; ``ids`` overrides the seeded id range for ``{id}``."""
    path = scenario.path
    if "{hot}" in path:
        path = path.replace("{hot}", str(seeded.hot_id))
    body = scenario.body
    if scenario.credentials:
        body = {"username": seeded.username, "password": seeded.password}
    headers = []
    if body is not None:
        headers.append(("Content-Type", "application/json"))
    if scenario.auth:
        headers.append(("Authorization", f"Bearer {seeded.access}"))
    return Load(
        name=scenario.name,
        method=scenario.method,
        path=path,
        concurrency=clients,
        duration=duration,
        id_range=(ids or seeded.ids) if "{id}" in path else None,
        body=json.dumps(body).encode() if body is not None else None,
        headers=tuple(headers),
    )
