"""The Gradio page of ``hmfss app``: model, support set (brush or mask file), queries, results.

Only layout and wiring live here; the work is done by :mod:`hmfss.app.session`. Bad input
becomes a message in the page (``gr.Error``), and the app keeps running.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import gradio as gr

from hmfss.app.models import NO_MODEL, ModelChoice, default_checkpoint, open_model
from hmfss.app.session import (Pending, add_example, check_image, check_mask_file, pending_text, queries_text,
                               query_paths, segment_queries, summary)
from hmfss.errors import HmfssError, out_of_memory

ARCHS = ["(from checkpoint)", "hsnet", "vat", "asnet"]
BACKBONES = ["(from checkpoint)", "resnet50", "resnet101", "vgg16", "efficientnet-lite0"]
BENCHMARKS = ["(unknown)", "pascal", "coco", "fss"]


def _shown(fn: Callable) -> Callable:
    """Turn HmfssError (and unexpected errors) into a message on the page."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HmfssError as exc:
            raise gr.Error(str(exc)) from None
        except Exception as exc:  # a failing step must not take the app down
            raise gr.Error(out_of_memory(exc) or f"{type(exc).__name__}: {exc}") from None
    return wrapper


def _pick(value: str | None) -> str | None:
    return None if not value or value.startswith("(") else value


def _model_section(start: str):
    """Checkpoint path or upload, the original checkpoints' arch/backbone/benchmark, load button."""
    with gr.Accordion("1. Model", open=True):
        with gr.Row():
            path = gr.Textbox(start, label="checkpoint path on this machine", elem_id="ckpt_path", scale=3)
            upload = gr.File(label="or upload a checkpoint", file_types=[".pt", ".pth", ".ckpt", ".tar"],
                             elem_id="ckpt_upload", scale=2)
        with gr.Row():
            arch = gr.Dropdown(ARCHS, value=ARCHS[0], label="arch (original checkpoints)")
            backbone = gr.Dropdown(BACKBONES, value=BACKBONES[0], label="backbone (original checkpoints)")
            benchmark = gr.Dropdown(BENCHMARKS, value=BENCHMARKS[0], label="benchmark (original VAT)")
        load_btn = gr.Button("Load model", elem_id="load_model")
        info = gr.Markdown("" if start else NO_MODEL, elem_id="model_info")
    return path, upload, arch, backbone, benchmark, load_btn, info


def _support_section():
    """Class name, support image and mask uploads, the mask editor, add / clear buttons."""
    with gr.Accordion("2. Support set", open=True):
        with gr.Row(equal_height=True):
            name = gr.Textbox(label="class name", elem_id="class_name", scale=2)
            image = gr.UploadButton("Upload a support image", file_types=["image"], elem_id="support_image")
            mask = gr.UploadButton("Upload its mask (optional: or draw below)", file_types=["image"],
                                   elem_id="support_mask")
        pending_info = gr.Markdown(pending_text(Pending()), elem_id="pending_info")
        editor = gr.ImageEditor(label="draw the object (brush; eraser to fix)", type="numpy",
                                sources=(), transforms=(), elem_id="support_editor",
                                brush=gr.Brush(colors=["#ff2020"], color_mode="fixed", default_size="auto"),
                                eraser=gr.Eraser(), height=420)
        with gr.Row():
            add_btn = gr.Button("Add example", elem_id="add_example")
            clear_btn = gr.Button("Clear support set", elem_id="clear_support")
        support_info = gr.Markdown(summary([]), elem_id="support_info")
    return name, image, mask, pending_info, editor, add_btn, clear_btn, support_info


def _query_section():
    """Query uploads or a folder, and the Segment button."""
    with gr.Accordion("3. Queries", open=True):
        with gr.Row():
            queries = gr.File(label="query images", file_count="multiple", file_types=["image"],
                              elem_id="queries", scale=3)
            folder = gr.Textbox(label="or a folder on this machine", elem_id="query_folder", scale=2)
        query_info = gr.Markdown(queries_text(None), elem_id="query_info")
        run_btn = gr.Button("Segment", variant="primary", elem_id="segment")
    return queries, folder, query_info, run_btn


def build_app(device: str, checkpoint: str | None = None) -> gr.Blocks:
    """The page; ``checkpoint`` pre-fills the model path (default: ``hmfss demo``'s)."""
    start = checkpoint or (str(default_checkpoint()) if default_checkpoint() else "")

    @_shown
    def load(path: str, upload: str | None, arch: str, backbone: str, benchmark: str):
        choice = ModelChoice(upload or path.strip(), _pick(arch), _pick(backbone), _pick(benchmark))
        model, text = open_model(choice, device)
        return model, text

    @_shown
    def choose_image(upload: str | None):
        pending = Pending(image=check_image(upload))
        return pending, pending_text(pending), pending.image

    @_shown
    def choose_mask(pending: Pending, upload: str | None):
        if not pending.image:
            raise HmfssError("upload the support image first, then its mask")
        pending = Pending(pending.image, check_mask_file(upload))
        return pending, pending_text(pending)

    @_shown
    def add(classes, model, name, pending: Pending, editor):
        if model is None:
            raise HmfssError("load a model first (its input size decides whether a small mask survives)")
        classes = add_example(classes, name, pending.image, pending.mask, editor, model.config.img_size)
        return classes, summary(classes), Pending(), pending_text(Pending(), added=pending), None

    @_shown
    def run(model, classes, files, folder, progress=gr.Progress()):
        paths = query_paths(files, folder)
        progress((0, len(paths)), desc="segmenting", unit="images")
        result = segment_queries(model, classes, paths, lambda done, total: progress((done, total), unit="images"))
        return result.gallery, result.table + f"\n\nTotal {result.seconds:.1f} s.", str(result.zip_path)

    with gr.Blocks(title="hmfss: few-shot segmentation") as page:
        model_state, classes_state, pending_state = gr.State(None), gr.State([]), gr.State(Pending())
        gr.Markdown("# hmfss: segment your photos from a few annotated examples\n"
                    "1. load a model; 2. for each class give 1-5 images and draw (or upload) the object's mask; "
                    "3. add query images and press **Segment**.")
        path, upload, arch, backbone, benchmark, load_btn, info = _model_section(start)
        name, image, mask, pending_info, editor, add_btn, clear_btn, support_info = _support_section()
        queries, folder, query_info, run_btn = _query_section()
        gallery = gr.Gallery(label="results", columns=3, elem_id="gallery", height="auto")
        table = gr.Markdown(elem_id="table")
        download = gr.DownloadButton("Download all results (zip)", elem_id="download")

        load_btn.click(load, [path, upload, arch, backbone, benchmark], [model_state, info])
        # Uploads go to server-side state, acknowledged in #pending_info: no input is cleared
        # behind the user's back, so a new upload never races the clearing of the last one.
        image.upload(choose_image, image, [pending_state, pending_info, editor])
        mask.upload(choose_mask, [pending_state, mask], [pending_state, pending_info])
        add_btn.click(add, [classes_state, model_state, name, pending_state, editor],
                      [classes_state, support_info, pending_state, pending_info, editor])
        queries.change(queries_text, queries, query_info)
        clear_btn.click(lambda: ([], summary([])), None, [classes_state, support_info])
        run_btn.click(run, [model_state, classes_state, queries, folder], [gallery, table, download])
        if start:
            page.load(load, [path, upload, arch, backbone, benchmark], [model_state, info])
    return page


def serve(host: str, port: int | None, share: bool, device: str, checkpoint: str | None) -> None:
    """Start the app (blocks until interrupted)."""
    build_app(device, checkpoint).queue().launch(server_name=host, server_port=port, share=share)
