"""Topology parsers on recorded-format fixtures: an 8-GPU NVLink box, a 4-GPU PCIe box, a
2-socket CPU host's /sys tree; and detection on this host."""

import os
from pathlib import Path

import pytest

from sagellm.comm_backend import TopologyManager, parse_cpulist, parse_nvidia_smi_topo

FIX = Path(__file__).parent / "fixtures"


def test_cpulist():
    assert parse_cpulist("0-3,8,10-11\n") == (0, 1, 2, 3, 8, 10, 11)
    assert parse_cpulist("") == ()


def test_nvlink_box():
    info = parse_nvidia_smi_topo((FIX / "nvidia_smi_topo_8gpu_nvlink.txt").read_text())
    assert info.num_gpus == 8 and info.nvlink
    assert info.gpu_links[0][0] == "X" and info.nvlink_count(0, 7) == 18
    assert info.gpu_numa_ids == (0, 0, 0, 0, 1, 1, 1, 1)
    assert all(len(row) == 8 for row in info.gpu_links)  # NIC columns are not GPUs


def test_pcie_box():
    info = parse_nvidia_smi_topo((FIX / "nvidia_smi_topo_4gpu_pcie.txt").read_text())
    assert info.num_gpus == 4 and not info.nvlink
    assert info.gpu_links[0] == ("X", "PIX", "SYS", "SYS")
    assert info.nvlink_count(0, 1) == 0 and info.gpu_numa_ids == (0, 0, 1, 1)


@pytest.mark.parametrize("name", ["nvidia_smi_topo_8gpu_nvlink", "nvidia_smi_topo_4gpu_pcie"])
def test_space_aligned_copy_parses_the_same(name):
    """Logs and terminal copies keep the table space-aligned, not tab-separated."""
    text = (FIX / f"{name}.txt").read_text()
    aligned = text.expandtabs(8)
    assert "\t" not in aligned
    assert parse_nvidia_smi_topo(aligned) == parse_nvidia_smi_topo(text)


def test_no_gpus_text():
    assert parse_nvidia_smi_topo("NVIDIA-SMI has failed\n").num_gpus == 0


def test_two_socket_numa_fixture():
    info = TopologyManager(sys_node_dir=FIX / "numa_2socket", nvidia_smi="absent-x").detect()
    assert info.num_gpus == 0 and not info.nvlink
    n0, n1 = info.numa
    assert (n0.node_id, n1.node_id) == (0, 1)
    assert n0.cpu_ids == tuple(range(24)) + tuple(range(48, 72))
    assert len(n1.cpu_ids) == 48 and n1.memory_bytes == 198180864 * 1024
    assert n0.distances == (10, 21) and n1.distances == (21, 10)
    assert info.detect_s >= 0


def test_this_host_numa_covers_usable_cpus():
    info = TopologyManager().detect_numa()
    cpus = {c for n in info.numa for c in n.cpu_ids}
    assert set(os.sched_getaffinity(0)) <= cpus
