"""Where a run computes: the device mesh of data parallelism, and multi-host set-up.

Data parallelism shards every batch over a one-axis `jax.sharding.Mesh` ('data') and
replicates everything else: the uint8 data set (Fashion-MNIST is 47 MB, CIFAR-10
150 MB: a copy on each device costs less than moving batches), the parameters and the
optimiser state. A device gathers and binarizes its own slice of each batch, and XLA
inserts the gradient all-reduce. Replicated parameters are the right choice at this
scale (the largest model here has a few million parameters); sharding them would only
add communication.

Per-step keys do not depend on the device count: every key is `fold_in(stream, step)`,
and with `jax_threefry_partitionable` (JAX's default) a sharded draw gives the very
bits of the unsharded one, so one device and four follow the same trajectory up to
the order of floating-point sums.

Multi-host (`initialize_distributed`): every process runs the same program on the
same data (each holds the small data set); the mesh spans every process's devices, so
the batch is split by process and then by device; process 0 alone writes logs,
configs and figures, while orbax writes each checkpoint once from all of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from aevae_jax.errors import UserError, require

DATA_AXIS = "data"


@dataclasses.dataclass(frozen=True)
class Placement:
    """The devices of a run: `mesh` None for one device (no sharding at all)."""

    mesh: Mesh | None = None

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    def replicated(self) -> NamedSharding | None:
        return None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec())

    def batch_sharding(self) -> NamedSharding | None:
        """The sharding of an epoch's [steps, batch] example indices: batch over 'data'."""
        if self.mesh is None:
            return None
        return NamedSharding(self.mesh, PartitionSpec(None, DATA_AXIS))

    def replicate(self, tree: Any) -> Any:
        """`tree` (arrays, NumPy arrays, None leaves) copied to every device of the mesh;
        unchanged on one device. Works across processes: each process fills its own
        devices from its (identical) host copy. On one device, NumPy arrays become
        device arrays and the rest is left as it is."""
        if self.mesh is None:
            return jax.tree.map(lambda a: jnp.asarray(a) if isinstance(a, np.ndarray) else a, tree)
        sharding = self.replicated()

        def put(a):
            if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
                data = put(jax.random.key_data(a))
                return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
            host = np.asarray(a)
            return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

        return jax.tree.map(put, tree)


def make_placement(devices: int | None, batch_size: int) -> Placement:
    """The mesh of `devices` devices for batches of `batch_size`, which must split
    evenly. None: every device JAX sees, which is every local device, or with
    `jax.distributed` every device of every process."""
    available = jax.devices()
    n = len(available) if devices is None else devices
    require(
        isinstance(n, int) and 1 <= n <= len(available),
        f"--devices must be between 1 and the {len(available)} device(s) JAX sees "
        f"({available[0].platform}), got {devices!r}",
    )
    require(
        batch_size % n == 0,
        f"--batch-size {batch_size} does not split evenly over {n} devices; pass a batch "
        f"size divisible by {n}, or fewer --devices",
    )
    if n == 1 and jax.process_count() == 1:
        return Placement()
    require(
        n == len(available) or jax.process_count() == 1,
        "a multi-host run uses every device of every process; leave --devices out",
    )
    return Placement(Mesh(np.asarray(available[:n]), (DATA_AXIS,)))


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """`jax.distributed.initialize`: on a TPU slice or under SLURM/Open MPI every
    argument is detected; elsewhere pass the coordinator's host:port, the number of
    processes and this process's index (the same coordinator on every host)."""
    try:
        # CPU processes exchange gradients through Gloo (GPUs use NCCL, TPUs their ICI).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )
    except (RuntimeError, ValueError) as e:
        raise UserError(
            f"--distributed: jax.distributed.initialize failed ({e}); on a TPU slice or under "
            "SLURM no options are needed, elsewhere pass --coordinator HOST:PORT "
            "--num-processes N --process-id I on every host"
        ) from None


def barrier(name: str) -> None:
    """Wait until every process reaches this point (nothing to wait for in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0 of a multi-host run)."""
    return jax.process_index() == 0


def any_process(flag: bool) -> bool:
    """Whether `flag` holds on any process (every process gets the same answer), so that
    all of them act on what one of them saw, such as a Ctrl-C."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
