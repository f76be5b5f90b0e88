"""``artifact.view_lineage()``: where an artifact came from, as text in a terminal and as an SVG
picture in Jupyter (drawn here; no graphviz).

The graph walks back from the artifact: the run that saved it, that run's transform and its
input artifacts, then the runs that saved those inputs, and so on (each node once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import SQLRecord

MAX_NODES = 200


@dataclass
class Node:
    key: tuple[str, int]
    kind: str  # "artifact" or "run"
    label: str
    parents: list[tuple[str, int]] = field(default_factory=list)


class LineageGraph:
    """The lineage of one artifact. ``str()`` / the REPL show a tree; Jupyter shows an SVG."""

    def __init__(self, artifact: SQLRecord):
        self.root = ("artifact", artifact._lamina_id())
        self.nodes: dict[tuple[str, int], Node] = {}
        pending = [artifact]
        while pending and len(self.nodes) < MAX_NODES:
            record = pending.pop()
            if record._spec.model == "Artifact":
                node = self._add("artifact", record, _artifact_label(record))
                run = record.run
                if run is not None:
                    node.parents.append(("run", run._lamina_id()))
                    if ("run", run._lamina_id()) not in self.nodes:
                        pending.append(run)
            else:
                node = self._add("run", record, _run_label(record))
                for source in record.input_artifacts.order_by("id"):
                    node.parents.append(("artifact", source._lamina_id()))
                    if ("artifact", source._lamina_id()) not in self.nodes:
                        pending.append(source)

    def _add(self, kind: str, record: SQLRecord, label: str) -> Node:
        key = (kind, record._lamina_id())
        node = self.nodes.setdefault(key, Node(key, kind, label))
        return node

    # ---- text ------------------------------------------------------------------------
    def __str__(self) -> str:
        lines: list[str] = []
        shown: set = set()

        def walk(key, prefix: str, tail: str, head: str) -> None:
            node = self.nodes[key]
            again = key in shown and node.parents
            lines.append(f"{prefix}{head}{node.label}{' (see above)' if again else ''}")
            if again:
                return
            shown.add(key)
            parents = [p for p in node.parents if p in self.nodes]
            for i, parent in enumerate(parents):
                last = i == len(parents) - 1
                edge = "input " if node.kind == "run" else "saved by "
                walk(parent, prefix + tail, "    " if last else "│   ",
                     ("└── " if last else "├── ") + edge)

        walk(self.root, "", "", "")
        return "\n".join(lines)

    __repr__ = __str__

    # ---- picture ---------------------------------------------------------------------
    def layers(self) -> list[list[tuple[str, int]]]:
        """Nodes by distance from the artifact (0: the artifact, 1: its run, ...)."""
        depth = {self.root: 0}
        order = [self.root]
        for key in order:
            for parent in self.nodes[key].parents:
                if parent in self.nodes and parent not in depth:
                    depth[parent] = depth[key] + 1
                    order.append(parent)
        layers: list[list] = [[] for _ in range(max(depth.values()) + 1)]
        for key in order:
            layers[depth[key]].append(key)
        return layers

    def _repr_svg_(self) -> str:
        char_width, box_height, row_gap, col_gap, pad = 7.5, 28, 46, 24, 10
        layers = list(reversed(self.layers()))  # sources on top, the artifact at the bottom
        width_of = {k: len(self.nodes[k].label) * char_width + 2 * pad
                    for layer in layers for k in layer}
        row_widths = [sum(width_of[k] for k in layer) + col_gap * (len(layer) - 1)
                      for layer in layers]
        total_width = max(row_widths) + 2 * pad
        place = {}
        for row, layer in enumerate(layers):
            x = (total_width - row_widths[row]) / 2
            y = pad + row * (box_height + row_gap)
            for key in layer:
                place[key] = (x, y)
                x += width_of[key] + col_gap
        height = pad * 2 + len(layers) * box_height + (len(layers) - 1) * row_gap
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_width:.0f}" '
                 f'height="{height:.0f}" font-family="monospace" font-size="12">',
                 '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
                 'markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" '
                 'fill="#555"/></marker></defs>']
        for key, node in self.nodes.items():
            if key not in place:
                continue
            x, y = place[key]
            for parent in node.parents:
                if parent in place:
                    px, py = place[parent]
                    parts.append(
                        f'<line x1="{px + width_of[parent] / 2:.0f}" y1="{py + box_height:.0f}" '
                        f'x2="{x + width_of[key] / 2:.0f}" y2="{y:.0f}" stroke="#555" '
                        'marker-end="url(#arrow)"/>')
        for key, (x, y) in place.items():
            node = self.nodes[key]
            fill = "#e8f0fe" if node.kind == "artifact" else "#fdf2e0"
            rounding = 4 if node.kind == "artifact" else 14
            parts.append(f'<rect x="{x:.0f}" y="{y:.0f}" width="{width_of[key]:.0f}" '
                         f'height="{box_height}" rx="{rounding}" fill="{fill}" stroke="#333"/>')
            parts.append(f'<text x="{x + pad:.0f}" y="{y + box_height / 2 + 4:.0f}">'
                         f'{escape(node.label)}</text>')
        parts.append("</svg>")
        return "\n".join(parts)


def _artifact_label(artifact: SQLRecord) -> str:
    data = artifact._data
    return f"{data.get('key') or data.get('description') or data['uid']} ({data['uid'][:8]})"


def _run_label(run: SQLRecord) -> str:
    transform = run.transform
    name = None if transform is None else (transform.key or transform.uid)
    started = run._data.get("started_at")
    when = f", {started:%Y-%m-%d %H:%M}" if started is not None else ""
    return f"run {run.uid[:8]} of {name}{when}"
