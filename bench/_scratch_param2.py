import time, sys, numpy as np
import mindspore as ms
from mindspore import Tensor, Parameter
q=np.arange(4096*4096).astype(np.int8).reshape(4096,4096)
t=Tensor.from_numpy(q)
print("from_numpy shares", np.shares_memory(t.asnumpy(), q))
t2=Tensor(t); print("Tensor(Tensor) shares", np.shares_memory(t2.asnumpy(), q))
p=Parameter(Tensor.from_numpy(q), name="w"); print("Param(tmp) shares", np.shares_memory(p.asnumpy(), q))
a=p.asnumpy(); print("param asnumpy writable", a.flags.writeable, np.shares_memory(a, p.asnumpy()))
import mindspore.common.parameter as mp
orig=mp.Parameter._get_parameter_new_args
def spy(data, rc, init_param=True):
    print("rc=",rc); return orig(data, rc, init_param)
mp.Parameter._get_parameter_new_args=staticmethod(spy)
p=Parameter(Tensor.from_numpy(q), name="w")
x=Tensor.from_numpy(q); p=Parameter(x, name="w")
