"""Evaluation media: per-joint traces of predicted vs demonstrated actions (PNG), and a video of
an episode with its camera frames beside the moving traces (MP4, H.264).

The traces show the demonstration (black), the actions the robot would execute (blue) and, faint,
every predicted chunk in full (what the policy planned beyond the frames it executes).

An episode's figure (titles, axes, every trace) is drawn once: the PNG is its trace panels, and
each video frame restores it, draws the moving artists (the cursor and the chunk in use, bold) and
pastes the camera frames, already scaled to their on-screen size, into their boxes. Camera frames
are decoded in one sequential pass per video and scaled by the decoder; decoding, drawing (and
conversion to YUV) and H.264 encoding run in three threads (one encoder: same file every run)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from queue import Empty, Queue

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.transforms import IdentityTransform  # noqa: E402

from vla_pipeline.errors import ValidationError  # noqa: E402
from vla_pipeline.eval.metrics import Executed, Predictions  # noqa: E402

GT_STYLE = {"color": "black", "lw": 1.2, "label": "demonstration"}
EXEC_STYLE = {"color": "tab:blue", "lw": 1.2, "label": "executed prediction"}
CHUNK_STYLE = {"color": "tab:blue", "lw": 0.6, "alpha": 0.25}
CURSOR_STYLE = {"color": "tab:red", "lw": 0.8}
CURRENT_STYLE = {"color": "tab:orange", "lw": 2.0}
VIDEO_FIGSIZE = (12, 4.8)  # inches at VIDEO_DPI: 960 x 384 pixels (H.264 time goes with the pixels)
VIDEO_DPI = 80  # the trace PNGs' resolution before they were cut from the video figure


def _joint_label(joint: str, units: dict[str, str]) -> str:
    return f"{joint} [{units[joint]}]" if joint in units else joint


def _draw_traces(axes, executed: Executed, chunks: Predictions) -> list:
    """The episode's lines on every joint's panel; returns the artists added."""
    steps = np.arange(chunks.pred.shape[1])
    added = []
    for d, ax in enumerate(axes):
        # every chunk as one collection (a Line2D per chunk and joint costs as much to draw as the rest)
        segments = [np.column_stack([chunks.frame[i] + steps[~chunks.pad[i]], chunks.pred[i, ~chunks.pad[i], d]])
                    for i in range(len(chunks.pred))]
        added.append(ax.add_collection(LineCollection(segments, colors=CHUNK_STYLE["color"],
                                                      linewidths=CHUNK_STYLE["lw"], alpha=CHUNK_STYLE["alpha"])))
        added += ax.plot(executed.frames, executed.target[:, d], **GT_STYLE)
        added += ax.plot(executed.frames, executed.pred[:, d], **EXEC_STYLE)
    return added


def _joint_grid(fig, spec, n: int):
    cols = min(3, n)
    rows = -(-n // cols)
    grid = spec.subgridspec(rows, cols, hspace=0.6, wspace=0.3)
    return [fig.add_subplot(grid[i // cols, i % cols]) for i in range(n)]


def _camera_boxes(fig, cells, shapes: dict[str, tuple[int, int]]) -> dict[str, tuple[slice, slice]]:
    """Each camera's frame fitted (aspect kept, centred) in its cell of ``cells`` below its name, as
    (rows, cols) of the picture; the names are drawn on the figure. No Axes: they cost as much to
    draw as a trace panel and would show nothing."""
    width, height = fig.bbox.width, fig.bbox.height
    label = 1.5 * 8 * fig.dpi / 72  # an 8-point name above the frame
    boxes = {}
    for i, (name, (h, w)) in enumerate(shapes.items()):
        cell = cells[i].get_position(fig)
        x0, x1, top, bottom = cell.x0 * width, cell.x1 * width, (1 - cell.y1) * height + label, (1 - cell.y0) * height
        scale = min((x1 - x0) / w, (bottom - top) / h)
        dw, dh = int(w * scale), int(h * scale)
        left, upper = int(round((x0 + x1 - dw) / 2)), int(round((top + bottom - dh) / 2))
        boxes[name] = (slice(upper, upper + dh), slice(left, left + dw))
        fig.text((left + dw / 2) / width, 1 - (upper - 2) / height, name, fontsize=8, ha="center", va="bottom")
    return boxes


def resize_frame(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 scaled to ``size`` = (h, w)."""
    if image.shape[:2] == tuple(size):
        return image
    from PIL import Image

    h, w = size
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.Resampling.BILINEAR,
                                                                            reducing_gap=2.0))


class EpisodeFigure:
    """The figure of an episode: the cameras (if any) beside a panel per joint with the
    demonstration, the executed prediction and every predicted chunk (faint). ``show`` draws an
    episode once; ``save_traces`` then writes its trace panels as a PNG, ``render`` the video's
    pictures (the same figure with the camera frames, a cursor at the frame and the chunk in use
    drawn bold). One figure serves every episode (building the axes costs as much as drawing them);
    an episode looks the same whatever was shown before it.

    ``camera_shapes`` (camera name -> (h, w) of its frames) lays out the camera boxes (aspect
    kept); ``sizes`` then says each camera's on-screen (h, w), the size to decode its frames at.
    Use as a context manager (it holds a matplotlib figure)."""

    def __init__(self, camera_shapes: dict[str, tuple[int, int]], joints: list[str], units: dict[str, str]):
        rows = -(-len(joints) // 3)
        width = VIDEO_FIGSIZE[0] if camera_shapes else VIDEO_FIGSIZE[0] * 3 / 4
        self.fig = fig = plt.figure(figsize=(width, max(VIDEO_FIGSIZE[1], 2.2 * rows + 0.4)), dpi=VIDEO_DPI)
        margins = {"top": 0.86, "bottom": 0.1, "right": 0.98}
        if camera_shapes:
            outer = fig.add_gridspec(1, 2, width_ratios=[1, 3], wspace=0.12, left=0.01, **margins)
            self.boxes = _camera_boxes(fig, outer[0].subgridspec(len(camera_shapes), 1, hspace=0.05), camera_shapes)
            traces = outer[1]
            first_column = int(round(outer[0].get_position(fig).x1 * fig.bbox.width))
        else:
            self.boxes = {}
            traces = fig.add_gridspec(1, 1, left=0.07, **margins)[0]
            first_column = 0
        # the PNG: everything right of the cameras (the gap between holds the first panels' tick labels)
        self.traces_box = (slice(None), slice(first_column, None))
        self.sizes = {name: (r.stop - r.start, c.stop - c.start) for name, (r, c) in self.boxes.items()}
        self.axes = _joint_grid(fig, traces, len(joints))
        for ax, joint in zip(self.axes, joints, strict=True):
            # placed, not laid out: matplotlib would measure every tick label at every draw to place them
            ax.set_title(_joint_label(joint, units), fontsize=8, y=1.0)
            ax.tick_params(labelsize=7)
            ax.locator_params(nbins=4)  # fewer tick labels: text is most of the drawing time
        for ax in self.axes[-min(3, len(joints)):]:
            ax.annotate("frame", (0.5, 0.0), xycoords="axes fraction", xytext=(0, -17), textcoords="offset points",
                        ha="center", va="top", fontsize=7)
        left = min(ax.get_position().x0 for ax in self.axes)
        right = max(ax.get_position().x1 for ax in self.axes)
        self.heading = fig.text((left + right) / 2, 0.98, "", fontsize=9, ha="center", va="top")
        # the moving artists of every panel as one collection in pixels: the cursor, then the chunk in use
        n = len(self.axes)
        self.overlay = LineCollection(
            [], transform=IdentityTransform(), animated=True, capstyle="projecting", joinstyle="round",
            colors=[CURSOR_STYLE["color"]] * n + [CURRENT_STYLE["color"]] * n,
            linewidths=[CURSOR_STYLE["lw"]] * n + [CURRENT_STYLE["lw"]] * n)
        fig.add_artist(self.overlay)
        self.chunks: Predictions | None = None
        self._shown: list = []  # the artists of the episode shown
        width_px, height_px = int(round(fig.bbox.width)), int(round(fig.bbox.height))
        self.shape = (height_px // 2 * 2, width_px // 2 * 2)  # H.264 wants even sizes

    def __enter__(self) -> EpisodeFigure:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        plt.close(self.fig)

    def show(self, executed: Executed, chunks: Predictions, title: str) -> EpisodeFigure:
        """Draw this episode's traces and title in place of the previous episode's, once."""
        for artist in self._shown:
            artist.remove()
        for ax in self.axes:
            ax.relim()  # nothing left: the limits come from this episode alone
        self.chunks = chunks
        self._shown = _draw_traces(self.axes, executed, chunks)
        self._shown.append(self.axes[0].legend(fontsize=7, loc="best"))
        self.heading.set_text(title)
        fig = self.fig
        fig.canvas.draw()  # everything but the moving artists (the axes limits are fixed from here)
        self.background = fig.canvas.copy_from_bbox(fig.bbox)
        return self

    def save_traces(self, out: Path) -> Path:
        """The trace panels (title and legend included; no cameras, cursor or bold chunk) as a PNG."""
        from PIL import Image

        self.fig.canvas.restore_region(self.background)
        rows, cols = self.traces_box
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.array(np.asarray(self.fig.canvas.buffer_rgba())[rows, cols, :3])).save(out)
        return Path(out)

    def render(self, frames: Iterable[dict[str, np.ndarray]]) -> Iterator[np.ndarray]:
        """One (H, W, 4) uint8 RGBA picture (opaque) per item of ``frames`` (camera name -> (h, w, 3)
        uint8 frame, any size: scaled to ``sizes`` unless it is already), for the episode shown."""
        canvas, chunks = self.fig.canvas, self.chunks
        steps = np.arange(chunks.pred.shape[1])
        for t, cameras in enumerate(frames):
            canvas.restore_region(self.background)
            later = np.flatnonzero(chunks.frame <= t)
            q = int(later[-1]) if len(later) else 0
            valid = ~chunks.pad[q]
            cursors, current = [], []
            for d, ax in enumerate(self.axes):
                x = ax.transData.transform([[t, 0.0]])[0, 0]
                cursors.append([(x, ax.bbox.y0), (x, ax.bbox.y1)])
                current.append(ax.transData.transform(
                    np.column_stack([chunks.frame[q] + steps[valid], chunks.pred[q, valid, d]])))
            self.overlay.set_segments(cursors + current)
            self.fig.draw_artist(self.overlay)
            picture = np.array(np.asarray(canvas.buffer_rgba())[: self.shape[0], : self.shape[1]])
            for name, (rows, cols) in self.boxes.items():
                picture[rows, cols, :3] = resize_frame(cameras[name], self.sizes[name])
            yield picture


def save_trace_plot(executed: Executed, chunks: Predictions, joints: list[str], units: dict[str, str],
                    title: str, out: Path) -> Path:
    """One PNG: a panel per joint, demonstration vs executed prediction vs the predicted chunks."""
    with EpisodeFigure({}, joints, units) as figure:
        return figure.show(executed, chunks, title).save_traces(out)


def decode_video_frames(path: Path, timestamps: np.ndarray, size: tuple[int, int] | None = None
                        ) -> Iterator[np.ndarray]:
    """The frames of ``path`` nearest to ``timestamps`` (seconds, increasing, one frame period
    apart at most), as (h, w, 3) uint8 scaled by the decoder to ``size`` = (h, w) (None: as stored):
    one seek and one sequential pass, however many frames."""
    import av

    timestamps = np.asarray(timestamps, dtype=np.float64)
    if not len(timestamps):
        return
    try:
        yield from _decode(path, timestamps, size)
    except av.error.FFmpegError as e:
        raise ValidationError(f"{path} cannot be decoded ({e}); check the dataset with `vla validate`") from e


def _decode(path: Path, timestamps: np.ndarray, size: tuple[int, int] | None) -> Iterator[np.ndarray]:
    import av

    kwargs = {} if size is None else {"height": int(size[0]), "width": int(size[1])}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # decoding is exact whatever the threads
        rate = float(stream.average_rate or stream.guessed_rate or 30)
        tolerance = 0.5 / rate
        container.seek(max(int(timestamps[0] / stream.time_base) - 1, 0), stream=stream, backward=True)
        decoded = (f for f in container.decode(stream) if f.time is not None)
        frame = None
        for ts in timestamps:
            while frame is None or frame.time < ts - tolerance:
                frame = next(decoded, None)
                if frame is None:
                    raise ValidationError(f"{path} ends before {ts:.3f} s: the episode's frames are not all in its "
                                          f"video; check the dataset with `vla validate`")
            if frame.time > ts + tolerance:
                raise ValidationError(f"{path} has no frame within {tolerance * 1e3:.0f} ms of {ts:.3f} s (the nearest "
                                      f"is at {frame.time:.3f} s); check the dataset with `vla validate`")
            yield frame.to_ndarray(format="rgb24", **kwargs)


def prefetch(items: Iterable, depth: int = 8) -> Iterator:
    """``items``, produced by a background thread up to ``depth`` ahead (decoding and encoding release
    the GIL: the decoder, the drawing and the encoder share the cores). Same items, same order; an
    exception of the producer is raised here."""
    queue: Queue = Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                queue.put(item)
            queue.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            queue.put(_Raised(e))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not done:
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(Empty):
                queue.get(timeout=0.05)
        thread.join()


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


def save_video(frames: Iterable[np.ndarray], fps: int, out: Path) -> int:
    """Encode (H, W, 3) RGB or (H, W, 4) RGBA uint8 pictures (even H and W) as H.264 MP4 with PyAV (the
    same bytes on every run: one encoder thread); returns the number of frames. The pictures are drawn
    (and their camera frames decoded) and converted to YUV in background threads while this one encodes."""
    import av

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with av.open(str(out), mode="w") as container:
        stream = None
        for yuv in prefetch(_to_yuv420p(frames)):
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.height, stream.width = yuv.shape[0] * 2 // 3, yuv.shape[1]
                stream.pix_fmt = "yuv420p"
                stream.codec_context.thread_count = 1  # same bytes on every run
                # no B-frames: a fifth less encoding time than veryfast's 3, files a tenth larger
                stream.options = {"crf": "23", "preset": "veryfast", "x264-params": "bframes=0"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p")):
                container.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return count


def _to_yuv420p(pictures: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """BT.601 limited-range YUV 4:2:0 (what FFmpeg's converter gives, within 1/255) with OpenCV, a
    LeRobot dependency: a third of the time of FFmpeg's converter on these pictures."""
    import cv2

    for picture in pictures:
        code = cv2.COLOR_RGBA2YUV_I420 if picture.shape[-1] == 4 else cv2.COLOR_RGB2YUV_I420
        yield cv2.cvtColor(np.ascontiguousarray(picture), code)
