"""Release plans: plan files expanded into export jobs, executors (local pool, Ray), release merge."""
