"""The msgapi load benchmark: ``python -m bench.run`` (see bench/README.md).

run          arguments, and the order of one run
servers      the bare ceiling app and msgapi as deployed (processes, nginx in front: front)
server_process  one server child process: start, wait, memory, CPU, idleness, log
database     a fresh database per run and the direct queries that check the service
seeding      the account and the messages the scenarios use
scenarios    what is sent, as data, and what each scenario is compared to
ceilings     (a), (a') the bare app and (b) the view statement alone
measure      scenarios with their view counts and ratios; the login storm
growth       --growth: the cost as the table grows
profiling    --profile: py-spy samples, summarized
loadgen      the load generator: wrk, or the built-in client (builtin_client, parallel, load)
meta, report what a run measured on; the tables and JSON
"""
