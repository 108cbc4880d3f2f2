"""The record written beside every result (tinylora/analysis/provenance.py)."""

import subprocess

from tinylora.analysis.provenance import provenance, same_machine


def test_provenance_names_the_commit_machine_command_versions_and_time():
    record = provenance("python -m benchmarks.x --flag")
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert record["git"]["commit"] == (head or None)
    assert record["command"] == "python -m benchmarks.x --flag"
    assert record["machine"]["cpu_model"] and record["machine"]["logical_cpus"] >= 1
    assert record["machine"]["gpu"] is None  # a CPU run names no GPU
    assert record["versions"]["python"] and "numpy" in record["versions"]
    assert record["time"][:2] == "20"


def test_machines_compare_by_cpu_cores_and_gpu():
    epyc = {"cpu_model": "AMD EPYC", "physical_cores": 2, "gpu": None}
    xeon = {"cpu_model": "Intel(R) Xeon(R) Processor", "physical_cores": 2, "gpu": None}
    assert same_machine({"machine": epyc}, dict(epyc, logical_cpus=4))
    assert not same_machine(epyc, xeon)
