"""Bad input: one clear error naming file, line and what to change; never an INTERNALERROR."""

from __future__ import annotations

import pytest

from conftest import append_line, assert_counts, stored_records, to_loose_layout
from pytest_xp.store.codec import dumps


def _collect_error(pytester: pytest.Pytester, source: str, *fragments: str) -> pytest.RunResult:
    pytester.makepyfile(xp_bad=source)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    out = result.stdout.str()
    assert "INTERNALERROR" not in out
    assert "Traceback" not in out
    for fragment in fragments:
        assert fragment in out, f"{fragment!r} not in output:\n{out}"
    return result


def test_non_literal_values(pytester: pytest.Pytester) -> None:
    _collect_error(
        pytester,
        """
        from pytest_xp import trial

        class Adam:
            pass

        @trial(1, {"opt": [Adam()]})
        def train(opt):
            return 1
        """,
        "xp_bad.py:6: train:",
        "values['opt'][0] is a Adam",
        "values must be literals",
    )


def test_reserved_key(pytester: pytest.Pytester) -> None:
    _collect_error(
        pytester,
        """
        from pytest_xp import trial

        @trial(1, {"setup": [1]})
        def train(setup):
            return 1
        """,
        "xp_bad.py:3: train:",
        "'setup' is reserved",
    )


def test_parameter_not_in_signature(pytester: pytest.Pytester) -> None:
    _collect_error(
        pytester,
        """
        from pytest_xp import trial

        @trial(1, {"lr": [0.1], "wd": [0]})
        def train(lr):
            return 1
        """,
        "xp_bad.py:3: train:",
        "values names 'wd' but the function has no such argument",
    )


def test_unknown_trial_in_verify(pytester: pytest.Pytester) -> None:
    _collect_error(
        pytester,
        """
        from pytest_xp import trial, verify

        @trial(1, {"lr": [0.1]})
        def train(lr):
            return 1

        @verify(["trian"])
        def check(results):
            return True
        """,
        "xp_bad.py:7: check:",
        "unknown trial(s) 'trian'; trials in this module: train",
    )


def test_order_not_an_int_and_duplicates_reported_together(pytester: pytest.Pytester) -> None:
    _collect_error(
        pytester,
        """
        from pytest_xp import trial

        @trial("first", {"lr": [0.1]})
        def train(lr):
            return 1

        @trial(1, {"lr": [0.1]})
        def other(lr):
            return 1

        @trial(2, {"lr": [0.2]})
        def other(lr):
            return 2
        """,
        "xp_bad.py:3: train: @trial order must be an int",
        "xp_bad.py:11: other: a second definition with this name (the first is at line 7)",
    )


def test_non_json_setup_errors_every_item_with_the_setup_name(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_bad="""
        from pytest_xp import setup, trial

        @setup
        def init():
            return {"model": object()}

        @trial(1, {"i": [0, 1]})
        def t(i):
            return i
        """
    )
    result = pytester.runpytest()
    assert_counts(result, failed=2)
    result.stdout.fnmatch_lines(
        ["*xp_bad.py:3: setup function init() returned a context that is not JSON-serializable*"]
    )
    assert "INTERNALERROR" not in result.stdout.str()


def test_setup_exception_is_reported_once_per_item(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_bad="""
        from pytest_xp import setup, trial

        @setup
        def init():
            raise FileNotFoundError("data/")

        @trial(1, {"i": [0]})
        def t(i):
            return i
        """
    )
    result = pytester.runpytest()
    assert_counts(result, failed=1)
    result.stdout.fnmatch_lines(["*setup function init() raised FileNotFoundError*", "*data/*"])


def test_non_json_result_is_a_failure_record(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_bad="""
        import math
        from pytest_xp import trial, verify

        @trial(1, {"kind": ["set", "nan", "ok"]})
        def t(kind):
            return {"set": {1, 2}, "nan": math.nan, "ok": 1}[kind]

        @verify(["t"])
        def check(results):
            kinds = [r.get("type") for r in results["t"]]
            return kinds == ["ResultNotJSON", "ResultNotJSON", None], str(kinds)
        """
    )
    result = pytester.runpytest()
    assert_counts(result, passed=1, failed=2, supports=1)
    result.stdout.fnmatch_lines(["*t() returned a result that cannot be stored: result: a set is not JSON*"])
    assert "INTERNALERROR" not in result.stdout.str()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--xp-seed", "x"], "--xp-seed='x': give an integer"),
        (["--xp-values", "train=[1]"], "use TRIAL.PARAM=LIST"),
        (["--xp-values", "train.lr=Adam()"], "is not a Python literal list"),
        (["--xp-values", "train.lr=0.1"], "must be a non-empty list"),
        (["--xp-context", "=3"], "use KEY=VALUE"),
        (["--xp-shard", "3/2"], "use I/N with 0 <= I < N"),
        (["--xp-sample", "0"], "give a positive integer"),
    ],
)
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, args: list[str], fragment: str) -> None:
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert fragment in result.stderr.str()


def test_oversized_result_suggests_an_artifact(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_big="""
        from pytest_xp import trial

        @trial(1, {"n": [17 * 2**20]})
        def t(n):
            return "x" * n
        """
    )
    result = pytester.runpytest()
    assert_counts(result, failed=1)
    result.stdout.fnmatch_lines(["*t() returned 17.0 MiB of JSON; a record holds at most 16 MiB*xp.output_path*"])


def test_unwritable_store_says_how_to_fix(pytester: pytest.Pytester) -> None:
    blocker = pytester.path / "blocked"
    blocker.write_text("a file, not a directory")
    pytester.makepyfile(xp_w="from pytest_xp import trial\n@trial(1, {'i': [0]})\ndef t(i):\n    return i\n")
    result = pytester.runpytest("--xp-dir", str(blocker / "store"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines(
        ["ERROR: StoreError: pytest-xp cannot create its store at *store: File exists (EEXIST). Point --xp-dir*"]
    )
    assert "store.py" not in result.stdout.str() + result.stderr.str()


def test_newer_schema_in_store_is_refused_clearly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_s="from pytest_xp import trial\n@trial(1, {'i': [0]})\ndef t(i):\n    return i\n")
    pytester.runpytest()
    ((directory, record),) = stored_records(pytester.path / ".xp")
    append_line(directory, dumps(record).replace('"schema_version": 1', '"schema_version": 99').encode())
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(
        ["*was written by a newer pytest-xp (schema 99*upgrade pytest-xp or use another --xp-dir*"]
    )


def test_corrupt_record_is_quarantined_and_rerun(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(xp_s="from pytest_xp import trial\n@trial(1, {'i': [0, 1]})\ndef t(i):\n    return i\n")
    pytester.runpytest()
    directory = stored_records(pytester.path / ".xp")[0][0]
    append_line(directory, b'{"schema_version": 1, "trunc')
    result = pytester.runpytest("-W", "default")
    assert_counts(result, passed=1, cached=1)
    result.stdout.fnmatch_lines(["*line 1 of*could not be read*skipped*"])
    to_loose_layout(pytester.path / ".xp")  # the same in a store from before segments: the file is set aside
    (directory / "record.json").write_text('{"schema_version": 1, "trunc')
    result = pytester.runpytest("-W", "default")
    assert_counts(result, passed=1, cached=1)
    result.stdout.fnmatch_lines(["*could not be read*moved it to*.quarantine*"])
    assert list((pytester.path / ".xp" / ".quarantine").iterdir())


def test_path_traversal_params_stay_inside_the_store(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        xp_p="""
        from pytest_xp import trial

        @trial(1, {"name": ["../../escape", "/etc/passwd", "a" * 400, "..", "ok"]})
        def t(name, xp):
            return str(xp.output_path)
        """
    )
    assert_counts(pytester.runpytest(), passed=5)
    store = (pytester.path / ".xp").resolve()
    found = stored_records(pytester.path / ".xp")
    assert len(found) == 5
    for path, _ in found:
        assert path.resolve().is_relative_to(store)
        assert len(path.name) <= 113  # readable part + full sha256 of the params
    assert not (pytester.path.parent / "escape").exists()


def test_records_respect_the_umask(pytester: pytest.Pytester) -> None:
    import os
    import stat

    pytester.makepyfile(xp_u="from pytest_xp import trial\n@trial(1, {'i': [0]})\ndef t(i):\n    return i\n")
    old = os.umask(0o022)
    try:
        pytester.runpytest_subprocess()
    finally:
        os.umask(old)
    for path in (pytester.path / ".xp").rglob("*"):
        mode = path.stat().st_mode
        assert not mode & stat.S_IWOTH, path


def test_help_lists_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == 0
    out = result.stdout.str()
    for option in ("--xp-dir", "--xp-report", "--xp-isolate", "--xp-gpus", "--xp-shard", "--xp-slurm", "xp_files"):
        assert option in out
