import itertools

import pytest
import torch
import torch.nn.functional as F

from hmfss.fast import channels_last
from hmfss.fast.channels_last import group_norm_cl, row_blocks
from hmfss.heads.conv4d import CenterPivotConv4d, plane_conv_matrix
from hmfss.heads.volume import resize_query_dims
from helpers import plain_and_deterministic


def dense_conv4d(x, weight, bias, stride):
    """Naive dense 4D convolution: stride (1, 1, s, s), zero padding k//2 on all four dims."""
    n, c, a, b, hs, ws = x.shape
    k = weight.shape[-1]
    p = k // 2
    xp = F.pad(x, (p,) * 8)
    oh, ow = (hs + 2 * p - k) // stride + 1, (ws + 2 * p - k) // stride + 1
    out = torch.zeros(n, weight.shape[0], a, b, oh, ow, dtype=x.dtype)
    for i, j, m, l in itertools.product(range(k), repeat=4):
        patch = xp[:, :, i:i + a, j:j + b, m:m + (oh - 1) * stride + 1:stride, l:l + (ow - 1) * stride + 1:stride]
        out += torch.einsum("ncabhw,oc->noabhw", patch, weight[:, :, i, j, m, l])
    return out + bias.view(1, -1, 1, 1, 1, 1)


@pytest.mark.parametrize(
    "k,s,shape",
    [(3, 1, (5, 4, 6, 5)), (3, 2, (4, 5, 7, 6)), (5, 4, (3, 5, 9, 7)), (5, 2, (4, 3, 5, 8)), (1, 1, (3, 3, 3, 3)),
     # support planes no larger than the kernel: the dense-matrix path
     (3, 1, (5, 4, 2, 2)), (3, 2, (4, 5, 3, 2)), (5, 4, (3, 3, 4, 5)), (3, 1, (3, 3, 1, 3))],
)
def test_center_pivot_equals_dense_4d_conv_with_two_centre_planes(k, s, shape):
    torch.manual_seed(k * 10 + s)
    conv = CenterPivotConv4d(3, 4, k, s).double()
    x = torch.randn(2, 3, *shape, dtype=torch.double)
    c = k // 2
    w4 = torch.zeros(4, 3, k, k, k, k, dtype=torch.double)
    w4[:, :, :, :, c, c] += conv.conv1.weight.detach()  # query plane at the support centre
    w4[:, :, c, c, :, :] += conv.conv2.weight.detach()  # support plane at the query centre
    expected = dense_conv4d(x, w4, (conv.conv1.bias + conv.conv2.bias).detach(), s)
    out = conv(x)
    assert out.shape == expected.shape
    assert out.shape[-2:] == (-(-shape[2] // s), -(-shape[3] // s))
    torch.testing.assert_close(out, expected)


def test_no_cached_index_works_across_sizes():
    conv = CenterPivotConv4d(2, 3, 3, 2)
    assert conv(torch.randn(1, 2, 4, 4, 9, 9)).shape == (1, 3, 4, 4, 5, 5)
    assert conv(torch.randn(1, 2, 3, 5, 6, 4)).shape == (1, 3, 3, 5, 3, 2)


def test_resize_query_dims_interpolates_each_support_position():
    x = torch.randn(2, 3, 4, 4, 2, 3)
    out = resize_query_dims(x, (7, 7))
    expected = F.interpolate(x[:, :, :, :, 1, 2], (7, 7), mode="bilinear", align_corners=True)
    torch.testing.assert_close(out[:, :, :, :, 1, 2], expected)
    assert out.shape == (2, 3, 7, 7, 2, 3)


def test_query_major_first_layer_equals_the_channels_last_path_with_gradients():
    torch.manual_seed(3)
    conv = CenterPivotConv4d(3, 4, 5, 4).double()
    memory = torch.randn(2, 6, 5, 3, 9, 7, dtype=torch.double, requires_grad=True)  # (N, Hq, Wq, C, Hs, Ws)
    logical = memory.permute(0, 3, 1, 2, 4, 5)
    expected = conv(logical)  # (N, Cout, Hq, Wq, Hs', Ws')
    out = conv.forward_query_major(memory)
    assert out.is_contiguous()
    torch.testing.assert_close(out, expected.permute(0, 2, 3, 4, 5, 1))
    grads = torch.autograd.grad(out.square().sum(), [memory, conv.conv1.weight, conv.conv2.weight])
    ref = torch.autograd.grad(expected.square().sum(), [memory, conv.conv1.weight, conv.conv2.weight])
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r)
    with torch.no_grad():  # the no-autograd branch writes into a fresh contiguous tensor
        torch.testing.assert_close(conv.forward_query_major(memory), out.detach())


def test_group_norm_cl_is_accurate_on_large_offset_groups():
    # ~10^5 positions per group with mean 50 x std: a one-pass E[x^2]-E[x]^2 or one long
    # float32 sum loses ~3 digits here; the reference is float64 GroupNorm on (N, C, ...)
    torch.manual_seed(4)
    x = torch.randn(1, 20, 20, 13, 13, 8) + 50.0
    norm = torch.nn.GroupNorm(4, 8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    ref = torch.nn.functional.group_norm(x.double().movedim(-1, 1), 4, norm.weight.double(), norm.bias.double(), norm.eps)
    out = group_norm_cl(x, norm)
    assert (out.double() - ref.movedim(1, -1)).abs().max() < 2e-5


def test_row_blocks_cover_the_outer_dim_once_in_blocks_of_about_the_size_asked():
    x = torch.empty(2, 13, 11, 8)  # a row of all samples: 2 * 11 * 8 * 4 = 704 bytes
    assert row_blocks(x, 1) == [slice(i, i + 1) for i in range(13)]
    assert row_blocks(x, 5 * 704) == [slice(0, 5), slice(5, 10), slice(10, 13)]
    assert row_blocks(x, 1 << 40) == [slice(0, 13)]
    assert row_blocks(torch.empty(2, 13, 11, 8, device="meta"), 1) == [slice(0, 13)]  # no CPU cache


def test_group_norm_cl_is_one_block_under_torch_compile(compiled_graphs, monkeypatch):
    # traced, a loop over row blocks would unroll into a graph of hundreds of operations
    monkeypatch.setattr(channels_last, "BLOCK_BYTES", 1)  # eagerly: one block per row (13 rows)
    norm = torch.nn.GroupNorm(2, 8)
    x = torch.randn(2, 13, 11, 8, requires_grad=True)
    compiled = torch.compile(group_norm_cl, backend=lambda graph, inputs: compiled_graphs.append(graph) or graph.forward)
    torch.testing.assert_close(compiled(x, norm), group_norm_cl(x, norm))
    (graph,) = compiled_graphs
    subs = [n for module in graph.modules() if hasattr(module, "graph") for n in module.graph.nodes
            if n.op == "call_function" and getattr(n.target, "__name__", "") == "sub"]
    assert len(subs) == 4  # centring: twice in the forward pass (statistics, output), twice backward


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("block_bytes", [1, 5 * 704, 1 << 40])  # one row, uneven blocks, one block
def test_group_norm_cl_is_the_same_whatever_the_block_size(monkeypatch, block_bytes, dtype):
    # statistics, output and gradients go block by block through the cache on the CPU (bf16
    # maps converted block by block too); each element's arithmetic and each row's sum are the
    # same whatever the blocks
    torch.manual_seed(7)
    x = (torch.randn(2, 13, 11, 8) * 3 + 5).to(dtype).requires_grad_()
    norm = torch.nn.GroupNorm(2, 8)
    weights = torch.randn(2, 13, 11, 8).to(dtype)

    def run():
        out = group_norm_cl(x, norm)
        return [out.detach(), *torch.autograd.grad((out * weights).sum(), [x, norm.weight, norm.bias])]

    whole = run()
    monkeypatch.setattr(channels_last, "BLOCK_BYTES", block_bytes)
    for got, want in zip(run(), whole):
        assert torch.equal(got, want)
    if dtype != torch.float32:
        return  # bf16 against float32 GroupNorm: test_group_norm_cl_of_bfloat16_maps_...
    ref = norm.double()(x.double().movedim(-1, 1)).movedim(1, -1)
    truth = torch.autograd.grad((ref * weights.double()).sum(), [x, norm.weight, norm.bias])
    norm.float()
    assert (whole[0].double() - ref).abs().max() < 2e-6
    for got, want in zip(whole[1:], truth):
        assert (got.double() - want).abs().max() < 1e-5 * want.abs().max()


def test_group_norm_cl_gradients_match_group_norm():
    torch.manual_seed(5)
    x = torch.randn(2, 3, 4, 5, 2, 8, dtype=torch.double, requires_grad=True)
    norm = torch.nn.GroupNorm(4, 8).double()
    out = group_norm_cl(x, norm)
    ref = norm(x.movedim(-1, 1)).movedim(1, -1)
    torch.testing.assert_close(out, ref)
    weights = torch.randn_like(out)
    got = torch.autograd.grad((out * weights).sum(), [x, norm.weight, norm.bias])
    want = torch.autograd.grad((ref * weights).sum(), [x, norm.weight, norm.bias])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    with torch.no_grad():  # the branch without autograd (in place)
        torch.testing.assert_close(group_norm_cl(x, norm), ref)
    frozen = torch.randn(2, 3, 4, 5, 2, 8, dtype=torch.double)  # grads for the norm's parameters only
    got = torch.autograd.grad((group_norm_cl(frozen, norm) * weights).sum(), [norm.weight, norm.bias])
    want = torch.autograd.grad((norm(frozen.movedim(-1, 1)).movedim(1, -1) * weights).sum(), [norm.weight, norm.bias])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_group_norm_cl_of_bfloat16_maps_computes_in_float32_with_the_analytic_backward():
    # under autocast the head's maps are bf16: statistics, output and gradients in float32
    # math (as GroupNorm on a float32 copy), the output and the input's gradient rounded to bf16
    torch.manual_seed(8)
    x = (torch.randn(2, 3, 4, 5, 2, 8) * 2 + 1).bfloat16().requires_grad_()
    norm = torch.nn.GroupNorm(4, 8)
    weights = torch.randn(2, 3, 4, 5, 2, 8)
    out = group_norm_cl(x, norm)
    assert out.dtype == torch.bfloat16 and "GroupNormCL" in out.grad_fn.name()  # no float32 copies
    got = torch.autograd.grad((out.float() * weights).sum(), [x, norm.weight, norm.bias])
    x32 = x.detach().float().requires_grad_()
    ref = norm(x32.movedim(-1, 1)).movedim(1, -1)
    want = torch.autograd.grad((ref.bfloat16().float() * weights).sum(), [x32, norm.weight, norm.bias])
    # within bf16's rounding (8 significant bits) of float32 GroupNorm
    assert ((out.float() - ref.detach()).abs() <= 2.0 ** -8 * ref.detach().abs() + 1e-6).all()
    assert got[0].dtype == torch.bfloat16
    torch.testing.assert_close(got[0].float(), want[0].bfloat16().float(), rtol=1e-2, atol=1e-2)
    for g, w in zip(got[1:], want[1:]):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_group_norm_cl_output_takes_an_in_place_relu_without_copying_its_gradient():
    # the 4D blocks run relu_ on GroupNorm's output: on a view of the function's result autograd
    # records CopySlices, which clones and zero-fills the whole gradient in the backward pass
    torch.manual_seed(6)
    x = torch.randn(2, 3, 4, 5, 2, 8, requires_grad=True)
    norm = torch.nn.GroupNorm(4, 8)
    out = torch.relu_(group_norm_cl(x, norm))
    assert out._base is None and out.shape == x.shape
    assert "CopySlices" not in out.grad_fn.name()
    ref = torch.relu(norm(x.movedim(-1, 1)).movedim(1, -1))
    weights = torch.randn_like(out)
    got = torch.autograd.grad((out * weights).sum(), [x, norm.weight, norm.bias])
    want = torch.autograd.grad((ref * weights).sum(), [x, norm.weight, norm.bias])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k,s,size", [(3, 1, (2, 2)), (3, 2, (3, 2)), (5, 4, (4, 5)), (3, 1, (4, 4))])
def test_plane_conv_matrix_equals_conv2d_with_gradients(k, s, size):
    torch.manual_seed(k + s)
    conv = torch.nn.Conv2d(3, 4, k, stride=s, padding=k // 2, bias=False).double()
    planes = torch.randn(6, 3, *size, dtype=torch.double)
    expected = conv(planes)
    dense = plane_conv_matrix(conv, *size)
    got = (planes.permute(0, 2, 3, 1).reshape(6, -1) @ dense).view(6, *expected.shape[-2:], 4).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, expected)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), conv.weight)
    (grad_got,) = torch.autograd.grad(got.square().sum(), conv.weight)
    torch.testing.assert_close(grad_got, grad_expected)


def test_plane_conv_matrix_gradient_is_the_same_in_every_run():
    """The weight gradient through the dense matrix sums each tap's blocks in a fixed order:
    on two threads it equals, bit for bit, the one PyTorch's deterministic mode computes (an
    advanced-index gather's backward adds with atomics there; training runs then differed from
    process to process)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1, bias=False)
    grad_out = torch.randn(2 * 2 * 128, 2 * 2 * 128)

    def weight_grad() -> torch.Tensor:
        (grad,) = torch.autograd.grad((plane_conv_matrix(conv, 2, 2) * grad_out).sum(), conv.weight)
        return grad

    for _ in range(3):
        grad, reference = plain_and_deterministic(weight_grad)
        assert torch.equal(grad, reference)
