"""The report: the human-readable tables, and the same results as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from bench.ceilings import VIEW_LABEL
from bench.load import PAGE_LIMIT


def fmt(value: object, spec: str = ".0f", none: str = "-") -> str:
    if value is None:
        return none
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def mib(kb: int | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:.0f} MiB"


def render(result: dict) -> str:
    meta = result["meta"]
    out = []
    db_name = "PostgreSQL" if meta["database"] == "postgresql" else "SQLite"
    out.append(
        f"msgapi benchmark: {db_name} {meta.get('database_version') or ''}, generator {meta['generator']} "
        f"({meta['generator_version']}), {meta['server_threads']} server threads"
        f"{' x ' + str(meta['processes']) + ' processes behind nginx' if meta.get('processes', 1) > 1 else ''}, "
        f"{meta['duration_s']:g}s per run, "
        f"{meta['cpus']} CPUs, PBKDF2 {meta['password_hash_iterations']} iterations"
    )
    out.append(
        f"startup (spawn -> first 200): {result['startup_s']:.2f}s   RSS idle {mib(result.get('rss_kb_idle'))}, "
        f"after scenarios {mib(result.get('rss_kb_after_scenarios'))}"
        + (f", after growth {mib(result['rss_kb_after_growth'])}" if "rss_kb_after_growth" in result else "")
    )
    code = meta.get("code", {})
    out.append(
        f"code: git {code.get('git_head', '?')}"
        + (" + uncommitted changes in msgapi/" if code.get("msgapi_modified") else "")
        + f", msgapi/ sha256 {code.get('msgapi_sha256')}"
    )
    page = result["list_page_size"]
    out.append(
        f"list page: GET /api/messages?limit={PAGE_LIMIT} returned {page} rows"
        + ("" if result["list_limit_supported"] else " (the server ignores ?limit: every row)")
    )
    out.append("")
    out.append("Ceilings")
    out.append(f"  {'ceiling':<44}{'c':>4}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for key, label in (
        ("item", "(a)  bare Falcon+Waitress, one object"),
        ("list", "(a') bare Falcon+Waitress, 100 objects"),
    ):
        for c, r in result["app_ceiling"][key].items():
            out.append(
                f"  {label:<44}{c:>4}{fmt(r['rps']):>9}{fmt(r['p50_ms'], '.2f'):>9}"
                f"{fmt(r['p99_ms'], '.2f'):>9}{r['errors']:>8}"
            )
    for which, by_conns in result["db_ceiling"].items():
        for conns, r in by_conns.items():
            label = f"(b)  {VIEW_LABEL}, {which} id, {conns} conn"
            out.append(
                f"  {label:<44}{conns:>4}{fmt(r['rps']):>9}{fmt(r['p50_ms'], '.2f'):>9}"
                f"{fmt(r['p99_ms'], '.2f'):>9}{r['errors']:>8}"
            )
    out.append("")
    out.append("Scenarios")
    out.append(
        f"  {'scenario':<11}{'c':>3}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}"
        f"{'vs ceiling':>15}{'vs min(a,b)':>13}  notes"
    )
    for r in result["scenarios"]:
        vs = f"{r['ratio']:.2f} of {r['ceiling']}" if r.get("ratio") is not None else "-"
        vs_min = f"{r['ratio_min']:.2f}" if r.get("ratio_min") is not None else "-"
        notes = []
        if "views_delta" in r:
            notes.append(f"views +{r['views_delta']} for {r['status_200']} 200s, lost {r['lost_views']}")
            if r.get("view_statements"):
                notes.append(
                    f"{fmt(r['view_statements_per_s'])} view statements/s, {r['views_per_statement']:.1f} views each"
                )
            if r["uncounted_200s"]:
                notes.append(f"{r['uncounted_200s']} in flight at the bell")
        if r["scenario"] == "list":
            notes.append(f"page {page} rows")
        if r.get("drain_s", 0) > 2:
            notes.append(f"server busy {r['drain_s']:.0f}s after the clients stopped")
        if "rows_created" in r:
            notes.append(f"{r['rows_created']} rows created")
        if r["errors"]:
            notes.append(
                f"status {r.get('status', {})}, socket errors {r['socket_errors']}"
                if r["generator"] == "builtin"
                else f"non-2xx {r['non_2xx']}, socket errors {r['socket_errors']}"
            )
        out.append(
            f"  {r['scenario']:<11}{r['concurrency']:>3}{fmt(r['rps']):>8}{fmt(r['p50_ms'], '.2f'):>9}"
            f"{fmt(r['p99_ms'], '.2f'):>9}{r['errors']:>7}{vs:>15}{vs_min:>13}  {'; '.join(notes)}"
        )
    storm = result.get("storm")
    if storm:
        out.append("")
        rd, lg, alone = storm["reader"], storm["login"], storm["reader_alone"]
        out.append(
            f"Login storm: 8 clients logging in ({fmt(lg['rps'], '.1f')} logins/s, p50 {fmt(lg['p50_ms'], '.0f')} ms, "
            f"errors {lg['errors']}) while 1 reader GETs an item: p50 {fmt(rd['p50_ms'], '.2f')} ms, "
            f"p99 {fmt(rd['p99_ms'], '.2f')} ms, {fmt(rd['rps'])} req/s, errors {rd['errors']}, "
            f"lost views {rd['lost_views']}"
        )
        if alone:
            out.append(
                f"  the same reader alone (get_hot c=1): p50 {fmt(alone['p50_ms'], '.2f')} ms, "
                f"p99 {fmt(alone['p99_ms'], '.2f')} ms, {fmt(alone['rps'])} req/s"
            )
    growth = result.get("growth")
    if growth:
        out.append("")
        out.append("Growth (1 client, random ids; list = one page)")
        out.append(
            f"  {'messages':>10}{'seed s':>8}{'GET p50':>9}{'GET p99':>9}{'GET r/s':>9}"
            f"{'list p50':>10}{'list p99':>10}{'list r/s':>10}"
        )
        for step in growth["steps"]:
            g, lst = step["get_item"], step["list"]
            if "skipped" in lst:
                list_cols = f"{'skipped':>10}{'':>10}{'':>10}"
            else:
                list_cols = (
                    f"{fmt(lst['p50_ms'], '.2f'):>10}{fmt(lst['p99_ms'], '.2f'):>10}{fmt(lst['rps'], '.1f'):>10}"
                )
            out.append(
                f"  {step['messages']:>10}{step['seed_seconds']:>8.1f}{fmt(g['p50_ms'], '.2f'):>9}"
                f"{fmt(g['p99_ms'], '.2f'):>9}{fmt(g['rps']):>9}{list_cols}"
            )
        rat = growth["ratio_last_to_first"]
        first, last = growth["steps"][0]["messages"], growth["steps"][-1]["messages"]
        out.append(
            f"  cost at {last} / cost at {first}: GET p50 x{fmt(rat['get_item']['p50_ms'], '.2f')}, "
            f"p99 x{fmt(rat['get_item']['p99_ms'], '.2f')}; list p50 x{fmt(rat['list']['p50_ms'], '.2f')}, "
            f"p99 x{fmt(rat['list']['p99_ms'], '.2f')}"
            + ("" if result["list_limit_supported"] else " (list skipped at sizes it would return in full)")
        )
    prof = result.get("profile")
    if prof and isinstance(prof.get("error"), str):  # nothing profiled at all (no py-spy)
        out += ["", f"Profile: failed: {prof['error']}"]
    elif prof:
        for mode, p in prof.items():
            out.append("")
            if "error" in p:
                out.append(f"Profile ({mode}): failed: {p['error']}")
                continue
            what = "all busy threads" if mode == "all" else "the thread holding the GIL only"
            out.append(f"Profile of hot GET item ({what}; {p['samples']} samples; {p['file']})")
            out.append(f"  {'own %':>6}  function")
            for row in p["top_own"]:
                out.append(f"  {row['pct']:>6.1f}  {row['function']}")
            out.append(f"  {'own %':>6}  by file")
            for row in p["top_files"]:
                out.append(f"  {row['pct']:>6.1f}  {row['file']}")
            out.append(f"  {'total %':>6}  function (including what it calls)")
            for row in p["top_total"]:
                out.append(f"  {row['pct']:>6.1f}  {row['function']}")
    if result.get("waitress_queue_warnings"):
        out.append("")
        out.append(
            f"Server log: {result['waitress_queue_warnings']} waitress 'Task queue depth' warnings "
            "(a request waited for a free thread)"
        )
    count = result.get("server_log_problem_count")
    if count:
        out.append("")
        out.append(f"Server log: {count} warning/error lines, e.g.:")
        out.extend("  " + line[:200] for line in result["server_log_problems"][:5])
    return "\n".join(out)


def render_totals(meta: dict) -> str:
    """The line after the tables: how long the run took and how busy the machine was."""
    return (
        f"\n(total {meta['wall_seconds']:.0f}s; load average before {meta['loadavg_start']}, "
        f"after {meta['loadavg_end']})"
    )


def write_json(result: dict, path: str) -> None:
    Path(path).write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
