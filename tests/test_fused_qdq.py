"""The evaluation runs the PT2E quantized model with each quantize -> dequantize pair fused
(ethosu_build/pipeline/fused_qdq.py): the same numbers as torch.ao's decomposed ops, bit for
bit, including the sign of zero."""

from __future__ import annotations

import torch
from torch.ao.quantization.fx import _decomposed  # noqa: F401  (registers quantized_decomposed)

from ethosu_build.pipeline.export import load_program
from ethosu_build.pipeline.fused_qdq import fuse, quantize_dequantize, runnable

Q = torch.ops.quantized_decomposed.quantize_per_tensor.default
DQ = torch.ops.quantized_decomposed.dequantize_per_tensor.default


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def test_the_fused_pair_gives_the_decomposed_ops_bits():
    g = torch.Generator().manual_seed(0)
    for trial in range(300):
        scale = float(torch.empty(1).uniform_(-12, 2, generator=g).exp2().float())  # a float32 scale, as observers give
        for qmin, qmax, dtype in ((-128, 127, torch.int8), (-32768, 32767, torch.int16)):
            zp = 0 if trial % 3 == 0 else int(torch.randint(qmin, qmax + 1, (1,), generator=g))
            x = torch.randn(2048, generator=g) * scale * (qmax - qmin) / 3  # some clipped on both sides
            x[:64] = (torch.randint(qmin, qmax, (64,), generator=g).float() + 0.5) * scale  # ties: half to even
            x[64:128] = -torch.rand(64, generator=g) * scale * 0.49  # rounds to -0.0 before the zero point
            expected = DQ(Q(x, scale, zp, qmin, qmax, dtype), scale, zp, qmin, qmax, dtype)
            assert torch.equal(_bits(quantize_dequantize(x, scale, zp, qmin, qmax, dtype)), _bits(expected))


def test_half_inputs_keep_the_decomposed_path():
    x = torch.randn(64).half()
    expected = DQ(Q(x, 0.05, 3, -128, 127, torch.int8), 0.05, 3, -128, 127, torch.int8)
    assert torch.equal(quantize_dequantize(x, 0.05, 3, -128, 127, torch.int8), expected)


def test_only_matching_pairs_fuse_and_a_shared_quantize_stays():
    class M(torch.nn.Module):
        def forward(self, x):
            q = Q(x, 0.1, 0, -128, 127, torch.int8)
            same = DQ(q, 0.1, 0, -128, 127, torch.int8)
            other = DQ(q, 0.2, 0, -128, 127, torch.int8)  # another scale: not the pair's inverse
            return same + other

    gm = torch.fx.symbolic_trace(M())
    x = torch.randn(8, 8)
    expected = gm(x)
    assert fuse(gm) == 1
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert quantize_dequantize in targets and Q in targets and DQ in targets
    assert torch.equal(_bits(gm(x)), _bits(expected))


def test_a_built_quantized_program_computes_the_same_bits(digits_store):
    programs = sorted(digits_store.glob("cache/*/*/batched.pt2"))
    assert programs, "the digits build caches its batch-dynamic quantized program"
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 16
    for path in programs:
        program = load_program(path.read_bytes())
        module = runnable(program)
        fused = sum(1 for n in module.graph.nodes if n.target is quantize_dequantize)
        assert fused > 0
        with torch.no_grad():
            assert torch.equal(_bits(module(x)), _bits(program.module()(x)))
