"""The public surface of suitkaise.processing: exactly these names, importable as documented."""

from __future__ import annotations

import subprocess
import sys

import suitkaise.processing as processing

EXPECTED = {
    "ErrorHandlerError",
    "OnFinishError",
    "Pool",
    "PostRunError",
    "PreRunError",
    "ProcessConfig",
    "ProcessError",
    "ProcessTimeoutError",
    "ResultError",
    "ResultTimeoutError",
    "RunError",
    "Share",
    "ShareError",
    "Skprocess",
    "Timeouts",
}


def test_all_is_exactly_the_documented_names() -> None:
    assert set(processing.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(processing, name) is not None


def test_every_error_is_a_process_error() -> None:
    for name in EXPECTED:
        obj = getattr(processing, name)
        if name.endswith("Error") and name != "ShareError":
            assert issubclass(obj, processing.ProcessError)
    assert issubclass(processing.ResultTimeoutError, processing.ProcessTimeoutError)


def test_import_suitkaise_does_not_import_processing_or_cloudpickle() -> None:
    code = (
        "import sys, suitkaise; "
        "print(sorted(m for m in ('suitkaise.processing', 'cloudpickle', 'multiprocessing', "
        "'concurrent.futures') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
