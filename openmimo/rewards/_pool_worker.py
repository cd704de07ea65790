"""Entry point of a RewardPool worker process: ``python -m openmimo.rewards._pool_worker``.

A separate module so that running it as ``__main__`` does not re-execute ``openmimo.rewards.pool``
(which the package ``__init__`` has already imported)."""

from openmimo.rewards.pool import worker_main

if __name__ == "__main__":
    worker_main()
