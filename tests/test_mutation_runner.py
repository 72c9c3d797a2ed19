"""The mutation runner puts each mutant into the imported code, default arguments included.

A default is evaluated once, when the ``def`` runs, and kept on the function object: a mutant
there that the runner did not apply would survive every test and read as an untested default.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msgapi.ratelimit import RateLimiter
from msgapi.store import listing

RUNNER_PATH = Path(__file__).resolve().parent.parent / "mutation" / "run.py"


def _load_runner():
    spec = importlib.util.spec_from_file_location("mutation_runner", RUNNER_PATH)
    runner = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = runner  # its dataclasses look their module up there
    spec.loader.exec_module(runner)
    return runner


runner = _load_runner()
SAMPLE_PATH = Path(__file__).resolve().parent / "mutation_sample.py"


def _load_sample():
    spec = importlib.util.spec_from_file_location("mutation_sample", SAMPLE_PATH)
    sample = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = sample  # the runner finds a target's module (and its file) there
    spec.loader.exec_module(sample)
    return sample


sample = _load_sample()


@pytest.fixture
def restored() -> Iterator[None]:
    """The functions these tests mutate get their own code and defaults back afterwards."""
    functions = [RateLimiter.__init__, listing.page, sample.page, sample.keep_for, sample.Limiter.__init__]
    saved = [(f, f.__code__, f.__defaults__, f.__kwdefaults__) for f in functions]
    yield
    for function, code, defaults, kwdefaults in saved:
        function.__code__ = code
        function.__defaults__ = defaults
        function.__kwdefaults__ = kwdefaults


def apply(module: str, name: str, key_end: str) -> None:
    [mutant] = [m for m in runner.discover([runner.Target(module, (name,), ())]) if m.key.endswith(f" | {key_end}")]
    runner.apply(mutant)


def defaults(function) -> dict[str, object]:
    return {p.name: p.default for p in inspect.signature(function).parameters.values() if p.default is not p.empty}


def test_a_methods_positional_default_is_mutated_and_the_others_stay_the_same(restored) -> None:
    apply("msgapi.ratelimit", "RateLimiter", "RateLimiter.__init__ | 64 -> 65")

    assert defaults(RateLimiter.__init__) == {"ipv6_prefix": 65, "clock": time.time}
    assert RateLimiter(None, None).address_bucket("login", "2001:db8::1") == "login:ip:2001:db8::/65"


def test_a_keyword_only_default_is_mutated_and_the_others_stay_the_same(restored) -> None:
    apply("mutation_sample", "page", "page | 500 -> 501")

    assert defaults(sample.page) == {"time_limit_ms": 501, "ordering": "-id"}
    assert sample.page(limit=5) == (5, 501, "-id")


def test_a_default_expression_is_evaluated_again(restored) -> None:
    apply("mutation_sample", "keep_for", "keep_for | 24 * 3600 -> 24 / 3600")

    assert defaults(sample.keep_for) == {"seconds": 24 / 3600}


def test_a_boolean_default_of_a_method_is_mutated(restored) -> None:
    apply("mutation_sample", "Limiter", "Limiter.__init__ | False -> True")

    assert defaults(sample.Limiter.__init__) == {"prefix": 64, "strict": True}
    assert sample.Limiter(10).strict is True


def test_a_mutant_in_the_body_leaves_the_defaults_as_they_were(restored) -> None:
    code, before = listing.page.__code__, dict(listing.page.__kwdefaults__)

    apply("msgapi.store.listing", "page", "page | if isinstance(after_value, datetime.datetime): ... -> if False: ...")

    assert listing.page.__code__ is not code
    assert listing.page.__kwdefaults__ == before
