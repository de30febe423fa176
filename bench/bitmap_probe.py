"""Probe (GPU): the bitmap mode against the default (the blocks mode) and dense cuBLAS on the
Llama-2-7B MLP shapes, fp16, uniform masks, N = 1 / 4 / 16 / 64, and bert-base's MLP (90%) at
N = 128 / 1024; CUDA-graph medians with the weights rotated past L2 (bench.llm_bench helpers). Writes $OUT/bitmap_probe.csv.

    SWEEP_S=400 python -m bench.bitmap_probe
"""
import csv, os, sys, time, itertools
sys.path.insert(0, os.getcwd())
import torch
from dsl import Schedule
from bench.llm_bench import pruned_weight, copies, _sparse_kernels, _sparse_system, _time
from sparsert_triton.weights import as_sparse_weight

OUT = os.environ.get("OUT", "/tmp")
DEADLINE = time.time() + float(os.environ.get("SWEEP_S", "330"))

def main():
    f = open(os.path.join(OUT, "bitmap_probe.csv"), "w", newline="")
    wr = csv.writer(f)
    wr.writerow(["M", "K", "N", "sp", "system", "R", "T", "bn", "split", "dot", "warps", "us", "dense_us", "ratio", "err"])
    LLM = (1, 4, 16, 64)
    BERT = (128, 1024)   # bert-base's MLP at batch 1 and 8 (seq 128)
    for (M, K), sp, ns in [((11008, 4096), 0.5, LLM), ((11008, 4096), 0.9, LLM), ((3072, 768), 0.9, BERT),
                           ((11008, 4096), 0.7, LLM), ((768, 3072), 0.9, BERT), ((4096, 11008), 0.5, LLM),
                           ((4096, 11008), 0.9, LLM), ((4096, 11008), 0.7, LLM)]:
        W = pruned_weight(M, K, sp, "uniform", torch.float16, "cuda")
        Ws = [W] + [W.clone() for _ in range(copies(M * K * 2) - 1)]
        w = as_sparse_weight(W)
        for N in ns:
            if time.time() > DEADLINE:
                print("deadline"); return
            X = torch.randn(K, N, device="cuda", dtype=torch.float16)
            ref = W.double() @ X.double()
            dense = _time([lambda w=w: torch.matmul(w, X) for w in Ws])
            cfgs = [("default", Schedule()), ("bitmap", Schedule(mode="bitmap"))]
            shapes = {1: [(8, 256, 4), (32, 256, 8)], 4: [(8, 128, 4)],
                      16: [(32, 256, 4), (128, 128, 8)], 64: [(32, 64, 4)],
                      128: [(64, 64, 4, 64), (64, 64, 8, 128)], 1024: [(64, 64, 8, 128), (64, 32, 4, 128)]}[N]
            for R, T, nw, *bn in shapes:
                cfgs.append(("bitmap", Schedule(mode="bitmap", rows_per_program=R, chunk=T, num_warps=nw,
                                                **({"block_n": bn[0]} if bn else {}))))
            for name, s in cfgs:
                try:
                    ks = _sparse_kernels(w, s, M * K * 2)
                    us, cs, plan = _sparse_system(ks, X, ref, 1e-2)
                    row = [M, K, N, sp, name, plan.rows_per_program, plan.chunk, plan.block_n, plan.split_k, int(plan.use_dot), plan.num_warps,
                           f"{us:.2f}", f"{dense:.2f}", f"{dense / us:.3f}", ""]
                    del ks
                except Exception as e:
                    row = [M, K, N, sp, name, "", "", "", "", "", "", "", f"{dense:.2f}", "", f"ERR {type(e).__name__}: {str(e)[:200]}"]
                wr.writerow(row); f.flush(); print(*row, flush=True)
            torch.cuda.empty_cache()

if __name__ == "__main__":
    main()
