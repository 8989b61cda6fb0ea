import time, numpy as np
import mindspore as ms
from mindspore import Tensor, Parameter
from mindspore.common.initializer import Zero
q=(np.arange(4096*4096)%200-100).astype(np.int8).reshape(4096,4096)
p=Parameter(Tensor(np.zeros((1,1),np.int8)), name="w", requires_grad=False)
t=time.perf_counter(); p.set_data(Tensor.from_numpy(q)); print("set_data diff shape", time.perf_counter()-t, p.shape, np.shares_memory(p.asnumpy(), q))
p=Parameter(Tensor(shape=(4096,4096), dtype=ms.int8, init=Zero()), name="w", requires_grad=False)
print("lazy has_init", p.has_init)
t=time.perf_counter(); p.set_data(Tensor.from_numpy(q)); print("set_data lazy", time.perf_counter()-t, p.has_init, np.shares_memory(p.asnumpy(), q))
p=Parameter(Tensor.from_numpy(np.zeros((4096,4096),np.int8)), name="w", requires_grad=False)
t=time.perf_counter(); p.set_data(Tensor.from_numpy(q)); print("set_data init", time.perf_counter()-t, np.shares_memory(p.asnumpy(), q))
q2=q.copy(); p.set_data(Tensor.from_numpy(q2)); 
q2[0,0]=77; print("after mutate numpy", p.asnumpy()[0,0], p.asnumpy().base is not None)
import mindspore.nn as nn, mindspore.ops as ops
