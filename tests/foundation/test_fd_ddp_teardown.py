"""A DDP model freed after its process group was destroyed does not deadlock the process.

With torch's own ``DistributedDataParallel`` the loop below hung (main thread joining a
gloo worker under ``~Reducer`` while holding the GIL, the worker waiting for the GIL)
within about 100 cycles on 2 cores; SciDL wraps every model in
:class:`scidl.runtime.ddp.DDPModule`, which releases the reducer first.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CYCLES = 250

SCRIPT = textwrap.dedent(f"""
    import gc, tempfile
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from scidl.runtime.ddp import DDPModule

    torch.set_num_threads(1)
    for i in range({CYCLES}):
        d = tempfile.mkdtemp()
        dist.init_process_group("gloo", init_method=f"file://{{d}}/store", rank=0,
                                world_size=1)
        try:
            net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(),
                                      torch.nn.Linear(16, 1))
            model = DDPModule(net)
            assert isinstance(model, DistributedDataParallel)
            for _ in range(2):
                model(torch.rand(32, 2)).pow(2).mean().backward()
            if i % 20 == 0:  # some models are freed by the cycle collector
                model.cycle = model
        finally:
            dist.destroy_process_group()
        del model
        if i % 20 == 0:
            gc.collect()
    print("done", flush=True)
""")


@pytest.mark.timeout(150)
def test_ddp_models_freed_after_their_group_never_deadlock():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=100)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-2000:]
