"""Host topology: which GPUs share NVLink, which CPUs and memory form each NUMA node.

- GPUs: ``nvidia-smi topo -m`` (the matrix: one row per GPU, tab-separated cells "X", "NV<k>",
  "PIX", "PXB", "PHB", "NODE", "SYS", then NIC columns and "CPU Affinity", "NUMA Affinity",
  optionally "GPU NUMA ID"); skipped when nvidia-smi is absent (``num_gpus == 0``).
- NUMA: ``/sys/devices/system/node/node<N>/{cpulist,meminfo,distance}``; a host without that
  directory reports one node with every CPU from ``os.sched_getaffinity``.
The parsers are pure functions of the texts, tested on recorded outputs; ``TopologyManager``
adds the I/O and times it (``detect_s``, seconds).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from sagellm.comm_backend.types import NumaNode, TopologyInfo

SYS_NODE_DIR = Path("/sys/devices/system/node")
_GPU_ROW = re.compile(r"^GPU(\d+)$")


def parse_cpulist(text: str) -> tuple[int, ...]:
    """``"0-3,8,10-11"`` -> ``(0, 1, 2, 3, 8, 10, 11)``; empty text -> ``()``."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return tuple(cpus)


def parse_meminfo_total_bytes(text: str) -> int:
    """``Node 0 MemTotal:  131926212 kB`` -> bytes (0 when the line is missing)."""
    m = re.search(r"MemTotal:\s+(\d+)\s*kB", text)
    return int(m.group(1)) * 1024 if m else 0


def parse_nvidia_smi_topo(text: str) -> TopologyInfo:
    """The GPU part of :class:`TopologyInfo` from ``nvidia-smi topo -m`` output: as the tool
    prints it (tab-separated cells) or space-aligned, as logs and terminal copies keep it
    (cells then split at runs of two or more spaces; no cell holds two spaces)."""
    lines = [ln.rstrip("\n") for ln in text.splitlines()]
    header_i = next((i for i, ln in enumerate(lines) if re.match(r"\s+GPU0\b", ln)), None)
    if header_i is None:
        return TopologyInfo()
    sep = "\t" if "\t" in lines[header_i] else " {2,}"

    def split(ln: str) -> list[str]:
        return [c.strip() for c in re.split(sep, ln)]

    header = split(lines[header_i])
    gpu_cols = [i for i, c in enumerate(header) if _GPU_ROW.match(c)]
    numa_col = next((i for i, c in enumerate(header) if c == "NUMA Affinity"), None)
    links: list[tuple[str, ...]] = []
    numa_ids: list[int | None] = []
    for ln in lines[header_i + 1 :]:
        cells = split(ln)
        if not cells or not _GPU_ROW.match(cells[0]):
            if links:
                break
            continue
        links.append(tuple(cells[i] for i in gpu_cols))
        raw = cells[numa_col] if numa_col is not None and numa_col < len(cells) else ""
        numa_ids.append(int(raw) if raw.isdigit() else None)
    n = len(links)
    nvlink = n > 1 and all(
        links[i][j].startswith("NV") for i in range(n) for j in range(n) if i != j
    )
    return TopologyInfo(
        num_gpus=n, gpu_links=tuple(links), gpu_numa_ids=tuple(numa_ids), nvlink=nvlink
    )


def read_numa_nodes(root: Path = SYS_NODE_DIR) -> tuple[NumaNode, ...]:
    """NUMA nodes from a sysfs-shaped directory (``root/node<N>/...``)."""
    nodes = []
    dirs = sorted(
        (p for p in root.glob("node[0-9]*") if p.name[4:].isdigit()), key=lambda p: int(p.name[4:])
    )
    for d in dirs:
        cpus = parse_cpulist((d / "cpulist").read_text()) if (d / "cpulist").exists() else ()
        mem = (d / "meminfo").read_text() if (d / "meminfo").exists() else ""
        dist = (d / "distance").read_text().split() if (d / "distance").exists() else []
        nodes.append(
            NumaNode(int(d.name[4:]), cpus, parse_meminfo_total_bytes(mem), tuple(map(int, dist)))
        )
    return tuple(nodes)


class TopologyManager:
    """Detects this host's topology (see the module docstring)."""

    def __init__(self, sys_node_dir: Path = SYS_NODE_DIR, nvidia_smi: str = "nvidia-smi"):
        self.sys_node_dir = Path(sys_node_dir)
        self.nvidia_smi = nvidia_smi

    def detect_nvlink(self) -> TopologyInfo:
        """GPU links from ``nvidia-smi topo -m``; an empty topology without nvidia-smi."""
        t0 = time.perf_counter()
        exe = shutil.which(self.nvidia_smi)
        info = TopologyInfo()
        if exe is not None:
            try:
                out = subprocess.run(
                    [exe, "topo", "-m"], capture_output=True, text=True, timeout=20, check=True
                ).stdout
                info = parse_nvidia_smi_topo(out)
            except (subprocess.SubprocessError, OSError):
                info = TopologyInfo()
        return TopologyInfo(
            info.num_gpus, info.gpu_links, info.gpu_numa_ids, info.nvlink, (),
            time.perf_counter() - t0,
        )  # fmt: skip

    def detect_numa(self) -> TopologyInfo:
        """NUMA nodes from /sys (one node of all usable CPUs when /sys has none)."""
        t0 = time.perf_counter()
        nodes = read_numa_nodes(self.sys_node_dir) if self.sys_node_dir.is_dir() else ()
        if not nodes:
            nodes = (NumaNode(0, tuple(sorted(os.sched_getaffinity(0))), 0, (10,)),)
        return TopologyInfo(numa=nodes, detect_s=time.perf_counter() - t0)

    def detect(self) -> TopologyInfo:
        """Both: GPU links and NUMA nodes, ``detect_s`` the total."""
        g, n = self.detect_nvlink(), self.detect_numa()
        return TopologyInfo(
            g.num_gpus, g.gpu_links, g.gpu_numa_ids, g.nvlink, n.numa, g.detect_s + n.detect_s
        )
