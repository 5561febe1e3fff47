"""`prof run`, `prof attach`, `prof export`, `prof diff` end to end on real processes: the
sample server, a plain http.server, real py-spy, real HTTP over loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from profiler import load
from samples.sample_server.process import free_port

pytestmark = pytest.mark.slow  # end to end: real servers, processes, measurements or whole UI runs

PROF = [sys.executable, "-m", "profiler.cli"]


def prof(*args: str, timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*PROF, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "160", **(env or {})})


def one_line_error(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert re.search(pattern, result.stderr), result.stderr


@pytest.fixture(scope="module")
def run_session(artifact_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "session"
    result = prof("run", "sample_server", "--duration", "4", "--warmup", "1", "--concurrency", "4",
                  "--probes", "all", "--out", str(out), "--max-batch", "4")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "req/s" in result.stdout and "stage time" in result.stdout and str(out) in result.stdout
    (out / "run.stdout").write_text(result.stdout)
    return out


def test_run_ends_with_the_diagnosis_saved_and_its_headline_printed(run_session) -> None:
    from profiler.report_store import current_report as cached_report

    report = cached_report(run_session)  # report.json, current for this timeline: `prof tui` opens at once
    assert report is not None and report.load["requests"] > 0
    stdout = " ".join((run_session / "run.stdout").read_text().split())  # rich wraps long lines
    if report.findings:
        top = report.findings[0]
        assert f"bottleneck: {top.title} ({top.rule})" in stdout, stdout[-2000:]
    else:
        assert "no finding:" in stdout, stdout[-2000:]


def test_run_sample_server_collects_every_probe_that_can_run_here(run_session) -> None:
    session = load(run_session)
    counts = session.timeline["source"].value_counts()
    for source in ("stages", "ort", "pyspy", "proc", "loadgen", "http"):
        assert counts.get(source, 0) > 0, (source, counts.to_dict())
    probes = session.meta["probes"]
    assert probes["nvml"]["status"] == "off" and "no NVIDIA driver" in probes["nvml"]["reason"]
    assert probes["pyspy"]["status"] == "on" and probes["framework"]["status"] == "on"
    assert session.meta["server"]["knobs"] == ["--max-batch", "4"]
    # client spans and server spans share request ids: one request is followed end to end
    tl = session.timeline
    client_ids = set(tl.loc[tl["source"] == "loadgen", "request_id"].dropna())
    server_ids = set(tl.loc[tl["source"] == "stages", "request_id"].dropna())
    assert len(client_ids & server_ids) >= 0.9 * len(client_ids)
    assert session.meta["outcome"] == "done"


def test_run_wire_requests_equal_the_load_generators_own_records(run_session) -> None:
    import orjson

    from profiler.measures.wire import wire_requests

    tl = load(run_session).timeline
    client = tl[tl["source"] == "loadgen"]
    sent = {str(rid): orjson.loads(args) for rid, args in zip(client["request_id"], client["args"])}
    wire = wire_requests(tl).set_index("request_id")
    assert set(wire.index) == set(sent)  # every request the client made, warm-up included, and no other
    for rid, record in sent.items():
        seen = wire.loc[rid]
        assert (seen["request_bytes"], seen["response_bytes"], seen["status"], seen["body_sha256"]) == (
            record["bytes_sent"], record["bytes_received"], record["status"], record["sha256"]), rid


def test_export_and_diff_commands(run_session, tmp_path) -> None:
    chrome, speedscope, parquet = tmp_path / "t.json", tmp_path / "s.json", tmp_path / "e.parquet"
    result = prof("export", str(run_session), "--chrome", str(chrome), "--speedscope", str(speedscope),
                  "--parquet", str(parquet))
    assert result.returncode == 0, result.stderr
    trace = json.loads(chrome.read_text())
    assert {e.get("cat") for e in trace["traceEvents"]} >= {"stages", "ort", "loadgen", "pyspy", "http"}
    assert json.loads(speedscope.read_text())["profiles"]
    import pandas as pd

    assert len(pd.read_parquet(parquet)) == len(load(run_session).timeline)
    diff = prof("diff", str(run_session), str(run_session))
    assert diff.returncode == 0 and "inference" in diff.stdout and "+0.0 pt" in diff.stdout
    missing = prof("export", str(tmp_path / "nope"), "--chrome", str(chrome))
    one_line_error(missing, r"not a prof session")


@pytest.fixture()
def http_server(tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield process, port
    process.kill()
    process.wait()


def test_attach_to_a_plain_python_http_server(http_server, tmp_path) -> None:
    process, port = http_server
    out = tmp_path / "attach"
    attach = subprocess.Popen([*PROF, "attach", str(process.pid), "--duration", "3", "--out", str(out),
                               "--pyspy-rate", "50", "--gil-snapshots", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    for _ in range(20):
        httpx.get(f"http://127.0.0.1:{port}/")
        time.sleep(0.05)
    stdout, stderr = attach.communicate(timeout=120)
    assert attach.returncode == 0, stderr
    assert "bottleneck:" in stdout or "no finding:" in stdout, stdout
    assert (out / "report.json").is_file()
    session = load(out)
    counts = session.timeline["source"].value_counts()
    assert counts.get("pyspy", 0) > 0 and counts.get("proc", 0) > 0
    assert session.meta["probes"]["stages"]["status"] == "off"
    assert "no prof agent" in session.meta["probes"]["stages"]["reason"]
    assert session.meta["target"]["pid"] == process.pid
    assert not (session.timeline["kind"] == "instant").any()  # --gil-snapshots 0: no dumps beside py-spy
    functions = set(session.timeline.loc[session.timeline["source"] == "pyspy", "name"].astype(str))
    assert any("select" in f or "serve_forever" in f for f in functions), functions


def test_attach_switches_the_sample_servers_own_probes_through_its_agent(start_server, jpeg_640, tmp_path) -> None:
    server = start_server("--backend", "ort")
    out = tmp_path / "attach"
    attach = subprocess.Popen([*PROF, "attach", str(server.pid), "--duration", "4", "--out", str(out),
                               "--probes", "all"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "meta.json").exists() or "stages" not in json.loads((out / "meta.json").read_text())["probes"]:
        assert time.monotonic() < deadline and attach.poll() is None
        time.sleep(0.1)
    for _ in range(8):
        httpx.post(f"{server.url}/classify", content=jpeg_640, headers={"Content-Type": "image/jpeg"})
    stdout, stderr = attach.communicate(timeout=120)
    assert attach.returncode == 0, stderr
    session = load(out)
    probes = session.meta["probes"]
    assert probes["stages"]["status"] == "on" and probes["stages"]["via"] == "agent"
    assert probes["framework"]["status"] == "on"
    counts = session.timeline["source"].value_counts()
    assert counts.get("stages", 0) >= 8 * 8 and counts.get("ort", 0) > 0 and counts.get("pyspy", 0) > 0
    assert httpx.get(f"{server.url}/healthz").json()["profiling"]["spans"] is False  # window closed


def test_attach_refuses_bad_targets_in_one_line(tmp_path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    one_line_error(prof("attach", str(dead.pid), "--out", str(tmp_path / "a")), rf"pid {dead.pid} does not exist")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        one_line_error(prof("attach", str(sleeper.pid), "--out", str(tmp_path / "b")), r"not a Python process")
    finally:
        sleeper.kill()
        sleeper.wait()
    one_line_error(prof("attach", str(os.getpid()), "--gil-snapshots", "50", "--out", str(tmp_path / "c")),
                   r"--gil-snapshots 50: choose 0\.\.20 per second")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_attach_without_ptrace_rights_names_the_remedy(tmp_path) -> None:
    """A root-owned target and an unprivileged prof: py-spy is denied ptrace."""
    if os.getuid() != 0:
        pytest.fail("this test drops from root to 'nobody' to provoke a ptrace denial; run the suite as root")
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    out = tmp_path / "denied"
    tmp_path.chmod(0o777)
    try:
        result = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *PROF, "attach",
                                 str(target.pid), "--out", str(out)], capture_output=True, text=True, timeout=60,
                                cwd=str(Path(__file__).resolve().parents[1]),
                                env={**os.environ, "HOME": str(tmp_path)})
        one_line_error(result, r"ptrace denied.*(root|ptrace_scope|CAP_SYS_PTRACE)")
    finally:
        target.kill()
        target.wait()


def test_target_exiting_mid_collection_keeps_the_session(tmp_path) -> None:
    target = subprocess.Popen([sys.executable, "-c", "import time\nfor _ in range(30): sum(range(20000)); "
                               "time.sleep(0.05)"])
    out = tmp_path / "exits"
    result = prof("attach", str(target.pid), "--duration", "30", "--out", str(out))
    target.wait()
    assert result.returncode == 0, result.stderr
    session = load(out)
    assert session.meta["outcome"] == "target-exited"
    assert any("exited during collection" in n for n in session.meta["notes"])
    assert session.timeline["source"].value_counts().get("proc", 0) > 0


def test_ctrl_c_during_prof_attach_ends_early_and_keeps_everything(http_server, tmp_path) -> None:
    process, port = http_server
    out = tmp_path / "interrupted"
    attach = subprocess.Popen([*PROF, "attach", str(process.pid), "--duration", "60", "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "raw" / "http" / "meta.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    for _ in range(10):
        httpx.get(f"http://127.0.0.1:{port}/", headers={"X-Request-ID": "seen-before-ctrl-c"})
    time.sleep(1.0)
    children = {c.pid for c in psutil.Process(attach.pid).children(recursive=True)}
    assert children, "py-spy and the wire capture run as children"
    attach.send_signal(signal.SIGINT)
    stdout, stderr = attach.communicate(timeout=60)
    assert attach.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert not [pid for pid in children if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    session = load(out)
    assert session.meta["outcome"] == "interrupted"
    counts = session.timeline["source"].value_counts()
    assert counts.get("pyspy", 0) > 0 and counts.get("proc", 0) > 0
    assert "seen-before-ctrl-c" in set(session.timeline["request_id"].dropna().astype(str))  # the wire kept it


def test_output_dir_not_writable_fails_before_anything_starts(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = prof("run", "sample_server", "--out", str(blocker / "session"), "--duration", "1")
    one_line_error(result, r"cannot write the session directory")


def test_server_that_fails_to_start_shows_its_log(tmp_path, artifact_cache) -> None:
    result = prof("run", "sample_server", "--model", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "s"),
                  "--duration", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr.split("did not start")[0]
    assert "did not start" in result.stderr and "missing.onnx" in result.stderr


def test_sigterm_during_prof_run_ends_every_child_and_keeps_the_session(artifact_cache, tmp_path) -> None:
    out = tmp_path / "term"
    run = subprocess.Popen([*PROF, "run", "sample_server", "--duration", "60", "--warmup", "0", "--out", str(out),
                            "--concurrency", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "COLUMNS": "160"})
    deadline = time.monotonic() + 180
    children: list[psutil.Process] = []
    while time.monotonic() < deadline:
        assert run.poll() is None, run.stderr.read()
        kids = psutil.Process(run.pid).children(recursive=True)
        names = " ".join(k.name() for k in kids)
        if "py-spy" in names and (out / "raw" / "proc").is_dir():
            children = kids
            break
        time.sleep(0.2)
    assert children, "server and py-spy children seen"
    time.sleep(3)  # some requests complete
    run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.pid for p in alive]
    session = load(out)
    assert session.meta["outcome"] == "interrupted"
    counts = session.timeline["source"].value_counts()
    assert counts.get("loadgen", 0) > 0 and counts.get("stages", 0) > 0 and counts.get("pyspy", 0) > 0


def test_run_any_command_profiles_it_and_ends_its_process_group(tmp_path) -> None:
    script = tmp_path / "job.py"
    script.write_text("import subprocess, sys, time\n"
                      "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
                      "print(child.pid, flush=True)\n"
                      "def spin():\n    return sum(i * i for i in range(50_000))\n"
                      "while True:\n    spin(); time.sleep(0.01)\n")
    out = tmp_path / "cmd"
    result = prof("run", "--duration", "3", "--out", str(out), "--", sys.executable, str(script))
    assert result.returncode == 0, result.stderr
    session = load(out)
    functions = set(session.timeline.loc[session.timeline["source"] == "pyspy", "name"].astype(str))
    assert any("spin" in f or "genexpr" in f for f in functions), functions  # py-spy may qualify the name
    grandchild = int((out / "raw" / "command" / "output.log").read_text().split()[0])
    gone = not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    assert gone, "the command's own children are ended with it"
