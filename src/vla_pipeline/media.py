"""Evaluation media: per-joint traces of predicted vs demonstrated actions (PNG), and a video of
an episode with its camera frames beside the moving traces (MP4, H.264).

The traces show the demonstration (black), the actions the robot would execute (blue) and, faint,
every predicted chunk in full (what the policy planned beyond the frames it executes)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vla_pipeline.metrics import Executed, Predictions  # noqa: E402

GT_STYLE = {"color": "black", "lw": 1.2, "label": "demonstration"}
EXEC_STYLE = {"color": "tab:blue", "lw": 1.2, "label": "executed prediction"}
CHUNK_STYLE = {"color": "tab:blue", "lw": 0.6, "alpha": 0.25}


def _joint_label(joint: str, units: dict[str, str]) -> str:
    return f"{joint} [{units[joint]}]" if joint in units else joint


def _draw_traces(axes, executed: Executed, chunks: Predictions, joints: list[str], units: dict[str, str]) -> None:
    steps = np.arange(chunks.pred.shape[1])
    for d, (ax, joint) in enumerate(zip(axes, joints, strict=False)):
        for i in range(len(chunks.pred)):
            valid = ~chunks.pad[i]
            ax.plot(chunks.frame[i] + steps[valid], chunks.pred[i, valid, d], **CHUNK_STYLE)
        ax.plot(executed.frames, executed.target[:, d], **GT_STYLE)
        ax.plot(executed.frames, executed.pred[:, d], **EXEC_STYLE)
        ax.set_title(_joint_label(joint, units), fontsize=8)
        ax.tick_params(labelsize=7)


def _joint_grid(fig, spec, n: int):
    cols = min(3, n)
    rows = -(-n // cols)
    grid = spec.subgridspec(rows, cols, hspace=0.6, wspace=0.3)
    return [fig.add_subplot(grid[i // cols, i % cols]) for i in range(n)]


def save_trace_plot(executed: Executed, chunks: Predictions, joints: list[str], units: dict[str, str],
                    title: str, out: Path) -> Path:
    """One PNG: a panel per joint, demonstration vs executed prediction vs the predicted chunks."""
    fig = plt.figure(figsize=(10, 2.4 * -(-len(joints) // 3) + 0.6))
    axes = _joint_grid(fig, fig.add_gridspec(1, 1)[0], len(joints))
    _draw_traces(axes, executed, chunks, joints, units)
    for ax in axes[-min(3, len(joints)):]:
        ax.set_xlabel("frame", fontsize=7)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=9)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return Path(out)


def render_episode_frames(images: dict[str, list[np.ndarray]], executed: Executed, chunks: Predictions,
                          joints: list[str], units: dict[str, str], title: str):
    """Yield one (H, W, 3) uint8 picture per frame: the cameras at that frame beside the traces,
    a cursor at the frame and the chunk in use drawn bold."""
    n_frames = len(next(iter(images.values())))
    fig = plt.figure(figsize=(12, 4.8))
    outer = fig.add_gridspec(1, 2, width_ratios=[1, 3], wspace=0.15)
    cams = outer[0].subgridspec(len(images), 1)
    cam_artists = []
    for i, (name, frames) in enumerate(images.items()):
        ax = fig.add_subplot(cams[i])
        cam_artists.append(ax.imshow(frames[0]))
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    axes = _joint_grid(fig, outer[1], len(joints))
    _draw_traces(axes, executed, chunks, joints, units)
    cursors = [ax.axvline(0, color="tab:red", lw=0.8) for ax in axes]
    current = [ax.plot([], [], color="tab:orange", lw=2.0)[0] for ax in axes]
    fig.suptitle(title, fontsize=9)
    steps = np.arange(chunks.pred.shape[1])
    for t in range(n_frames):
        for artist, frames in zip(cam_artists, images.values(), strict=True):
            artist.set_data(frames[t])
        q = int(np.flatnonzero(chunks.frame <= t)[-1]) if (chunks.frame <= t).any() else 0
        valid = ~chunks.pad[q]
        for d, (cursor, line) in enumerate(zip(cursors, current, strict=False)):
            cursor.set_xdata([t, t])
            line.set_data(chunks.frame[q] + steps[valid], chunks.pred[q, valid, d])
        fig.canvas.draw()
        rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
        yield rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]  # H.264 wants even sizes
    plt.close(fig)


def save_video(frames, fps: int, out: Path) -> int:
    """Encode (H, W, 3) uint8 pictures as H.264 MP4 with PyAV; returns the number of frames."""
    import av

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with av.open(str(out), mode="w") as container:
        stream = None
        for picture in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.height, stream.width = picture.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.codec_context.thread_count = 1  # same bytes on every run
                stream.options = {"crf": "23", "preset": "veryfast"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")):
                container.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return count
