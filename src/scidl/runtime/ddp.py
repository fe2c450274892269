"""``DistributedDataParallel`` that can be freed after its process group is destroyed.

torch's DDP keeps its process group alive from C++ (the reducer holds it). When the
group has already been destroyed (``destroy_process_group()`` at the end of a run or a
test) and the model is freed afterwards, the reducer drops the group's last reference
and ``~ProcessGroupGloo`` joins the group's worker threads *while holding the GIL*. A
worker that is just releasing a finished collective needs the GIL to release the Python
object its thread-local state captured, so the two wait for each other for ever (seen
with py-spy: the main thread in ``std::thread::join`` under ``~Reducer``, a gloo worker
in ``gil_scoped_acquire`` under ``~AsyncWork``). On 2 cores it happened within ~100
wrap–train–destroy cycles of a small model.

:class:`DDPModule` releases the reducer first, while ``self.process_group`` still holds
the group from Python; the group is then freed through its Python object, whose
destructor releases the GIL before joining the workers.
"""

from __future__ import annotations

from torch.nn.parallel import DistributedDataParallel

__all__ = ["DDPModule"]


class DDPModule(DistributedDataParallel):
    """torch's ``DistributedDataParallel``, unchanged except for the order in which its
    C++ reducer and its process group are released when the module is freed."""

    def __del__(self) -> None:
        # The module's attributes would be cleared in insertion order: the process group
        # (set first) before the reducer, so the reducer would hold the last reference.
        self.__dict__.pop("reducer", None)
