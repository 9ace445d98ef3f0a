"""Carbon-aware scheduling: jobs, carbon forecasts, planning policies, executor, simulator.

See docs/schedule.md. Modules: ``jobs`` (the job file), ``forecast`` (carbon forecasters and
their error), ``policies`` (registry), ``plan`` (job file -> plan.json), ``executor`` (runs a
plan here), ``measure`` (ledger x trace), ``simulate`` (a year of a trace with a job mix),
``emit`` (Slurm/at lines), ``plot`` (PNG/HTML timeline).
"""
