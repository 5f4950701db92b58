"""Draws docs/speed.png from docs/speed.csv: prefill and decode tokens/s of mamba-wgpu beside
llama.cpp's Vulkan backend on the same driver (lavapipe). Needs matplotlib
(scripts/requirements-train.txt pins it).

    python scripts/plot_speed.py [docs/speed.csv] [docs/speed.png]
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src = sys.argv[1] if len(sys.argv) > 1 else "docs/speed.csv"
out = sys.argv[2] if len(sys.argv) > 2 else "docs/speed.png"
with open(src) as f:
    rows = list(csv.DictReader(line for line in f if not line.startswith("#")))

labels = [f"{r['model']}\n{r['dtype']}" for r in rows]
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, (key, title) in zip(axes, [("pp", "prefill, 512-token prompt"), ("tg", "decode")]):
    ours = [float(r[f"ours_{key}"]) for r in rows]
    peer = [float(r[f"llamacpp_vulkan_{key}"]) for r in rows]
    x = range(len(rows))
    w = 0.38
    ax.bar([i - w / 2 for i in x], ours, w, label="mamba-wgpu", color="#3b7dd8")
    ax.bar([i + w / 2 for i in x], peer, w, label="llama.cpp Vulkan", color="#b0b0b0")
    for i, (o, p) in enumerate(zip(ours, peer)):
        ax.text(i - w / 2, o, f"{o:g}", ha="center", va="bottom", fontsize=8)
        ax.text(i + w / 2, p, f"{p:g}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_title(title)
    ax.set_ylabel("tokens/s")
axes[0].legend()
fig.suptitle("Mesa lavapipe (CPU Vulkan), 2 cores, batch 1")
fig.tight_layout()
fig.savefig(out, dpi=100)
print(out)
