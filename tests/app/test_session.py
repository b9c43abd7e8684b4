"""The app's steps without a browser: output names and the acknowledgement of each upload."""

from pathlib import Path

import pytest

from hmfss.app.session import Pending, check_image, check_mask_file, pending_text, queries_text
from hmfss.data.io import unique_stems
from hmfss.errors import HmfssError


def test_repeated_stems_get_a_counter_in_order():
    paths = [Path("a/x.png"), Path("b/x.jpg"), Path("y.png"), Path("c/x.png")]
    assert unique_stems(paths) == ["x", "x_1", "y", "x_2"]


def test_pending_text_names_the_uploaded_files(app_files):
    image = app_files["support"] / "cat" / "images" / "cat1.png"
    mask = app_files["support"] / "cat" / "masks" / "cat1.png"
    assert pending_text(Pending()) == "Next example: upload a support image."
    text = pending_text(Pending(check_image(str(image))))
    assert "support image cat1.png (80x60 px)" in text and "draw the mask below" in text
    assert "mask file cat1.png" in pending_text(Pending(str(image), check_mask_file(str(mask))))
    assert pending_text(Pending(), added=Pending(str(image))) == "Added cat1.png (drawn mask). Upload the next support image."
    assert queries_text(None) == "No query image uploaded."
    assert queries_text(["/t/q0.png", "/t/q1.png"]) == "2 query image(s) uploaded: q0.png, q1.png."


def test_an_unreadable_upload_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(HmfssError, match="bad.png"):
        check_image(str(bad))
    with pytest.raises(HmfssError, match="bad.png"):
        check_mask_file(str(bad))
    with pytest.raises(HmfssError, match="no support image"):
        check_image(None)


def test_a_failing_step_becomes_a_message_on_the_page():
    gr = pytest.importorskip("gradio")
    import torch
    from hmfss.app.ui import _shown

    def too_large():
        torch.empty(2**62, dtype=torch.uint8)

    def refused():
        raise HmfssError("query.png: cannot read")

    for step, message in ((too_large, "out of memory (could not allocate 4611686018.4 GB)"),
                          (refused, "query.png: cannot read")):
        with pytest.raises(gr.Error) as raised:
            _shown(step)()
        assert raised.value.message == message
