"""A few steps of SimQAT or SLB on LeNet5 and real MNIST digits, in one process or as one msrun worker.

Writes ``OUT`` (an ``.npz`` of every parameter by name, rank 0 only, after the workers checked
they hold the same parameters). Used by ``tests/test_dist_qat.py`` to compare 2 workers with
one process training on the same global batches.

    python tests/jobs/qat_job.py simqat OUT.npz [--steps 3] [--batch 32]
"""

from gscore import dist

dist.init()  # first: msrun's scheduler process stops here

import argparse  # noqa: E402
import sys  # noqa: E402

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402

import gscore  # noqa: E402
from gscore.data.mnist import load_mnist_5k  # noqa: E402
from gscore.io.atomic import atomic_file  # noqa: E402
from gscore.io.digest import parameters_digest  # noqa: E402
from gscore.models.convnets import LeNet5  # noqa: E402
from gscore.train.classifier import train_classifier  # noqa: E402

CONFIGS = {
    "simqat": {"ema_decay": 0.9},
    "slb": {"weight_bits": 2, "include_dense": True, "act_bits": 8, "ema_decay": 0.9, "t_start_time": 0.0, "t_end_time": 1.0},
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("algorithm", choices=sorted(CONFIGS))
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    ms.runtime.launch_blocking()
    ms.set_seed(0)
    net = LeNet5()
    algo = gscore.get(args.algorithm)(CONFIGS[args.algorithm])
    algo.apply(net)
    before_step = None
    if args.algorithm == "slb":
        schedule = algo.schedule(args.steps)
        before_step = lambda: schedule.step(net)  # noqa: E731
    data = load_mnist_5k()
    rows = args.steps * args.batch
    result = train_classifier(net, data.train_x[:rows], data.train_y[:rows], epochs=1, batch_size=args.batch, learning_rate=1e-3, progress=False, before_step=before_step)
    dist.agree("the trained parameters", parameters_digest(net))
    if dist.is_root():
        with atomic_file(args.out, suffix=".npz") as tmp:
            np.savez(tmp, final_loss=np.array(result.final_loss), **{p.name: p.asnumpy() for p in net.get_parameters()})
    dist.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
