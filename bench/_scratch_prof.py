import time, numpy as np, cProfile, pstats
import mindspore as ms
from mindspore import nn, Tensor, Parameter
import gscore
from gscore.quant import quant_params, quantize, QuantScheme
def rss(): return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])/1024
L,D=16,4096
rng=np.random.default_rng(0)
t=time.perf_counter()
ws=[]
for i in range(L):
    w=rng.random((D,D),dtype=np.float32); w-=0.5; w*=2*np.sqrt(3/D); ws.append(w)
print("gen",time.perf_counter()-t, rss())
t=time.perf_counter()
net=nn.SequentialCell([nn.Dense(D,D,weight_init=Tensor.from_numpy(w)) for w in ws])
print("build",time.perf_counter()-t, rss(), np.shares_memory(net[0].weight.asnumpy(), ws[0]))
for i in range(3):
    t=time.perf_counter(); b=[x.copy() for x in ws]; print("copy", time.perf_counter()-t); del b
sch=QuantScheme()
def tm(name,f,n=3):
    best=1e9
    for _ in range(n):
        t=time.perf_counter(); r=f(); best=min(best,time.perf_counter()-t)
    print(f"{name:30s} {best*1e3:8.1f} ms/16 layers-> total {best:.3f}s"); return r
tm("asnumpy", lambda: [c.weight.asnumpy() for c in net])
tm("quant_params", lambda: [quant_params(w,sch) for w in ws])
ps=[quant_params(w,sch) for w in ws]
tm("minmax reductions 2x", lambda: [(w.min(1),w.max(1)) for w in ws])
tm("require_finite (min+max full)", lambda: [(w.min(),w.max()) for w in ws])
tm("quantize", lambda: [quantize(w,p) for w,p in zip(ws,ps)],2)
qs=[quantize(w,p) for w,p in zip(ws,ps)]
def divide(): 
    for w,p in zip(ws,ps): c=np.divide(w,p.scale,dtype=np.float32)
tm("divide (new buf)", divide)
buf=np.empty((D,D),np.float32)
def divide2():
    for w,p in zip(ws,ps): np.divide(w,p.scale,out=buf)
tm("divide (reused buf)", divide2)
tm("rint inplace", lambda: [np.rint(buf,out=buf) for _ in range(L)])
tm("clip inplace", lambda: [np.clip(buf,-128,127,out=buf) for _ in range(L)])
tm("astype int8", lambda: [buf.astype(np.int8) for _ in range(L)])
tm("Parameter(from_numpy(q))", lambda: [Parameter(Tensor.from_numpy(q),name="weight",requires_grad=False) for q in qs])
tm("Tensor.from_numpy(q)", lambda: [Tensor.from_numpy(q) for q in qs])
p=Parameter(Tensor.from_numpy(qs[0]),name="w"); print("param shares mem:", np.shares_memory(p.asnumpy(), qs[0]))
