"""Training loops: each trains, owns its checkpoint state and reports to a loop.Sink; none knows MLflow (the runs
that record them are genlab.runs)."""
