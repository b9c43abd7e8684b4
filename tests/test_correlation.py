import torch

from hmfss.correlation import EPS, cosine_correlation, hypercorrelation
from hmfss.fast.correlation import query_major_hypercorrelation


def _naive(q, s):
    b, c, hq, wq = q.shape
    hs, ws = s.shape[-2:]
    out = torch.zeros(b, hq, wq, hs, ws)
    for i in range(hq):
        for j in range(wq):
            for k in range(hs):
                for l in range(ws):
                    u, v = q[:, :, i, j], s[:, :, k, l]
                    cos = (u * v).sum(1) / ((u.norm(dim=1) + EPS) * (v.norm(dim=1) + EPS))
                    out[:, i, j, k, l] = cos.clamp(min=0)
    return out


def test_cosine_correlation_matches_naive_definition():
    q, s = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 2, 3)
    corr = cosine_correlation(q, s)
    assert corr.shape == (2, 3, 4, 2, 3)
    torch.testing.assert_close(corr, _naive(q, s))
    assert corr.min() >= 0 and corr.max() <= 1


def test_eps_is_added_to_the_norm():
    q = torch.full((1, 1, 1, 1), 1e-5)
    s = torch.ones(1, 1, 1, 1)
    # (1e-5 * 1) / ((1e-5 + 1e-5) * (1 + 1e-5)) ~= 0.5, far from the clamp-style 1.0
    assert abs(cosine_correlation(q, s).item() - 0.5 / (1 + 1e-5)) < 1e-6


def test_hypercorrelation_levels_deepest_first_with_mixed_channels():
    sizes = [(4, 8), (5, 8), (6, 4), (6, 4), (8, 2), (9, 2)]  # (channels, spatial)
    qs = [torch.randn(2, c, h, h) for c, h in sizes]
    ss = [torch.randn(2, c, h, h) for c, h in sizes]
    pyr = hypercorrelation(qs, ss, levels=(2, 2, 2))
    assert [tuple(p.shape) for p in pyr] == [(2, 2, 2, 2, 2, 2), (2, 2, 4, 4, 4, 4), (2, 2, 8, 8, 8, 8)]
    torch.testing.assert_close(pyr[0][:, 1], _naive(qs[5], ss[5]))
    torch.testing.assert_close(pyr[2][:, 0], _naive(qs[0], ss[0]))


def test_one_query_broadcasts_over_k_supports():
    q = [torch.randn(2, 1, 3, 4, 4) for _ in range(3)]
    s = [torch.randn(2, 5, 3, 4, 4) for _ in range(3)]
    pyr = hypercorrelation(q, s, levels=(1, 1, 1))
    assert pyr[0].shape == (2, 5, 1, 4, 4, 4, 4)
    torch.testing.assert_close(pyr[0][1, 3, 0], _naive(q[2][1], s[2][1, 3:4])[0])


def test_query_major_layout_has_the_same_values_and_query_major_memory():
    torch.manual_seed(1)
    sizes = [(4, 3), (5, 3), (6, 5), (3, 5), (8, 6), (2, 6)]  # per-level channel counts differ
    qs = [torch.randn(2, 1, c, h, h) for c, h in sizes]
    ss = [torch.randn(2, 3, c, h + 1, h) for c, h in sizes]
    plain = hypercorrelation(qs, ss, levels=(2, 2, 2))
    fast = query_major_hypercorrelation(qs, ss, levels=(2, 2, 2))
    for a, b in zip(plain, fast):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a)
        # memory is (B, K, hq, wq, L, hs, ws): the permuted view is contiguous
        assert b.permute(0, 1, 3, 4, 2, 5, 6).is_contiguous()
    torch.testing.assert_close(fast[2][1, 2, 1], _naive(qs[1][1], ss[1][1, 2:3])[0])


def test_query_major_buffers_are_reused_until_the_shape_changes():
    qs = [torch.randn(1, 1, 3, 4, 4) for _ in range(3)]
    ss = [torch.randn(1, 1, 3, 4, 4) for _ in range(3)]
    buffers: dict = {}
    first = query_major_hypercorrelation(qs, ss, (1, 1, 1), buffers=buffers)
    expected = [c.clone() for c in first]
    again = query_major_hypercorrelation(qs, ss, (1, 1, 1), buffers=buffers)
    assert [a.data_ptr() for a in again] == [f.data_ptr() for f in first]
    for a, e in zip(again, expected):
        torch.testing.assert_close(a, e)
    bigger = query_major_hypercorrelation([q.expand(2, -1, -1, -1, -1) for q in qs], ss, (1, 1, 1), buffers=buffers)
    assert bigger[0].shape[0] == 2 and bigger[0].data_ptr() != first[0].data_ptr()
    assert buffers[0] is not None and buffers[0].shape[0] == 2


def test_buffers_made_under_inference_mode_are_replaced_outside_it():
    """A model first run under torch.inference_mode() and then under torch.no_grad() (as a
    recorded CUDA graph runs it) cannot write into the first run's buffers: new ones are made,
    and kept for both modes."""
    qs = [torch.randn(1, 1, 3, 4, 4) for _ in range(3)]
    ss = [torch.randn(1, 1, 3, 4, 4) for _ in range(3)]
    buffers: dict = {}
    with torch.inference_mode():
        first = [c.clone() for c in query_major_hypercorrelation(qs, ss, (1, 1, 1), buffers=buffers)]
    assert buffers[0].is_inference()
    with torch.no_grad():
        plain = query_major_hypercorrelation(qs, ss, (1, 1, 1), buffers=buffers)
    assert not buffers[0].is_inference()
    for p, f in zip(plain, first):
        assert torch.equal(p, f)
    kept = buffers[0].data_ptr()
    with torch.inference_mode():
        query_major_hypercorrelation(qs, ss, (1, 1, 1), buffers=buffers)
    assert buffers[0].data_ptr() == kept
