"""The thread policy (cfrec.threads) and its use by the PyTorch models."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_info

import cfrec.threads as threads_mod
from cfrec.errors import CfrecError
from cfrec.models.mf import BiasedMF
from cfrec.models.neumf import NeuMF
from cfrec.models.svdpp import SVDpp
from cfrec.testing import make_ratings
from cfrec.threads import (
    ENV_VAR,
    MIN_PARALLEL_WORK,
    available_cores,
    check_threads,
    configured_threads,
    pool_threads,
    threads_for,
    using_threads,
)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


# ---------------------------------------------------------------------- the rule
def test_small_work_gets_one_thread_large_work_every_core() -> None:
    assert threads_for(0) == 1
    assert threads_for(MIN_PARALLEL_WORK - 1) == 1
    assert threads_for(MIN_PARALLEL_WORK) == available_cores()
    assert threads_for(10 * MIN_PARALLEL_WORK) == available_cores()


def test_chunk_pools_get_every_core_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert pool_threads() == available_cores()
    assert pool_threads(1) == 1
    monkeypatch.setenv(ENV_VAR, "3")
    assert pool_threads() == 3
    assert pool_threads(2) == 2
    with pytest.raises(CfrecError, match="threads"):
        pool_threads(0)


def test_environment_variable_is_honoured_and_an_argument_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, " 3 ")
    assert configured_threads() == 3
    assert threads_for(1) == threads_for(10 * MIN_PARALLEL_WORK) == 3
    assert threads_for(1, threads=2) == 2
    monkeypatch.setenv(ENV_VAR, "")
    assert configured_threads() is None  # blank is unset
    assert threads_for(1) == 1


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5", "1e3"])
def test_bad_environment_values_are_clear_errors(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(ENV_VAR, raw)
    with pytest.raises(CfrecError, match=rf"{ENV_VAR}='{raw}': expected a whole number of threads >= 1"):
        threads_for(1)


@pytest.mark.parametrize("bad", [0, -1, 1.5, 2.0, True, "2"])
def test_bad_thread_arguments_are_clear_errors(bad: object) -> None:
    with pytest.raises(CfrecError, match=r"threads=.*expected a whole number of threads >= 1"):
        check_threads(bad)
    with pytest.raises(CfrecError, match="threads"):
        threads_for(1, threads=bad)  # type: ignore[arg-type]
    assert check_threads(None) is None and check_threads(4) == 4


# ---------------------------------------------------------------------- applying a count
def test_using_threads_sets_and_restores_torch_and_blas() -> None:
    before, blas_before = torch.get_num_threads(), _blas_threads()
    with using_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
        assert all(t == 1 for t in _blas_threads())
        with using_threads(2):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1  # the inner block restored the outer count
    assert torch.get_num_threads() == before and _blas_threads() == blas_before


def test_using_threads_restores_after_an_error_and_can_leave_blas_alone() -> None:
    before, blas_before = torch.get_num_threads(), _blas_threads()
    with pytest.raises(RuntimeError), using_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with using_threads(1, blas=False):
        assert torch.get_num_threads() == 1 and _blas_threads() == blas_before
    with pytest.raises(CfrecError):
        with using_threads(0):
            pass


def test_using_threads_touches_nothing_where_the_count_already_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process pinned to one count (as ``cfrec serve`` is) never writes the process-wide
    settings again, so concurrent requests cannot race on them."""
    with using_threads(1):
        calls: list[int] = []
        monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
        for pool in threads_mod._blas_pools().lib_controllers:
            monkeypatch.setattr(pool, "set_num_threads", lambda n: calls.append(n))
        with using_threads(1):
            assert torch.get_num_threads() == 1
        monkeypatch.undo()
        assert calls == []


def test_using_threads_sees_pools_loaded_after_its_first_call() -> None:
    first = threads_mod._blas_pools()
    import sys
    import types
    sys.modules["cfrec_test_fake_extension"] = types.ModuleType("cfrec_test_fake_extension")
    try:
        assert threads_mod._blas_pools() is not first  # rescanned after an import
    finally:
        del sys.modules["cfrec_test_fake_extension"]


# ---------------------------------------------------------------------- in the models
@pytest.mark.parametrize("cls", [BiasedMF, SVDpp, NeuMF])
def test_models_fit_on_the_chosen_threads_and_restore_the_setting(cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_ratings(n_users=30, n_items=20, per_user=6)
    before = torch.get_num_threads()
    seen: list[int] = []

    def record(_: dict) -> None:
        seen.append(torch.get_num_threads())

    kwargs = {"n_factors": 4, "epochs": 1, "batch_size": 64}
    cls(**kwargs).fit(data, on_epoch=record)  # a small step: one thread
    cls(threads=2, **kwargs).fit(data, on_epoch=record)
    monkeypatch.setenv(ENV_VAR, "2")
    cls(**kwargs).fit(data, on_epoch=record)
    assert seen == [1, 2, 2]
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("cls", [BiasedMF, SVDpp, NeuMF])
def test_models_reject_bad_thread_counts(cls: type) -> None:
    with pytest.raises(CfrecError, match=f"^{cls.__name__} threads must be None or a whole number >= 1 and <= 1024, got 0$"):
        cls(threads=0, epochs=1)  # refused at construction


def test_scoring_restores_the_thread_setting() -> None:
    data = make_ratings(n_users=30, n_items=20, per_user=6)
    before = torch.get_num_threads()
    for model in (BiasedMF(n_factors=4, epochs=1).fit(data), NeuMF(n_factors=4, epochs=1).fit(data)):
        model.recommend(data.raw_users()[0], k=3)
        model.predict(data.raw_users()[:5], data.raw_items()[:5])
        assert torch.get_num_threads() == before


def test_using_threads_does_not_import_torch() -> None:
    """A numpy-only model (EASE) must not pay torch's import for its thread setting."""
    import subprocess
    import sys

    code = ("import sys; from cfrec.threads import using_threads\n"
            "with using_threads(1): pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
