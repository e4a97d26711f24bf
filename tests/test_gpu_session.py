"""The GPU window's plumbing, on the CPU: stage budgets, the cut-off of a stage by its timeout, the
merge of stages into one results.json, the pytest stream, the smoke's coverage of the registry,
the benchmark's time budget and --merge, the large-input check (small, under the interpreter), the
commit's provenance and the merge of two commands' results under the device's folder. Nothing
here is a GPU measurement: the rows fed in are made up or interpreter runs."""
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import benchmarks.run as bench_run
import kernels
from benchmarks import gpu_session, jsonfile, provenance
from benchmarks.networks import SUITES
from benchmarks.pytest_stream import summarize
from benchmarks.session import Command, Session, Stage, stage_timeout

ROOT = Path(__file__).resolve().parents[1]
ON_CPU = not torch.cuda.is_available()
# On a GPU these would start the real stages or time for real; there the session itself is the test.
cpu_only = pytest.mark.skipif(not ON_CPU, reason="checks the CPU mode (on a GPU the session runs for real)")


def _stage(name, seconds, script, *args):
    return Stage(name, seconds, f"synthetic {name}", lambda context: [Command((sys.executable, "-c", script, *args))],
                 needs_gpu=False)


def test_stage_timeouts_share_one_budget():
    stages = [_stage(name, seconds, "") for name, seconds in (("a", 15), ("b", 165), ("c", 60), ("d", 30))]
    assert stage_timeout(stages, 0, 270) == 15
    # b gets its own seconds plus what a left unused, never what is planned for c and d ...
    assert stage_timeout(stages, 1, 265) == 175
    # ... c gets its own when behind schedule (the earlier stage matters more), d what is left.
    assert stage_timeout(stages, 2, 70) == 60
    assert stage_timeout(stages, 3, 12) == 12
    assert stage_timeout(stages, 3, -3) == 0


def test_every_command_fits_its_budget_and_first_runs_in_priority_order():
    for name, stages in gpu_session.COMMANDS.items():
        assert sum(s.seconds for s in stages) <= gpu_session.TOTAL_SECONDS - gpu_session.MARGIN_SECONDS, name
        assert stages[0].name == "environment" and not stages[0].needs_gpu
    assert gpu_session.MARGIN_SECONDS >= 30 and gpu_session.TOTAL_SECONDS <= 480
    assert [s.name for s in gpu_session.COMMANDS["first"]] == [
        "environment", "smoke", "resnet50-compile", "resnet50-forward", "resnet50-end-to-end", "resnet50-backward",
        "large-input"]


# A stage that rewrites results.json (through benchmarks/jsonfile.py, loaded without the package)
# as fast as it can, adding a row each time, until it is killed; or, given a count, writes that
# many rows and exits.
WRITER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("jsonfile", sys.argv[1])
jsonfile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(jsonfile)
path, tag, count = sys.argv[2], sys.argv[3], int(sys.argv[4])
n = 0
while count < 0 or n < count:
    data = jsonfile.read(path, {})
    data.setdefault("cases", []).append(dict(stage=tag, row=n, padding="x" * 20000))
    jsonfile.write(path, data)
    n += 1
"""


def test_a_stage_cut_by_its_timeout_leaves_valid_results(tmp_path):
    results = tmp_path / "results.json"
    writer = lambda name, seconds, count: _stage(name, seconds, WRITER, str(ROOT / "benchmarks" / "jsonfile.py"),  # noqa: E731
                                                 str(results), name, str(count))
    stages = [
        writer("writes-until-killed", 2, -1),
        _stage("hangs", 2, "import time; time.sleep(600)"),
        writer("writes-one-row", 2, 1),
        _stage("too-late", 4, "print('never')"),  # under 4 s are left after 4 s of kills
    ]
    printed = []
    began = time.time()
    data = Session("synthetic", stages, tmp_path, total=9, margin=1.5, workers=1, on_gpu=False,
                   echo=printed.append).run()
    took = time.time() - began
    assert took < 9
    statuses = {s["name"]: s["status"] for s in data["session"]["stages"]}
    assert statuses == {"writes-until-killed": "timed out (killed)", "hangs": "timed out (killed)",
                        "writes-one-row": "done", "too-late": "skipped: no time left"}
    # The file the first stage was rewriting when it was killed is whole, with its rows, and the
    # later stage's row and the session record were merged into it.
    on_disk = json.loads(results.read_text())
    assert on_disk == data
    rows = [(r["stage"], r["row"]) for r in on_disk["cases"]]
    cut = [row for stage, row in rows if stage == "writes-until-killed"]
    assert len(cut) > 5 and cut == list(range(len(cut)))
    assert rows[-1] == ("writes-one-row", 0)
    assert not list(tmp_path.glob("*.tmp"))  # a write the kill interrupted left nothing behind
    report = (tmp_path / "report.md").read_text()
    assert "## GPU session `synthetic`" in report and "| hangs |" in report and "timed out (killed)" in report
    assert "===== hangs [1/1] =====" in (tmp_path / "session.log").read_text()
    assert any("writes-one-row: done" in line for line in printed)


@cpu_only
def test_first_on_a_machine_without_gpu_runs_the_environment_and_skips_the_rest(tmp_path, capsys):
    assert gpu_session.main(["first", "--out", str(tmp_path), "--budget", "120", "--margin", "5", "--workers", "1"]) == 1
    data = json.loads((tmp_path / "results.json").read_text())
    session = data["session"]
    assert [s["status"] for s in session["stages"]] == ["done"] + ["skipped: no GPU"] * 6
    environment = session["environment"]
    assert environment["device"] == data["device"] == "cpu-interpreter" and environment["cuda_available"] is False
    assert {"torch", "triton", "cudnn", "driver", "commit", "commit_source", "source_fingerprint"} <= set(environment)
    assert session["source_fingerprint"] == provenance.tree_fingerprint(ROOT)
    assert data["cases"] == [] and data["peaks"] == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "results.json", "session.log"]
    out = capsys.readouterr().out.rstrip().splitlines()
    assert out[-1] == "(no benchmark rows)" and any(line.startswith("| environment | 15 |") for line in out)
    assert any(line.startswith("Environment: cpu-interpreter; torch ") for line in out)


STREAMED_TESTS = """
import os, time

def test_passes():
    pass

def test_fails():
    assert 1 == 2, "one is not two"

def test_the_deadline_passes_here():
    os.environ["PYTEST_DEADLINE"] = str(time.time() - 1)

def test_never_runs():
    pass
"""


def test_pytest_stream_records_each_test_and_stops_at_the_deadline(tmp_path):
    (tmp_path / "test_streamed.py").write_text(STREAMED_TESTS)
    stream = tmp_path / "stream.jsonl"
    env = dict(os.environ, PYTEST_STREAM=str(stream), PYTEST_DEADLINE=str(time.time() + 600),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "benchmarks.pytest_stream",
                           "-o", "addopts=", str(tmp_path / "test_streamed.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-3000:]  # interrupted: stopped at its deadline
    summary = summarize(stream)
    assert summary["collected"] == 4 and summary["passed"] == 2 and summary["not_run"] == 1
    assert summary["stopped"] and summary["finished"] == 1
    [failure] = summary["failed"]
    assert failure["nodeid"].endswith("test_fails") and failure["when"] == "call"
    assert "one is not two" in failure["message"] and "assert 1 == 2" in failure["traceback"]
    # A line cut by a kill is ignored.
    with open(stream, "a") as f:
        f.write('{"event": "report", "nodeid": "x')
    assert summarize(stream) == summary


def _smoke():
    sys.path.insert(0, str(ROOT / "tests"))
    import test_gpu_smoke

    return test_gpu_smoke


def test_smoke_covers_every_algorithm_in_every_dtype_layout_and_pass_first():
    smoke = _smoke()
    params = [p.values for p in smoke.smoke_params()]
    names = list(kernels.REGISTRY)
    combos = {(a, dtype, layout, direction) for a, _, dtype, layout, direction in params}
    assert combos == {(a, d, l, p) for a in names for d in ("float16", "bfloat16", "float32")
                      for l in ("channels_last", "nchw") for p in ("forward", "backward")}
    # Priority: fp16 channels_last forward of every algorithm first, then its backward, ...
    assert [(a, d, l, p) for a, _, d, l, p in params[:len(names)]] == [
        (a, "float16", "channels_last", "forward") for a in names]
    assert {p[4] for p in params[len(names):2 * len(names)]} == {"backward"}
    # ... and every combination on each algorithm's first shape before any second shape.
    first_shape = {a: smoke.smoke_shapes(a)[0] for a in names}
    firsts = [case == first_shape[a] for a, case, *_ in params]
    assert firsts == sorted(firsts, reverse=True)
    assert all(max(case.c, case.k) >= 64 for case in first_shape.values())  # GPU-sized first shapes
    # Shards partition the tests and keep their order.
    shards = [smoke.smoke_params((i, 3)) for i in range(3)]
    assert sorted(p.id for shard in shards for p in shard) == sorted(p.id for p in smoke.smoke_params())
    assert [p.id for p in shards[1]] == [p.id for p in smoke.smoke_params()][1::3]


def test_smoke_follows_the_registry(monkeypatch):
    smoke = _smoke()
    monkeypatch.setitem(kernels.REGISTRY, "im2col_again", dataclasses.replace(kernels.REGISTRY["im2col"],
                                                                              name="im2col_again"))
    params = smoke.smoke_params()
    assert len([p for p in params if p.values[0] == "im2col_again"]) == 3 * 12


@cpu_only
def test_smoke_runs_under_the_interpreter_when_asked(tmp_path):
    stream = tmp_path / "smoke.jsonl"
    ids = [f"tests/test_gpu_smoke.py::test_smoke[im2col-{d}-float32-nchw-2x4x8x8-k6-3x3-pad1]"
           for d in ("forward", "backward")]
    env = dict(os.environ, KERNELS_SMOKE_ON_CPU="1", PYTEST_STREAM=str(stream),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "benchmarks.pytest_stream",
                           *ids], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    summary = summarize(stream)
    assert (summary["collected"], summary["passed"], summary["failed"]) == (2, 2, [])


def _case_row(suite, layer, impl, ms, **changes):
    """A made-up row in the format of benchmarks/layers.py's (not a measurement)."""
    row = dict(
        suite=suite, layer=layer, count=1, n=32, c=64, h=56, w=56, k=64, r=3, s=3, stride=1, padding=1, dilation=1,
        groups=1, bias=False, op="conv2d", output_padding=0, dtype="float16", tf32=False, precision="float16",
        layout="channels_last", impl=impl, algorithm=None if impl == "cudnn" else "im2col", ms=ms, timing="do_bench",
        tflops=1.0, pct_peak=None, bound=None, intensity=100.0, speedup=None if impl == "cudnn" else 1.0 / ms,
        rel_err=1e-4, ok=True, macs=3.7e9, multiplies=3.7e9, **{"pass": "forward"})
    row.update(changes)
    return row


def _tiny_suite(monkeypatch):
    sys.path.insert(0, str(ROOT / "tests"))
    from test_benchmarks import Tiny

    monkeypatch.setitem(SUITES, "tiny", lambda **kwargs: Tiny())


@cpu_only
def test_benchmark_merges_into_the_session_file_and_stops_at_its_time_budget(tmp_path, monkeypatch, capsys):
    _tiny_suite(monkeypatch)
    # The file a session has before any benchmark ran: no device yet, a session record, a row of
    # an earlier stage (another pass).
    earlier_row = _case_row("tiny", "head", "auto", 1.0, n=1, precision="float32", dtype="float32", timing="interpreter",
                            speedup=None, **{"pass": "backward"})
    jsonfile.write(tmp_path / "results.json", dict(session=dict(command="first", stages=[]), peaks={}, layers=[],
                                                   cases=[earlier_row], models=[]))
    common = ["--suites", "tiny", "--out", str(tmp_path), "--merge", "--no-plots", "--no-launch-plan"]
    assert bench_run.main(common + ["--time-budget", "0"]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["session"] == dict(command="first", stages=[]) and data["cases"] == [earlier_row]
    assert data["device"] == "cpu-interpreter" and {r["layer"] for r in data["layers"]} == {"stem.0", "blocks.0.0", "head"}
    assert data["settings"]["not_run"] == [f"tiny {layer} b1 float32 channels_last forward"
                                           for layer in ("stem.0", "blocks.0.0", "head")]
    assert (data["settings"]["steps"], data["settings"]["steps_done"]) == (3, 0)
    assert "3 steps not run" in capsys.readouterr().out
    # End to end only (--no-layers) keeps every earlier layer row.
    assert bench_run.main(common + ["--no-layers", "--no-models"]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["cases"] == [earlier_row]
    # The data paths a GPU timed fastest (kernels.core.launcher.run_fastest) are written, an earlier
    # run's kept beside this run's.
    from kernels.core import launcher

    monkeypatch.setitem(launcher.FASTEST_PATHS, ("pointwise", (1, 2)), "tma")
    assert bench_run.main(common + ["--no-layers", "--no-models"]) == 0
    monkeypatch.delitem(launcher.FASTEST_PATHS, ("pointwise", (1, 2)))
    monkeypatch.setitem(launcher.FASTEST_PATHS, ("forward", (3,)), "cp.async")
    assert bench_run.main(common + ["--no-layers", "--no-models"]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["fastest_paths"] == {
        "pointwise (1, 2)": "tma", "forward (3,)": "cp.async"}


@cpu_only
def test_a_benchmark_stage_reports_its_steps_to_the_session(tmp_path):
    stage = Stage("mamba-forward", 30, "a real benchmark stage that runs out of time at once",
                  gpu_session.bench("--suites", "mamba_conv1d", "--no-models", "--time-budget", "0"), needs_gpu=False)
    data = Session("synthetic", [stage], tmp_path, total=60, margin=5, on_gpu=False, echo=lambda line: None).run()
    [entry] = data["session"]["stages"]
    assert entry["status"] == "done" and (entry["steps"], entry["steps_done"]) == (1, 0)
    assert entry["not_run"] == ["mamba_conv1d conv1d b32 float32 channels_last forward"]
    assert "| mamba-forward | a real benchmark stage" in (tmp_path / "report.md").read_text()
    assert "| 0/1 | done |" in (tmp_path / "report.md").read_text()


@cpu_only
def test_warm_runs_its_shard_of_the_steps_and_writes_nothing(tmp_path, monkeypatch, capsys):
    _tiny_suite(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert bench_run.main(["--suites", "tiny", "--warm", "--shard", "1/2", "--no-models", "--out", str(tmp_path)]) == 0
    log = capsys.readouterr().err
    assert "compile tiny blocks.0.0 b1" in log and "stem.0" not in log and "compile tiny head" not in log
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit):
        bench_run.parse_args(["--shard", "2/2"])


def test_large_input_check_runs_small_under_the_interpreter(tmp_path):
    from benchmarks import large_input

    n, c, h, w = large_input.INPUT_SHAPE
    assert n * c * h * w > 2**31 and n * large_input.OUT_CHANNELS * h * w > 2**31
    assert n * c * h * w * 2 * large_input.MEMORY_FACTOR < 100 * 2**30  # fits an H200 with room
    if not ON_CPU:
        pytest.skip("on a GPU the check runs at full size in the session")
    jsonfile.write(tmp_path / "results.json", dict(session=dict(command="first")))
    assert large_input.main(["--out", str(tmp_path), "--shape", "3", "4", "6", "6", "--out-channels", "5",
                             "--chunk", "2"]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    result = data["session"]["large_input"]
    assert data["session"]["command"] == "first" and result["ok"]
    for what in ("forward", "dgrad"):
        check = result[what]
        assert check["ok"] and check["nan"] == 0 and 0 < check["rel_err"] < 1e-2
        assert check["worst_chunk_rel_err"] >= check["rel_err"] and check["past_2_31_rel_err"] is None


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def test_provenance_identifies_the_commit_of_a_plain_copy(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    for path, text in (("kernels/a.py", "A = 1\n"), ("cnn/b.py", "B = 2\n"), ("kernels/routing/NVIDIA H200.json", "{}"),
                       ("benchmarks/results/x/results.json", "{}"), ("README.md", "read me\n")):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "first")
    first = provenance.tree_fingerprint(repo)
    assert provenance.commit_fingerprint("HEAD", repo) == first
    head = provenance.git_commit(repo)
    assert head and "+dirty" not in head and provenance.commit(repo) == (head, "git")
    # Results and other files are not source; a kernel's change is.
    (repo / "benchmarks/results/x/results.json").write_text('{"new": 1}')
    (repo / "README.md").write_text("changed\n")
    assert provenance.tree_fingerprint(repo) == first
    (repo / "kernels/a.py").write_text("A = 3\n")
    assert provenance.tree_fingerprint(repo) != first and provenance.git_commit(repo) == head + "+dirty"
    _git(repo, "commit", "-qam", "second")
    assert provenance.find_commit(first, repo) == head

    # The device's copy: no git; the commit comes from KERNELS_COMMIT, else it is unknown.
    copy = tmp_path / "copy"
    (copy / "kernels").mkdir(parents=True)
    (copy / "kernels/a.py").write_text("A = 1\n")
    monkeypatch.setenv("KERNELS_COMMIT", "abc1234")
    assert provenance.commit(copy) == ("abc1234", "KERNELS_COMMIT")
    monkeypatch.delenv("KERNELS_COMMIT")
    assert provenance.commit(copy) == ("unknown", "none")


def test_merge_puts_two_commands_under_the_h200_folder(tmp_path, monkeypatch):
    fingerprint = provenance.commit_fingerprint("HEAD", ROOT)
    if fingerprint is None:
        pytest.skip("not a git checkout")
    row = _case_row
    layer = lambda suite: dict(suite=suite, layer="l", count=1, c=64, h=56, w=56, k=64, r=3, s=3, stride=1,  # noqa: E731
                               padding=1, dilation=1, groups=1, bias=False, macs=1e8, auto="im2col",
                               multiplies={"im2col": 1e8})
    meta = dict(device="NVIDIA H200", interpreter=False, torch="2.11.0", triton="3.6.0", cudnn=91000, date="d",
                commit="unknown", commit_source="none", source_fingerprint=fingerprint)
    for name, suite in (("first", "resnet50"), ("layers", "vgg16")):
        jsonfile.write(tmp_path / name / "results.json", dict(
            meta, peaks=dict(tflops={"float16": 800.0}, bandwidth_gbs=4300.0), layers=[layer(suite)],
            cases=[row(suite, "l", "cudnn", 1.0), row(suite, "l", "im2col", 0.8)], models=[],
            session=dict(command=name, stages=[dict(name="environment", budget_s=15, timeout_s=15, elapsed_s=4,
                                                    status="done")])))
    monkeypatch.setattr(gpu_session, "REPO", tmp_path)
    into = gpu_session.merge([tmp_path / "first", tmp_path / "layers"])
    assert into == tmp_path / "benchmarks" / "results" / "nvidia-h200"
    merged = json.loads((into / "results.json").read_text())
    assert [s["command"] for s in merged["sessions"]] == ["first", "layers"] and "session" not in merged
    assert {r["suite"] for r in merged["cases"]} == {"resnet50", "vgg16"} and len(merged["layers"]) == 2
    assert merged["commit"] == provenance.git_commit(ROOT).split("+")[0]
    assert merged["commit_source"] == "source fingerprint"
    report = (into / "report.md").read_text()
    assert "## GPU session `first`" in report and "## GPU session `layers`" in report
    assert "float16 186 FLOP/byte" in report  # the ridge point of the measured peaks, 800e12 / 4.3e12
    assert any(p.suffix == ".png" for p in into.iterdir())
    jsonfile.write(tmp_path / "other" / "results.json", dict(meta, device="NVIDIA H100 80GB HBM3", cases=[]))
    with pytest.raises(SystemExit):
        gpu_session.merge([tmp_path / "first", tmp_path / "other"])


def test_every_stage_builds_commands_its_programs_accept(tmp_path):
    """Each stage's command lines, as a GPU session would start them, parse (no typo waits for the GPU)."""
    from benchmarks import large_input
    from benchmarks.session import StageContext

    context = StageContext(out=tmp_path, python=sys.executable, timeout=100, workers=3)
    for name, stages in gpu_session.COMMANDS.items():
        for stage in stages:
            commands = stage.commands(context)
            assert commands, (name, stage.name)
            for command in commands:
                module, args = command.argv[2], list(command.argv[3:])
                assert command.argv[:2] == (sys.executable, "-m")
                if module == "benchmarks":
                    parsed = bench_run.parse_args(args)
                    assert parsed.time_budget == 85 and parsed.batches == [32]
                    assert parsed.warm == ("--warm" in args) and (parsed.out == tmp_path) != parsed.warm
                elif module == "pytest":
                    files = [a for a in args if a.startswith("tests/")]
                    assert files and all((ROOT / f).exists() for f in files) and stage.pytest
                elif module == "benchmarks.large_input":
                    with pytest.raises(SystemExit):  # --help: the arguments are known
                        large_input.main(args + ["--help"])
                else:
                    assert module == "benchmarks.gpu_session" and args[0] == "environment"
    warm = gpu_session.COMMANDS["first"][2].commands(context)
    assert [c.argv[c.argv.index("--shard") + 1] for c in warm] == ["0/3", "1/3", "2/3"]
    smoke = gpu_session.COMMANDS["first"][1].commands(context)
    assert [dict(c.env)["KERNELS_SMOKE_SHARD"] for c in smoke] == ["0/3", "1/3", "2/3"]
