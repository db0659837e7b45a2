"""`perfdeck demo`: a real instrumented workload (collectors.demo.workload), a fast-forward backfill of
its history (collectors.demo.backfill), live traffic (collectors.demo.live), and the runner that ties
them to the collector daemon and the dashboard (collectors.demo.runner)."""
