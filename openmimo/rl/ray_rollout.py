"""Rollout workers on Ray: the rollout backend interface of :mod:`openmimo.rl.backends` over Ray actors, each with
its own generation engine -- one per GPU on a cluster (``gpus_per_worker=1``), or CPU processes on one machine.

``RayRolloutBackend(model_config, state_dict, params, workers=2, ...)`` builds ``workers`` actors
(:class:`RolloutWorker`): each builds the model from the config, loads the weights (one object-store copy shared by
all), and drives an :class:`~openmimo.rl.backends.EngineBackend` of its own.  The scheduler
(:class:`~openmimo.rl.rollout.SeamlessRollout`) sees one backend:

- ``submit(gid, prompt_ids, n)``: the group goes to the worker with the fewest samples assigned, with the
  backend's ``params`` and ``seed`` of the moment (validation swaps the parameters and a resume restores the seed,
  as with the local backend);
- ``poll()``: one call per busy worker is kept in flight -- the worker runs engine steps until a sample finishes or
  ``poll_s`` seconds pass -- so the workers decode while the scheduler scores and trains; ``poll`` blocks until one
  worker answers and returns every finished sample that arrived;
- ``abort(gid)``: the owner drops the group; samples it finished that were not delivered yet count as lost, as in
  the local backend;
- ``update_weights(weights)``: every worker copies the new weights into its engine in place
  (``Engine.update_weights``), after the engine steps already queued: the weights broadcast after each update.
  ``weight_sync="object_store"`` (default) puts them in Ray's object store once (host memory);
  ``"collective"`` broadcasts them over a process group of the trainer and the workers (NCCL between GPUs, gloo
  otherwise; :mod:`openmimo.rl.weight_sync`).

A request's samples depend only on its seed (the engine's counter-based sampling), so which worker runs a group
does not change its tokens: the same seeds give the samples the local backend gives.  ``slots`` is the sum of the
workers' engine slots and ``busy_s`` each sample's own worker's step time, so the scheduler's GPU-idle ratio counts
every worker.

Importing this module does not import Ray; constructing the backend without it raises ImportError (``pip install
openmimo[ray]``).  Without an ``address`` a private local Ray instance is started (``workers`` CPUs plus
``extra_cpus``, for the reward tasks) and shut down by :meth:`close`; a running Ray is reused as it is.
"""

from __future__ import annotations

import torch

from openmimo.rewards.ray_pool import ensure_ray, import_ray
from openmimo.rl.backends import EngineBackend, Finished, WallClock
from openmimo.rl.weight_sync import WeightGroup, serve_store


def cpu_state_dict(weights) -> dict:
    """A module's (or a state dict's) parameters as detached CPU tensors: what goes to the object store."""
    sd = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    return {k: v.detach().to("cpu") for k, v in sd.items()}


class RolloutWorker:
    """One Ray actor's engine (:class:`RayRolloutBackend` wraps this class with ``ray.remote``)."""

    def __init__(self, config: dict, state: dict, params, seed: int, engine_kwargs: dict, threads: int = 0):
        from openmimo.infer.engine import Engine
        from openmimo.model.config import MiMoConfig
        from openmimo.model.mimo import build_model

        if threads:
            torch.set_num_threads(threads)
        cuda = torch.cuda.is_available()
        dtype = torch.bfloat16 if cuda else torch.float32
        model = build_model(MiMoConfig.from_hf_dict(config), device="cuda" if cuda else "cpu", dtype=dtype,
                            init=False)
        model.load_state_dict(state)
        self.backend = EngineBackend(Engine(model, seed=seed, **engine_kwargs), params, seed=seed)

    def slots(self) -> int:
        return self.backend.slots

    def submit(self, gid: int, prompt_ids: list, n: int, params, seed: int) -> None:
        self.backend.params, self.backend.seed = params, seed
        self.backend.submit(gid, prompt_ids, n)

    def poll(self, budget_s: float) -> list[Finished]:
        """Engine steps until a sample finishes or ``budget_s`` seconds pass (at least one step)."""
        clock, done = self.backend.clock, []
        t0 = clock.now()
        while self.backend.active():
            done += self.backend.poll()
            if done or clock.now() - t0 >= budget_s:
                break
        return done

    def abort(self, gid: int) -> tuple[int, float]:
        return self.backend.abort(gid)

    def update_weights(self, state: dict) -> None:
        self.backend.update_weights(state)

    def weight_plan(self) -> tuple[list[str], list[tuple], str]:
        """The engine's parameter names (the broadcast's order), shapes and dtype name."""
        params = dict(self.backend.engine.model.named_parameters())
        names = sorted(params)
        return names, [tuple(params[n].shape) for n in names], str(params[names[0]].dtype).removeprefix("torch.")

    def join_weight_group(self, host: str, port: int, rank: int, world: int, backend: str) -> None:
        self._plan = self.weight_plan()
        self._group = WeightGroup.join(host, port, rank, world, backend)

    def receive_weights(self) -> None:
        """Receive one broadcast (``RayRolloutBackend.update_weights``) into the engine, bucket by bucket."""
        names, shapes, dtype = self._plan
        for idx, tensors in self._group.receive(shapes, getattr(torch, dtype)):
            self.backend.engine.update_weights({names[i]: t for i, t in zip(idx, tensors)}, strict=False)

    def state_dict(self) -> dict:
        """The engine's weights (CPU tensors): what a check compares with the trainer's."""
        return cpu_state_dict(self.backend.engine.model)


class RayRolloutBackend:
    """The rollout backend over Ray actors; see the module docstring."""

    def __init__(self, model_config: dict, state_dict: dict, params, *, workers: int = 2, seed: int = 0,
                 engine_kwargs: dict | None = None, gpus_per_worker: float = 0.0, threads_per_worker: int = 1,
                 poll_s: float = 0.05, address: str | None = None, extra_cpus: int = 0,
                 weight_sync: str = "object_store"):
        if workers < 1:
            raise ValueError(f"workers={workers}: at least one rollout worker")
        if weight_sync not in ("object_store", "collective"):
            raise ValueError(f"weight_sync={weight_sync!r}: expected object_store or collective")
        import_ray("Ray rollout workers")
        state_bytes = sum(t.numel() * t.element_size() for t in state_dict.values())
        gpus = {"num_gpus": torch.cuda.device_count()} if gpus_per_worker and not address else {}
        ray, self._owns_ray = ensure_ray(address, workers + extra_cpus, max(128 * 2**20, 3 * state_bytes), **gpus)
        self._ray = ray
        actor = ray.remote(RolloutWorker).options(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=0)
        state_ref = ray.put(cpu_state_dict(state_dict))
        self.workers = [actor.remote(model_config, state_ref, params, seed, dict(engine_kwargs or {}),
                                     threads_per_worker) for _ in range(workers)]
        self.slots = sum(ray.get([w.slots.remote() for w in self.workers]))
        # sampling parameters and the seed the groups' request seeds derive from (as EngineBackend's): sent with
        # every group, so a swap (validation) or a restored seed (resume) reaches the workers
        self.params, self.seed, self.poll_s, self.clock = params, seed, poll_s, WallClock()
        self._owner: dict[int, int] = {}  # gid -> worker index
        self._left: dict[int, int] = {}  # gid -> samples not delivered yet
        self._load = [0] * workers  # samples assigned and not delivered, per worker
        self._inflight: dict = {}  # ObjectRef of a poll -> worker index
        self._polling: dict[int, object] = {}  # worker index -> its poll's ObjectRef
        self._ready: list[Finished] = []  # delivered by a poll that abort() had to wait for
        self._group = None
        if weight_sync == "collective":
            self._join_group(address, bool(gpus_per_worker))

    def _join_group(self, address: str | None, gpus: bool) -> None:
        """The weight-broadcast group (openmimo/rl/weight_sync.py): this process rank 0, worker i rank i + 1."""
        ray = self._ray
        names, _, dtype = ray.get(self.workers[0].weight_plan.remote())
        self._names, self._dtype = names, getattr(torch, dtype)
        backend = "nccl" if gpus and torch.cuda.is_available() else "gloo"
        host = ray.util.get_node_ip_address() if address else "127.0.0.1"
        world = len(self.workers) + 1
        self._store = serve_store(host, world)
        joins = [w.join_weight_group.remote(host, self._store.port, i + 1, world, backend)
                 for i, w in enumerate(self.workers)]
        self._group = WeightGroup(self._store, 0, world, backend)  # returns once every worker has joined
        ray.get(joins)

    def submit(self, gid: int, prompt_ids, n: int, meta=None) -> None:
        w = min(range(len(self.workers)), key=self._load.__getitem__)
        self.workers[w].submit.remote(gid, list(prompt_ids), n, self.params, self.seed)
        self._owner[gid], self._left[gid] = w, n
        self._load[w] += n

    def _launch(self) -> None:
        for w, load in enumerate(self._load):
            if load and w not in self._polling:
                ref = self.workers[w].poll.remote(self.poll_s)
                self._polling[w], self._inflight[ref] = ref, w

    def _collect(self, ref) -> list[Finished]:
        w = self._inflight.pop(ref)
        del self._polling[w]
        return self._ray.get(ref)

    def _deliver(self, finished: list[Finished]) -> list[Finished]:
        out = []
        for f in finished:
            if f.gid not in self._left:  # aborted meanwhile (abort() counted it)
                continue
            self._left[f.gid] -= 1
            self._load[self._owner[f.gid]] -= 1
            if not self._left[f.gid]:
                del self._left[f.gid], self._owner[f.gid]
            out.append(f)
        return out

    def poll(self, until: float | None = None) -> list[Finished]:
        out, self._ready = self._ready, []
        self._launch()
        if not out and self._inflight:
            ray = self._ray
            refs = list(self._inflight)
            ready, rest = ray.wait(refs, num_returns=1)
            if rest:
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                out += self._collect(ref)
        out = self._deliver(out)
        self._launch()
        return out

    def abort(self, gid: int) -> tuple[int, float]:
        w = self._owner.pop(gid, None)
        if w is None:
            return 0, 0.0
        left = self._left.pop(gid)
        self._load[w] -= left
        tokens, busy = 0, 0.0
        if w in self._polling:  # its answer may hold samples of this group: they are lost, like unfinished ones
            for f in self._collect(self._polling[w]):
                if f.gid == gid:
                    tokens, busy = tokens + len(f.token_ids), busy + f.busy_s
                else:
                    self._ready.append(f)
        t, b = self._ray.get(self.workers[w].abort.remote(gid))
        return tokens + t, busy + b

    def active(self) -> int:
        return sum(self._left.values())

    def update_weights(self, weights) -> None:
        """Every worker's engine gets ``weights`` (a module or a state dict), after its queued steps: by one
        broadcast over the weight group, or through the object store."""
        if self._group is None:
            ref = self._ray.put(cpu_state_dict(weights))
            self._ray.get([w.update_weights.remote(ref) for w in self.workers])
            return
        sd = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
        refs = [w.receive_weights.remote() for w in self.workers]
        self._group.send([sd[n] for n in self._names], self._dtype)
        self._ray.get(refs)

    def close(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            for w in self.workers:
                ray.kill(w)
            if self._owns_ray:
                ray.shutdown()
        self.workers, self._inflight, self._polling = [], {}, {}

