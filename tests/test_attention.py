"""Attention kernels (`model.attention`) against the plain reference, and the error where xformers cannot run."""

import pytest
import torch

from study.errors import UserError
from study.model.layers import attention, xformers_problem
from study.model.llm import attention_mask
from study.model.unified import UnifiedModel
from study.train import train
from tests.conftest import tiny_config

TOL = 1e-5  # fp32, values of order 1

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
KERNELS = [pytest.param("sdpa"),
           pytest.param("xformers", marks=pytest.mark.skipif(xformers_problem(DEVICE) is not None,
                                                             reason=f"xformers: {xformers_problem(DEVICE)}"))]


def _mask(kind: str, num_visual: int, length: int) -> tuple[torch.Tensor | None, bool]:
    """(mask, causal) as the models pass them: causal text, bidirectional image, or the unmasked encoder."""
    if kind == "causal":
        return None, True
    if kind == "bidirectional":
        return attention_mask(num_visual, length, "bidirectional", DEVICE), False
    return None, False


@pytest.mark.parametrize("kind", ["causal", "bidirectional", "none"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_matches_the_reference(kernel, kind):
    gen = torch.Generator().manual_seed(0)
    for length in (5, 13, 24):  # lengths that are and are not multiples of 8
        q, k, v = (torch.randn(2, 3, length, 16, generator=gen).to(DEVICE) for _ in range(3))
        num_visual = int(torch.randint(1, length, (1,), generator=gen))
        mask, causal = _mask(kind, num_visual, length)
        expected = attention(q, k, v, mask, causal, "reference")
        got = attention(q, k, v, mask, causal, kernel)
        torch.testing.assert_close(got, expected, atol=TOL, rtol=TOL)
        if kind == "bidirectional":  # the image really is bidirectional: the first token sees the last visual one
            assert not torch.allclose(expected[:, :, 0], attention(q, k, v, None, True, "reference")[:, :, 0])


@pytest.mark.parametrize("visual_attention", ["causal", "bidirectional"])
def test_model_kernels_agree(visual_attention):
    models = {}
    for kernel in ("sdpa", "reference"):
        torch.manual_seed(0)
        models[kernel] = UnifiedModel(tiny_config(f"model.attention={kernel}",
                                                  f"model.visual_attention={visual_attention}")).eval()
    images, tokens = torch.rand(3, 3, 16, 16), torch.randint(0, 10, (3, 6))
    hidden = {}
    with torch.no_grad():
        for kernel, model in models.items():
            _, embeds = model.encode(images)
            hidden[kernel], _ = model(embeds, tokens)
    torch.testing.assert_close(hidden["sdpa"], hidden["reference"], atol=TOL, rtol=TOL)


@pytest.mark.skipif(xformers_problem(DEVICE) is None, reason="xformers runs here")
def test_xformers_where_it_cannot_run_is_a_one_line_error_before_anything_is_written(tmp_path):
    with pytest.raises(UserError) as raised:
        train(tiny_config("model.attention=xformers"), tmp_path / "run", quiet=True)
    message = str(raised.value)
    assert "model.attention" in message and "use sdpa or reference" in message and "\n" not in message
    assert not (tmp_path / "run").exists()
