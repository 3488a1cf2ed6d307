"""SO(2) edge convolution (ours, DeepH-2) vs the DeepH-E3-style e3nn tensor-product convolution, same edges.

    python benchmarks/bench_so2_vs_tp.py [--edges 20000] [--nodes 1000] [--channels 32] [--lmax 2 4 6] [--threads 2]

Both convolutions gather x[src], apply an edge-conditioned equivariant map with radial-MLP weights and index_add
into the destination nodes; the loss sum(out²) is backpropagated to every parameter and to x. Each (method, L)
runs in its own subprocess so the peak-memory rise (RSS high-water mark) is its own. Ours reuses per-graph Wigner-D
blocks (built once per graph and cached across layers and epochs), timed separately. Prints medians of 3 runs after
a warm-up, and the ratios TP / SO(2).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

RADIAL_BASIS = 8


def run_one(method: str, lmax: int, edges: int, nodes: int, channels: int, threads: int) -> dict:
    import torch
    from e3nn import o3

    from aiida_deeph.ml.models.layers import MLP
    from aiida_deeph.ml.models.so2 import SO2Convolution
    from aiida_deeph.ml.wigner import edge_wigner, rotate_from_edge_frame, rotate_to_edge_frame

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    size = (lmax + 1) ** 2
    src, dst = torch.randint(0, nodes, (edges,)), torch.randint(0, nodes, (edges,))
    vectors = torch.randn(edges, 3)
    radial = torch.randn(edges, RADIAL_BASIS)
    x = torch.randn(nodes, size, channels, requires_grad=True)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    wigner_seconds = 0.0
    if method == "so2":
        start = time.perf_counter()
        wigner = edge_wigner(vectors, lmax)  # once per graph
        wigner_seconds = time.perf_counter() - start
        conv = SO2Convolution(lmax, channels, channels, RADIAL_BASIS, 64)

        def step() -> torch.Tensor:
            local = rotate_to_edge_frame(x[src], wigner)
            message = rotate_from_edge_frame(conv(local, radial), wigner)
            return torch.zeros_like(x).index_add(0, dst, message)
    else:
        irreps = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])
        sh_irreps = o3.Irreps.spherical_harmonics(lmax)
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(irreps):
            for j, (_, ir_sh) in enumerate(sh_irreps):
                for ir_out in ir_in * ir_sh:
                    if ir_out.l <= lmax and ir_out in [ir for _, ir in irreps]:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        tp = o3.TensorProduct(irreps, sh_irreps, o3.Irreps(mid), instructions, shared_weights=False,
                              internal_weights=False)
        linear = o3.Linear(o3.Irreps(mid), irreps)
        mlp = MLP([RADIAL_BASIS, 64, tp.weight_numel])
        sh = o3.spherical_harmonics(sh_irreps, vectors, normalize=True)
        # e3nn wants irreps-major flat features: (N, Σ mul·(2l+1)) in channel-major blocks per l
        def to_flat(features: torch.Tensor) -> torch.Tensor:
            return torch.cat([features[:, l * l:(l + 1) ** 2].transpose(1, 2).flatten(1) for l in range(lmax + 1)], 1)

        def step() -> torch.Tensor:
            message = linear(tp(to_flat(x[src]), sh, mlp(radial)))
            return torch.zeros(nodes, message.shape[1]).index_add(0, dst, message)

    def timed() -> tuple[float, float]:
        start = time.perf_counter()
        out = step()
        forward = time.perf_counter() - start
        (out ** 2).sum().backward()
        return forward, time.perf_counter() - start

    timed()  # warm-up
    runs = [timed() for _ in range(3)]
    peak_gb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024**2
    return {"method": method, "lmax": lmax, "forward_s": statistics.median(r[0] for r in runs),
            "total_s": statistics.median(r[1] for r in runs), "wigner_s": wigner_seconds, "peak_gb": peak_gb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=20000)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--lmax", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600, help="per run; a slower run is reported as '>'")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "LMAX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(args.worker[0], int(args.worker[1]), args.edges, args.nodes, args.channels,
                                 args.threads)))
        return
    print(f"E = {args.edges} edges, N = {args.nodes} nodes, C = {args.channels} channels, {args.threads} threads, "
          "float32, forward + backward")
    print(f"{'L':>2} {'method':<14} {'fwd s':>8} {'fwd+bwd s':>10} {'Wigner s':>9} {'peak GB':>8}")
    for lmax in args.lmax:
        results = {}
        for method in ("so2", "tp"):
            command = [sys.executable, __file__, "--worker", method, str(lmax), "--edges", str(args.edges),
                       "--nodes", str(args.nodes), "--channels", str(args.channels), "--threads", str(args.threads)]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, check=True)
                results[method] = json.loads(done.stdout.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                results[method] = None
            label = "SO(2) (ours)" if method == "so2" else "e3nn uvu TP"
            r = results[method]
            if r is None:
                print(f"{lmax:>2} {label:<14} {'>' + str(int(args.timeout)):>8}")
            else:
                print(f"{lmax:>2} {label:<14} {r['forward_s']:>8.3f} {r['total_s']:>10.3f} {r['wigner_s']:>9.3f} "
                      f"{r['peak_gb']:>8.2f}")
        so2, tp = results["so2"], results["tp"]
        if so2 and tp:
            print(f"   ratio TP / SO(2): time ×{tp['total_s'] / so2['total_s']:.1f}, "
                  f"memory ×{tp['peak_gb'] / max(so2['peak_gb'], 1e-3):.1f}")
        elif so2:
            print(f"   ratio TP / SO(2): time > ×{args.timeout / so2['total_s']:.0f} (TP did not finish)")


if __name__ == "__main__":
    main()
