import time, numpy as np, cProfile, pstats
import mindspore as ms
from mindspore import Tensor, Parameter
q=np.ones((4096,4096),np.int8)
f=np.ones((4096,4096),np.float32)
def tm(name,fn,n=5):
    best=1e9
    for _ in range(n):
        t=time.perf_counter(); r=fn(); best=min(best,time.perf_counter()-t)
    print(f"{name:40s} {best*1e3:8.2f} ms"); return r
tm("Tensor.from_numpy(q)", lambda: Tensor.from_numpy(q))
tm("Tensor(q)", lambda: Tensor(q))
tm("Tensor(q) asnumpy", lambda: Tensor(q).asnumpy())
tm("Parameter(from_numpy(q))", lambda: Parameter(Tensor.from_numpy(q),name="w",requires_grad=False))
tm("Parameter(Tensor(q))", lambda: Parameter(Tensor(q),name="w",requires_grad=False))
tm("Parameter(from_numpy(f))", lambda: Parameter(Tensor.from_numpy(f),name="w",requires_grad=False))
tm("q.copy()", lambda: q.copy())
tm("f.copy()", lambda: f.copy())
cProfile.run('Parameter(Tensor.from_numpy(q),name="w",requires_grad=False)', '/tmp/p.out')
pstats.Stats('/tmp/p.out').sort_stats('cumtime').print_stats(15)
