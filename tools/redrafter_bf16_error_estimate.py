#!/usr/bin/env python3
"""How far bf16 GEMM operands move the ReDrafter head's loss and gradients: the CUDA head step's sequence of
products (src/train/cuda/cuda_head_step.cpp) in float64, once exact and once with every GEMM operand rounded to bf16
(round-to-nearest-even), on the shapes of tests/backend_cuda/cuda_head_step_test.cpp. Prints, per shape, the relative
loss change, the worst entry error relative to each tensor's largest gradient, and the worst relative L2: the numbers
that test's tolerances are set against. numpy only.
"""
import numpy as np
def bf(x):
    x=np.asarray(x,dtype=np.float32); b=x.view(np.uint32).astype(np.uint64)
    b=((b+0x7FFF+((b>>16)&1))&0xFFFF0000).astype(np.uint32); return b.view(np.float32)
def silu(x): return x/(1+np.exp(-x))
def silu_g(x):
    s=1/(1+np.exp(-x)); return s*(1+x*(1-s))
def run(h,e,L,v,rnn,rows,n,seed,lowp):
    rng=np.random.default_rng(seed)
    R=lambda *s: rng.standard_normal(s)
    emb=bf(R(v,h)).astype(np.float64)
    def lin(i,o,bias=True):
        b=1/np.sqrt(i); return [rng.uniform(-b,b,(o,i)), rng.uniform(-b,b,o) if bias else None]
    proj=e!=2*h
    P={}
    if proj: P['proj']=lin(2*h,e)
    P['blocks']=[lin(e,e) for _ in range(L)]
    P['V']=lin(e,v,False)
    if rnn: P['U']=lin(h,h); P['W']=lin(h,h,False)
    ctx=bf(R(rows,h)).astype(np.float64)
    inp=rng.integers(0,v,(rows,n)); tgt=rng.integers(0,v,(rows,n)); tgt[rng.random((rows,n))<0.2]=-100
    q=(lambda x: bf(x).astype(np.float64)) if lowp else (lambda x:x)
    G={'blocks':[[np.zeros_like(w),np.zeros_like(b)] for w,b in P['blocks']],'V':np.zeros_like(P['V'][0])}
    if proj: G['proj']=[np.zeros_like(P['proj'][0]),np.zeros_like(P['proj'][1])]
    if rnn: G['U']=[np.zeros((h,h)),np.zeros(h)]; G['W']=np.zeros((h,h))
    acts=[]; prev=np.zeros((rows,h))
    for i in range(n):
        E=emb[inp[:,i]]
        if rnn:
            pre=q(E)@q(P['W'][0]).T + (q(prev)@q(P['U'][0]).T if i>0 else 0) + P['U'][1]
            s=silu(pre)
        else: pre=None; s=prev+E
        x=np.concatenate([ctx,s],1)
        z=[ (q(x)@q(P['proj'][0]).T+P['proj'][1]) if proj else x]
        pres=[]
        for l in range(L):
            p=q(z[l])@q(P['blocks'][l][0]).T+P['blocks'][l][1]; pres.append(p); z.append(z[l]+silu(p))
        acts.append((E,pre,s,x,z,pres,prev)); prev=s
    loss=0; carry=np.zeros((rows,h))
    for i in reversed(range(n)):
        E,pre,s,x,z,pres,prv=acts[i]
        logits=q(z[-1])@q(P['V'][0]).T
        valid=tgt[:,i]!=-100; cnt=valid.sum(); w=0.5/cnt
        m=logits.max(1,keepdims=True); lse=m[:,0]+np.log(np.exp(logits-m).sum(1))
        loss+= (lse[valid]-logits[valid,tgt[valid,i]]).sum()/cnt
        d=np.exp(logits-lse[:,None])*w; d[valid,tgt[valid,i]]-=w; d[~valid]=0
        G['V']+=q(d).T@q(z[-1]); dz=q(d)@q(P['V'][0])
        for l in reversed(range(L)):
            dy=dz*silu_g(pres[l]); G['blocks'][l][0]+=q(dy).T@q(z[l]); G['blocks'][l][1]+=dy.sum(0); dz=dz+q(dy)@q(P['blocks'][l][0])
        if proj:
            G['proj'][0]+=q(dz).T@q(x); G['proj'][1]+=dz.sum(0); dx=q(dz)@q(P['proj'][0])
        else: dx=dz
        ds=dx[:,h:]+carry
        if rnn:
            dp=ds*silu_g(pre); G['W']+=q(dp).T@q(E); G['U'][1]+=dp.sum(0)
            if i>0: G['U'][0]+=q(dp).T@q(prv); carry=q(dp)@q(P['U'][0])
        else: carry=ds
    flat=[('V',G['V'])]+[(f'b{l}w',g[0]) for l,g in enumerate(G['blocks'])]+[(f'b{l}b',g[1]) for l,g in enumerate(G['blocks'])]
    if proj: flat+= [('pw',G['proj'][0]),('pb',G['proj'][1])]
    if rnn: flat+= [('W',G['W']),('Uw',G['U'][0]),('Ub',G['U'][1])]
    return loss, flat
for case in [(32,64,2,1000,True),(32,48,2,1000,True),(24,48,1,997,False),(16,32,0,512,True),(64,128,1,384,True)]:
    l0,g0=run(*case,61,3,1,False); l1,g1=run(*case,61,3,1,True)
    worst=0; wl2=0; names=[]
    agree=0; tot=0
    for (nm,a),(_,b) in zip(g0,g1):
        e=np.abs(a-b).max()/np.abs(a).max(); l2=np.linalg.norm(a-b)/np.linalg.norm(a)
        worst=max(worst,e); wl2=max(wl2,l2); names.append(f'{nm}:{e:.1e}/{l2:.1e}')
        agree+=(np.sign(a)==np.sign(b)).sum(); tot+=a.size
    print(case,'loss rel',abs(l1-l0)/l0,'worst entry',f'{worst:.2e}','worst l2',f'{wl2:.2e}','sign agree',agree/tot)
    print('   ',' '.join(names))
