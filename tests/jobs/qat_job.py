"""A few steps of SimQAT or SLB on LeNet5 and real MNIST digits, in one process or as one msrun worker.

For each algorithm writes ``OUT/<algorithm>.npz`` (every parameter by name and the final
loss; rank 0 only, after the workers checked they hold the same parameters). Used by
``tests/test_dist_msrun.py`` to compare 2 workers with one process on the same global batches.

    python tests/jobs/qat_job.py OUT simqat slb [--steps 3] [--batch 32] [--compiled]

``--compiled`` trains with compiled steps (``train_classifier(compiled=True)``; not SLB).
"""

from gscore import dist

dist.init()  # first: msrun's scheduler process stops here

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402

import gscore  # noqa: E402
from gscore.data.mnist import load_mnist_5k  # noqa: E402
from gscore.io.atomic import atomic_target  # noqa: E402
from gscore.io.digest import parameters_digest  # noqa: E402
from gscore.models.convnets import LeNet5  # noqa: E402
from gscore.train.classifier import train_classifier  # noqa: E402

CONFIGS = {
    "simqat": {"ema_decay": 0.9},
    "slb": {"weight_bits": 2, "include_dense": True, "act_bits": 8, "ema_decay": 0.9, "t_start_time": 0.0, "t_end_time": 1.0},
}


def train(name: str, steps: int, batch: int, out: Path, compiled: bool) -> None:
    ms.set_seed(0)
    net = LeNet5()
    algo = gscore.get(name)(CONFIGS[name])
    algo.apply(net)
    before_step = None
    if name == "slb":
        schedule = algo.schedule(steps)
        before_step = lambda: schedule.step(net)  # noqa: E731
    data = load_mnist_5k()
    rows = steps * batch
    result = train_classifier(net, data.train_x[:rows], data.train_y[:rows], epochs=1, batch_size=batch, learning_rate=1e-3, progress=False, before_step=before_step,
                              compiled=compiled)
    dist.agree(f"the parameters trained by {name}", parameters_digest(net))
    if dist.is_root():
        with atomic_target(out / f"{name}.npz") as tmp, open(tmp, "wb") as stream:
            np.savez(stream, final_loss=np.array(result.final_loss), **{p.name: p.asnumpy() for p in net.get_parameters()})
    dist.barrier()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("algorithms", nargs="+", choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--compiled", action="store_true")
    args = parser.parse_args()
    ms.runtime.launch_blocking()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.algorithms:
        train(name, args.steps, args.batch, args.out, args.compiled)
    return 0

if __name__ == "__main__":
    sys.exit(main())
