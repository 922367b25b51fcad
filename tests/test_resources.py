"""Job resources: config per rule, defaults from the environment, growth with the attempt."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from diffroar.resources import (
    DEFAULT_MEM_MB,
    DEFAULT_RUNTIME,
    available_cpus,
    base_resources,
    check_environment,
    cores_note,
    for_attempt,
)


def test_defaults_without_config_or_environment():
    assert base_resources({}, {}) == {"mem_mb": DEFAULT_MEM_MB, "runtime": DEFAULT_RUNTIME}


def test_environment_sets_defaults_and_the_config_wins():
    environ = {"DIFFROAR_MEM_MB": "8000", "DIFFROAR_RUNTIME": "30"}
    assert base_resources({}, environ) == {"mem_mb": 8000, "runtime": 30}
    assert base_resources({"mem_mb": 500, "threads": 4}, environ) == {"mem_mb": 500, "runtime": 30}


def test_a_gpu_only_where_the_config_asks():
    environ = {"DIFFROAR_SLURM_PARTITION": "cpu", "DIFFROAR_SLURM_GPU_PARTITION": "gpu"}
    assert "gpu" not in base_resources({"gpu": 0}, environ)
    assert base_resources({}, environ)["slurm_partition"] == "cpu"
    with_gpu = base_resources({"gpu": 1}, environ)
    assert with_gpu["gpu"] == 1 and with_gpu["slurm_partition"] == "gpu"
    # without a GPU partition, GPU jobs go to the one partition
    one_partition = base_resources({"gpu": 2}, {"DIFFROAR_SLURM_PARTITION": "all"})
    assert one_partition["slurm_partition"] == "all"


def test_account_only_when_named():
    assert "slurm_account" not in base_resources({}, {})
    assert base_resources({}, {"DIFFROAR_SLURM_ACCOUNT": "lab"})["slurm_account"] == "lab"


def test_memory_and_time_grow_with_the_attempt_gpus_do_not():
    base = base_resources({"gpu": 1, "mem_mb": 16000, "runtime": 240}, {})
    assert for_attempt(base, 1) == base
    assert for_attempt(base, 3) == {"mem_mb": 48000, "runtime": 720, "gpu": 1}


@pytest.mark.parametrize("text", ["lots", "0", "-5", "2.5"])
def test_a_bad_environment_value_is_named(text):
    with pytest.raises(ValueError) as raised:
        check_environment({"DIFFROAR_MEM_MB": text})
    assert str(raised.value).startswith(f"environment error: DIFFROAR_MEM_MB = {text!r}")


def test_an_empty_variable_means_the_default():
    check_environment({"DIFFROAR_MEM_MB": ""})
    assert base_resources({}, {"DIFFROAR_RUNTIME": ""})["runtime"] == DEFAULT_RUNTIME


def test_a_note_only_for_more_cores_than_cpus():
    assert cores_note(None, 2) is None  # no --cores: a cluster run or a dry run
    assert cores_note(1, 2) is None and cores_note(2, 2) is None
    note = cores_note(8, 2)
    assert note.startswith("note: --cores 8 is more than the 2 CPUs")
    assert "use --cores all (= 2) or fewer" in note
    assert "\n" not in note


def test_the_cpus_are_those_this_process_may_use(monkeypatch):
    """A process held to one CPU (taskset, a Slurm allocation) counts one, whatever the machine
    has; where the OS has no affinity mask, the machine's count."""
    code = (
        "import os; os.sched_setaffinity(0, {0}); "
        "from diffroar.resources import available_cpus; print(available_cpus())"
    )
    held = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert held.stdout.split() == ["1"]
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert available_cpus() == 5
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert available_cpus() == 1
