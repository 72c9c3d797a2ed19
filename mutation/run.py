"""Mutation testing for the code where a silent bug is a security or data-loss bug.

    python mutation/run.py                  # every mutant; exit 1 on a survivor not listed
    python mutation/run.py --sample 12      # a random sample (CI); the seed is printed to rerun it
    python mutation/run.py --list           # the mutants, without running anything

Each mutant is one small change to one function (a comparison flipped or moved off by
one, ``and``/``or`` and ``&``/``|`` swapped, a ``not`` dropped, arithmetic swapped, a
constant changed, a check's condition made ``False``, a call statement or ``raise``
removed, a return value replaced by ``None``). One pytest session per set of tests
collects and imports everything once; each mutant then runs in a forked child of it,
where the function is given the code compiled from the changed syntax tree (a changed
default argument is evaluated again into the function's defaults, a module-level
assignment is run again, changed), and the tests run until the first failure.
In-process tests only: a live server would import the unchanged code from disk.

A mutant is named by file, function and the changed code, never by line number, so the
names survive edits elsewhere. Survivors that are equivalent to the original, or accepted
for a stated reason, are listed in ``mutation/survivors.txt``; any other survivor fails
the run. The tests run on SQLite, and on PostgreSQL too when ``MSGAPI_TEST_DATABASE_URL``
is set; the survivors list is for the SQLite run.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import functools
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import CodeType, ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SURVIVORS = Path(__file__).resolve().parent / "survivors.txt"
TIMEOUT_SECONDS = 300

TOKENS_TESTS = [
    "tests/test_passwords_tokens.py",
    "tests/test_jwt_forgery.py",
    "tests/test_accounts_and_tokens.py",
    "tests/test_token_boundaries.py",
]
AUTH_TESTS = ["tests/test_auth.py", "tests/test_jwt_forgery.py", "tests/test_accounts_and_tokens.py"]
MESSAGE_TESTS = ["tests/test_messages.py", "tests/test_ownership_and_listing.py"]


@dataclasses.dataclass(frozen=True)
class Target:
    module: str  # dotted name, e.g. msgapi.tokens
    names: tuple[str, ...]  # functions, Class.method, whole classes, or module-level assignments
    tests: tuple[str, ...]  # the test files that exercise them, most direct first


TARGETS = [
    Target("msgapi.tokens", ("TokenService",), tuple(TOKENS_TESTS)),
    Target(
        "msgapi.passwords",
        (
            "_digest",
            "make_password",
            "_split",
            "verify_password",
            "check_password",
            "needs_rehash",
            "DummyHasher",
            "HashingGate",
        ),
        (
            "tests/test_passwords_tokens.py",
            "tests/test_auth.py",
            "tests/test_headers.py",
            "tests/test_scheduling.py",
            "tests/test_hashing_admission.py",
        ),
    ),
    Target(
        "msgapi.middleware",
        ("BodyLimit", "BearerAuth"),
        ("tests/test_auth.py", "tests/test_jwt_forgery.py", "tests/test_hostile_input.py"),
    ),
    Target("msgapi.ratelimit", ("RateLimiter",), ("tests/test_rate_limit.py",)),
    Target(
        "msgapi.store.limits",
        ("count_hit", "uncount_hit", "hits_in_windows", "prune_hits"),
        ("tests/test_rate_limit.py", "tests/test_write_rate_limit.py"),
    ),
    Target(
        "msgapi.store.revocations",
        ("_prune", "revoke_token", "revoke_family", "is_token_revoked"),
        ("tests/test_accounts_and_tokens.py",),
    ),
    Target("msgapi.store.users", ("for_token",), tuple(AUTH_TESTS)),
    Target("msgapi.store.revocations", ("login_not_revoked",), tuple(AUTH_TESTS)),
    Target(
        "msgapi.store.messages",
        (
            "_GET_MESSAGE",
            "_COUNT_VIEW",
            "_CREATE_MESSAGE",
            "_REPLACE_CONTENT",
            "_REPLACE_CONTENT_IF",
            "_DELETE_MESSAGE",
            "_DELETE_MESSAGE_IF",
            "get",
            "count_view",
            "create",
            "replace_content",
            "delete",
            "find_write_target",
        ),
        (
            *MESSAGE_TESTS,
            "tests/test_conditional_writes.py",
            "tests/test_jwt_forgery.py",
            "tests/test_view_batching.py",
        ),
    ),
    Target("msgapi.store.listing", ("page", "_list_query"), tuple(MESSAGE_TESTS)),
    Target(
        "msgapi.resources.messages",
        ("MessageCollection", "MessageItem"),
        (
            *MESSAGE_TESTS,
            "tests/test_conditional_writes.py",
            "tests/test_idempotent_creates.py",
            "tests/test_write_rate_limit.py",
        ),
    ),
    Target(
        "msgapi.resources.auth",
        ("_verified_claims", "TokenObtain", "TokenRefresh", "TokenVerify", "TokenBlacklist"),
        ("tests/test_auth.py", "tests/test_accounts_and_tokens.py", "tests/test_rate_limit.py"),
    ),
]

# Comparisons: the boundary (< to <=) and the negation (< to >=).
_COMPARE_SWAPS: dict[type, tuple[type, ...]] = {
    ast.Lt: (ast.LtE, ast.GtE),
    ast.LtE: (ast.Lt, ast.Gt),
    ast.Gt: (ast.GtE, ast.LtE),
    ast.GtE: (ast.Gt, ast.Lt),
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
    ast.In: (ast.NotIn,),
    ast.NotIn: (ast.In,),
    ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,),
}
# & and | are peewee's AND and OR in query conditions.
_BINOP_SWAPS: dict[type, type] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
}


@dataclasses.dataclass(frozen=True)
class Mutant:
    path: str  # relative to the project root
    module: str
    function: str
    description: str  # "<original code> -> <mutated code>", plus " #n" for the n-th identical one
    tests: tuple[str, ...]
    node_index: int  # position in the walk of the target's syntax tree
    variant: int

    @property
    def key(self) -> str:
        return f"{self.path} | {self.function} | {self.description}"


def _source_path(module: str) -> Path:
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__file__", None):
        return Path(loaded.__file__)  # imported from its own file (the runner's test samples)
    return ROOT / (module.replace(".", "/") + ".py")


@functools.cache
def _source(module: str) -> str:
    """The module's source as the run found it (read once: an edit during a run changes nothing)."""
    return _source_path(module).read_text(encoding="utf-8")


def _target_nodes(tree: ast.Module, name: str) -> list[tuple[str, ast.AST]]:
    """(qualified name, node) of every function (or assignment) ``name`` covers."""
    found: list[tuple[str, ast.AST]] = []
    head, _, rest = name.partition(".")
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == head:
            if isinstance(node, ast.FunctionDef):
                found.append((node.name, node))
            else:
                for member in node.body:
                    if isinstance(member, ast.FunctionDef) and (not rest or member.name == rest):
                        found.append((f"{node.name}.{member.name}", member))
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == head for t in node.targets):
            found.append((head, node.value))
    if not found:
        raise SystemExit(f"mutation target {name!r} not found: update TARGETS in {Path(__file__).name}")
    return found


def _is_docstring(node: ast.AST, parent: ast.AST | None) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        and isinstance(parent, ast.FunctionDef)
        and parent.body[0] is node
    )


def _walk(root: ast.AST) -> Iterator[tuple[ast.AST, ast.AST | None]]:
    """Every node under ``root`` with its parent, in a fixed order."""
    stack: list[tuple[ast.AST, ast.AST | None]] = [(root, None)]
    while stack:
        node, parent = stack.pop(0)
        yield node, parent
        stack[0:0] = [(child, node) for child in _children(node)]


def _children(node: ast.AST) -> Iterator[ast.AST]:
    """Child nodes, leaving out type annotations (they do nothing at run time)."""
    for field, value in ast.iter_fields(node):
        if field in ("annotation", "returns"):
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, ast.AST):
                yield item


def _variants(node: ast.AST, parent: ast.AST | None) -> list[ast.AST]:
    """The replacements for this node, one per mutant of it."""
    out: list[ast.AST] = []
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for swap in _COMPARE_SWAPS.get(type(op), ()):
                changed = copy.deepcopy(node)
                changed.ops[i] = swap()
                out.append(changed)
    elif isinstance(node, ast.BoolOp):
        changed = copy.deepcopy(node)
        changed.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        out.append(changed)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        out.append(node.operand)
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAPS:
        changed = copy.deepcopy(node)
        changed.op = _BINOP_SWAPS[type(node.op)]()
        out.append(changed)
    elif isinstance(node, ast.Constant) and not isinstance(parent, ast.Expr):
        if isinstance(node.value, bool):
            out.append(ast.Constant(not node.value))
        elif isinstance(node.value, int):
            out.append(ast.Constant(node.value + 1))
    elif isinstance(node, ast.If):
        out.append(ast.If(test=ast.Constant(False), body=node.body, orelse=node.orelse))
    elif isinstance(node, ast.Raise) or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
        out.append(ast.Pass())
    elif isinstance(node, ast.Return) and not (
        node.value is None or (isinstance(node.value, ast.Constant) and node.value.value is None)
    ):
        out.append(ast.Return(value=ast.Constant(None)))
    return [ast.copy_location(replacement, node) for replacement in out]


def _short(text: str) -> str:
    """One line: an ``if`` is named by its test, long code is cut."""
    first = text.splitlines()[0] if text else text
    if text.startswith("if ") and "\n" in text:
        first += " ..."
    return first if len(first) <= 160 else first[:157] + "..."


def discover(targets: list[Target] = TARGETS) -> list[Mutant]:
    mutants: list[Mutant] = []
    for target in targets:
        path = _source_path(target.module)
        tree = ast.parse(_source(target.module))
        for name in target.names:
            for qualname, root in _target_nodes(tree, name):
                seen: dict[str, int] = {}
                for index, (node, parent) in enumerate(_walk(root)):
                    if _is_docstring(node, parent):
                        continue
                    for variant_no, replacement in enumerate(_variants(node, parent)):
                        description = f"{_short(ast.unparse(node))} -> {_short(ast.unparse(replacement))}"
                        seen[description] = seen.get(description, 0) + 1
                        if seen[description] > 1:
                            description += f" #{seen[description]}"
                        mutants.append(
                            Mutant(
                                str(path.relative_to(ROOT)),
                                target.module,
                                qualname,
                                description,
                                target.tests,
                                index,
                                variant_no,
                            )
                        )
    return mutants


def _target_node(tree: ast.Module, qualname: str) -> ast.AST:
    [root] = [node for name, node in _target_nodes(tree, qualname.split(".")[0]) if name == qualname]
    return root


def _mutated_tree(mutant: Mutant) -> ast.Module:
    tree = ast.parse(_source(mutant.module))
    root = _target_node(tree, mutant.function)
    for index, (node, parent) in enumerate(_walk(root)):
        if index != mutant.node_index:
            continue
        replacement = _variants(node, parent)[mutant.variant]
        _replace(parent if parent is not None else tree, node, replacement, tree, root)
        return ast.fix_missing_locations(tree)
    raise AssertionError(f"node of {mutant.key} not found")


def _replace(parent: ast.AST, old: ast.AST, new: ast.AST, tree: ast.Module, root: ast.AST) -> None:
    if old is root:  # a module-level assignment's value
        for node in tree.body:
            if isinstance(node, ast.Assign) and node.value is old:
                node.value = new
                return
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new
                    return
    raise AssertionError("parent does not hold the node")


def _owner(module: ModuleType, qualname: str) -> object:
    """The module, or the class, whose namespace holds ``qualname``."""
    owner: object = module
    for part in qualname.split(".")[:-1]:
        owner = getattr(owner, part)
    return owner


def _live_function(module: ModuleType, qualname: str):
    """The function object behind ``qualname`` (a method, classmethod, staticmethod or property getter)."""
    value = vars(_owner(module, qualname))[qualname.split(".")[-1]]
    if isinstance(value, (classmethod, staticmethod)):
        return value.__func__
    if isinstance(value, property):
        return value.fget
    return value


def _find_code(code: CodeType, qualname: str) -> CodeType | None:
    for const in code.co_consts:
        if isinstance(const, CodeType):
            if const.co_qualname == qualname:
                return const
            found = _find_code(const, qualname)
            if found is not None:
                return found
    return None


def apply(mutant: Mutant) -> None:
    """Put the mutant into the imported module: a function gets the mutated code (so every
    reference to it runs the change), a module-level assignment is run again, mutated."""
    module = sys.modules[mutant.module]
    path = str(_source_path(mutant.module))
    tree = _mutated_tree(mutant)
    assigned = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == mutant.function for t in node.targets)
    ]
    if assigned:
        exec(compile(ast.Module(body=assigned, type_ignores=[]), path, "exec"), module.__dict__)
        return
    function = _live_function(module, mutant.function)
    code = _find_code(compile(tree, path, "exec"), mutant.function)
    assert code is not None and code.co_freevars == function.__code__.co_freevars, mutant.key
    function.__code__ = code
    owner = _owner(module, mutant.function)

    def evaluate(expression: ast.expr) -> object:
        # Where the ``def`` ran: a method's defaults also see the class body's names.
        compiled = compile(ast.fix_missing_locations(ast.Expression(expression)), path, "eval")
        return eval(compiled, module.__dict__, None if owner is module else vars(owner))

    original = _target_node(ast.parse(_source(mutant.module)), mutant.function)
    _apply_defaults(function, original.args, _target_node(tree, mutant.function).args, evaluate)


def _apply_defaults(function, original: ast.arguments, mutated: ast.arguments, evaluate) -> None:
    """Defaults are evaluated once, when the ``def`` runs, and kept on the function object, not in
    its code: a changed one is evaluated again and put there (the others stay the same objects)."""
    positional = list(function.__defaults__ or ())
    for index, (old, new) in enumerate(zip(original.defaults, mutated.defaults, strict=True)):
        if ast.dump(old) != ast.dump(new):
            positional[index] = evaluate(new)
    keyword = dict(function.__kwdefaults__ or {})
    for arg, old, new in zip(mutated.kwonlyargs, original.kw_defaults, mutated.kw_defaults, strict=True):
        if new is not None and ast.dump(old) != ast.dump(new):
            keyword[arg.arg] = evaluate(new)
    function.__defaults__ = tuple(positional) or None
    function.__kwdefaults__ = keyword or None


class MutantLoop:
    """pytest plugin: instead of running the tests once, run them once per mutant, each in a
    forked child of this session (collected and imported once), stopping at the first failure."""

    SERVER_FIXTURES = frozenset({"live_server", "live_server_on"})

    def __init__(self, mutants: list[Mutant], jobs: int, results: dict[str, str], tick, workdir: str) -> None:
        self.mutants = mutants
        self.jobs = jobs
        self.results = results
        self.tick = tick
        self.workdir = workdir
        self.failed: str | None = None  # in a child: the first failing test
        self.killers: list[str] = []  # tests that killed a mutant, most recent first: they run first

    def pytest_runtest_logreport(self, report) -> None:
        if report.failed and self.failed is None:
            self.failed = report.nodeid

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session) -> bool:
        # A live server would import the unchanged code from disk: in-process tests only.
        items = [item for item in session.items if not self.SERVER_FIXTURES & set(item.fixturenames)]
        if session.testsfailed or not items:
            pytest.exit("collection failed or found no tests", returncode=2)
        _, status = os.waitpid(self._fork(items, None), 0)
        if os.waitstatus_to_exitcode(status) != 0:
            pytest.exit("the unchanged code fails these tests: fix that first", returncode=2)
        queue = list(self.mutants)
        running: dict[int, tuple[Mutant, float]] = {}
        while queue or running:
            while queue and len(running) < self.jobs:
                mutant = queue.pop(0)
                running[self._fork(self._killers_first(items), mutant)] = (mutant, time.monotonic())
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                for child, (_, began) in running.items():
                    if time.monotonic() - began > TIMEOUT_SECONDS:
                        os.kill(child, signal.SIGKILL)  # a hang is caught, as a failure would be
                time.sleep(0.02)
                continue
            mutant, _ = running.pop(pid)
            survived = os.waitstatus_to_exitcode(status) == 0
            self.results[mutant.key] = "survived" if survived else "killed"
            killer = Path(self.workdir, str(pid))
            nodeid = None
            if killer.exists():
                nodeid = killer.read_text(encoding="utf-8")
                killer.unlink()
                self.killers = [nodeid, *[k for k in self.killers if k != nodeid][:50]]
            self.tick(mutant, survived, nodeid)
        return True

    def _killers_first(self, items: list) -> list:
        rank = {nodeid: n for n, nodeid in enumerate(self.killers)}
        return sorted(items, key=lambda item: rank.get(item.nodeid, len(rank)))

    def _fork(self, items: list, mutant: Mutant | None) -> int:
        pid = os.fork()
        if pid:
            return pid
        status = 1
        try:
            config = items[0].config
            config.pluginmanager.unregister(name="terminalreporter")
            # A temporary directory of its own: pytest empties a given --basetemp when first used,
            # which would delete the files of the child running beside this one.
            factory = config._tmp_path_factory
            assert hasattr(factory, "_given_basetemp") and hasattr(factory, "_basetemp"), "pytest changed"
            factory._given_basetemp = Path(tempfile.mkdtemp(dir=self.workdir))
            factory._basetemp = None
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            if mutant is not None:
                apply(mutant)
            for index, item in enumerate(items):
                following = items[index + 1] if index + 1 < len(items) else None
                item.ihook.pytest_runtest_protocol(item=item, nextitem=following)
                if self.failed:
                    break
            if self.failed:
                Path(self.workdir, str(os.getpid())).write_text(self.failed, encoding="utf-8")
                # Stopped early: tear down what is still set up (a PostgreSQL database).
                items[0].session._setupstate.teardown_exact(None)
            status = 1 if self.failed else 0
        finally:
            os._exit(status)


def read_survivors() -> dict[str, str]:
    """``key -> reason`` from survivors.txt: ``path | function | mutation | reason`` per line."""
    listed: dict[str, str] = {}
    for raw in SURVIVORS.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        path, function, description, reason = (part.strip() for part in line.rsplit(" | ", 3))
        listed[f"{path} | {function} | {description}"] = reason
    return listed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, help="run this many mutants, drawn at random")
    parser.add_argument("--seed", type=int, help="the sample's seed (printed; give it to rerun a sample)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument(
        "--match", action="append", help="only mutants whose name contains this text (repeat: any of them)"
    )
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--verbose", action="store_true", help="name each mutant and the test that killed it")
    args = parser.parse_args(argv)

    mutants = discover()
    if args.match:
        mutants = [m for m in mutants if any(text in m.key for text in args.match)]
    keys = [m.key for m in mutants]
    assert len(set(keys)) == len(keys), "two mutants share a name"
    listed = read_survivors()
    stale = sorted(set(listed) - set(keys)) if not args.match else []
    if args.list:
        for mutant in mutants:
            print(mutant.key)
        return 0
    if args.sample is not None and args.sample < len(mutants):
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
        print(f"sample of {args.sample} of {len(mutants)} mutants, seed {seed}")
        mutants = random.Random(seed).sample(mutants, args.sample)

    started = time.monotonic()
    results: dict[str, str] = {}

    def tick(mutant: Mutant, survived: bool, killer: str | None) -> None:
        if args.verbose:
            print(f"{'SURVIVED' if survived else 'killed by ' + str(killer)}: {mutant.key}", flush=True)
        else:
            print("S" if survived else ".", end="", flush=True)

    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))  # as `python -m pytest` from the project root has it
    # Test databases in memory where there is a tmpfs: every test writes a fresh SQLite file.
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="msgapi-mutation-", dir=scratch) as workdir:
        for tests in sorted({m.tests for m in mutants}):
            group = [m for m in mutants if m.tests == tests]
            print(f"{len(group)} mutants against {' '.join(tests)}")
            loop = MutantLoop(group, args.jobs, results, tick, workdir)
            basetemp = tempfile.mkdtemp(dir=workdir)
            options = ["-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts=", f"--basetemp={basetemp}"]
            pytest.main([*options, *tests], plugins=[loop])
            print()
    missing = [m.key for m in mutants if m.key not in results]
    if missing:
        print(f"{len(missing)} mutants did not run (see above)", file=sys.stderr)
        return 2

    survivors = sorted(key for key, outcome in results.items() if outcome == "survived")
    unlisted = [key for key in survivors if key not in listed]
    now_killed = sorted(key for key, outcome in results.items() if outcome == "killed" and key in listed)
    accepted = len(survivors) - len(unlisted)
    scored = len(results) - accepted
    killed = scored - len(unlisted)
    elapsed = time.monotonic() - started
    print(
        f"{len(results)} mutants in {elapsed / 60:.1f} min: {len(results) - len(survivors)} killed, "
        f"{accepted} survived as listed in {SURVIVORS.name} (equivalent or accepted), {len(unlisted)} new survivors"
    )
    if scored:
        print(f"score: {killed}/{scored} = {100 * killed / scored:.1f}% of the mutants not listed killed")
    for key in now_killed:
        print(f"now killed, remove from {SURVIVORS.name}: {key}")
    for key in stale:
        print(f"no longer a mutant (the code changed), remove from {SURVIVORS.name}: {key}")
    for key in unlisted:
        print(f"SURVIVED: {key}")
    if unlisted:
        print(f"\n{len(unlisted)} new survivors: kill each with a test, or list it in {SURVIVORS.name} with why")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
