"""runtime.ThreadChoice: a network's calls run on the caller's threads or on one, whichever
its own timings say is faster; and the choice never changes an output."""

import math

import numba
import numpy as np
import pytest
from helpers import on_threads

import cnnc
from cnnc import runtime
from cnnc.runtime import ThreadChoice

MS = 1e-3


def drive(choice, calls, seconds_of):
    """Make `calls` calls: each takes seconds_of(call index, one thread?) seconds.
    Returns the calls that ran on one thread."""
    ones = []
    for i in range(calls):
        one = choice.one_thread()
        ones.append(one)
        choice.record(seconds_of(i, one))
    return np.array(ones)


def test_one_thread_is_taken_when_it_is_faster():
    """Two threads 2 ms, one thread 1.5 ms: after the first probe every call but the
    probes of two threads runs on one thread."""
    choice = ThreadChoice(2)
    ones = drive(choice, 3000, lambda i, one: 1.5 * MS if one else 2.0 * MS)
    assert choice.one
    first_probe = np.argmax(ones)
    # timed: RECENT calls, then PROBE calls' worth of time over BUDGET, then the probe
    expected = ThreadChoice.RECENT + round(ThreadChoice.PROBE / ThreadChoice.BUDGET) - 1
    assert abs(first_probe - expected) <= 1
    after = ones[first_probe:]
    assert 0.97 < after.mean() < 1.0  # the probes of two threads: a few %


def test_the_first_call_of_a_probe_is_not_counted():
    """The first two calls the other way take 10 ms here (the worker wakes or idles, the
    caches refill): the first is not counted and the median outvotes the second, so one
    thread is still taken for its 1.5 ms a call after them."""
    choice = ThreadChoice(2)
    run = [0]  # calls in a row on one thread

    def seconds(i, one):
        run[0] = run[0] + 1 if one else 0
        return 10 * MS if 1 <= run[0] <= 2 else (1.5 * MS if one else 2.0 * MS)

    drive(choice, 1000, seconds)
    assert choice.one


def test_a_stall_in_a_probe_delays_the_next_by_the_budgeted_wait_only():
    """Every call of the first probe stalls for 1 s (the process was descheduled, say):
    the probe loses, and the next one comes after calls worth what a call costs over the
    budget, not 1 s over it -- then one thread, 1.5 ms against 2, is taken."""
    choice = ThreadChoice(2)
    probes = [0]
    previous = [False]

    def seconds(i, one):
        if one and not previous[0]:
            probes[0] += 1
        previous[0] = one
        if one:
            return 1.0 if probes[0] == 1 else 1.5 * MS
        return 2.0 * MS

    ones = drive(choice, 3000, seconds)
    assert choice.one
    first_probe = np.argmax(ones)
    after_first = first_probe + ThreadChoice.PROBE
    second_probe = after_first + np.argmax(ones[after_first:])
    # patience 2 after a probe that changed nothing, times PROBE calls over the budget
    wait = 2 * ThreadChoice.PROBE / ThreadChoice.BUDGET
    assert second_probe - first_probe <= wait + ThreadChoice.PROBE + 2


def test_a_slower_one_thread_costs_at_most_the_budget():
    """One thread 2x slower: never taken; its probes add about BUDGET / PATIENCE to the
    run time once they have found nothing a few times."""
    choice = ThreadChoice(2)
    ones = drive(choice, 20000, lambda i, one: 4.0 * MS if one else 2.0 * MS)
    assert not choice.one
    assert ones.any()  # it was timed
    total = np.where(ones, 4.0, 2.0).sum()
    assert (total - 2.0 * len(ones)) / total <= 1.1 * ThreadChoice.BUDGET / ThreadChoice.PATIENCE


def test_the_choice_follows_a_change_and_comes_back():
    """Two threads faster, then slower (the cores moved apart), then faster again. The
    first change shows in the current choice's own times (DRIFT): it is followed within a
    few calls. The second does not (one thread takes as long as before): the next
    periodic probe finds it, due after calls worth 100x (400x once probes have changed
    nothing) what a probe cost over the choice (0.7 ms a call). Between the changes the
    choice does not flap."""
    def seconds(i, one):
        apart = 3000 <= i < 6000
        return 2.6 * MS if one else (3.3 * MS if apart else 1.6 * MS)

    choice = ThreadChoice(2)
    ones = drive(choice, 9000, seconds)
    soon = 2 * ThreadChoice.RECENT + ThreadChoice.PROBE
    probe, budget = ThreadChoice.PROBE, ThreadChoice.BUDGET
    periodic = math.ceil(ThreadChoice.PATIENCE * probe * (3.3 - 2.6) / 2.6 / budget) + 2 * probe
    assert ones[:3000].mean() < 0.02
    assert ones[3000 + soon:6000].mean() > 0.95  # probes cost ~BUDGET: 3 calls in ~80
    assert not ones[3000 + soon:6000].all()  # the probes of two threads
    assert ones[6000 + periodic:].mean() < 0.02
    assert not choice.one


def test_noise_within_the_margin_changes_nothing():
    """One thread 3% faster: inside MARGIN, so the caller's threads stay. Probing costs
    nothing there, so probes come every FLOOR calls, PATIENCE times that once they have
    changed nothing a few times."""
    rng = np.random.default_rng(0)
    choice = ThreadChoice(2)
    ones = drive(choice, 5000, lambda i, one: (0.97 if one else 1.0) * MS * rng.uniform(0.99, 1.01))
    assert not choice.one
    assert ones.mean() <= ThreadChoice.PROBE / (ThreadChoice.FLOOR * ThreadChoice.PATIENCE) * 1.2


def test_short_calls_are_not_timed():
    """Calls shorter than SHORT turn the choice off after its first RECENT calls."""
    choice = ThreadChoice(2)
    ones = drive(choice, 1000, lambda i, one: 0.05 * MS if one else 0.1 * MS)
    assert choice.off and not ones.any()


SOURCE = """network n(input: 8x12x12) {
  conv(16, 3x3, padding=same) -> relu -> maxpool(2) -> conv(24, 1x1) -> dense(5)
}
"""


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two threads")
def test_a_call_on_one_thread_gives_the_same_bits_and_restores_the_threads(monkeypatch):
    """A call that the choice puts on one thread sets one thread for the call only, gives
    the bits of the caller's threads, and leaves the caller's count even when it fails."""
    net = cnnc.compile_source(SOURCE)
    x = np.random.default_rng(0).standard_normal((2, 8, 12, 12)).astype(np.float32)
    with on_threads(2):
        want = net(x)
        choice = net._plan._choices[2]
        assert choice.threads == 2 and not choice.one_thread()
        seen = []
        real = numba.set_num_threads
        monkeypatch.setattr(runtime.numba, "set_num_threads", lambda n: (seen.append(n), real(n)))
        choice.one = True
        got = net(x)
        assert seen == [1, 2] and numba.get_num_threads() == 2
        np.testing.assert_array_equal(got, want)
        assert net._plan.calls_on_one_thread(2) == 1  # what `cnnc bench` reports

        def fails(*args):
            raise RuntimeError("boom")

        monkeypatch.setattr(net._plan, "_interpret", fails)
        with pytest.raises(RuntimeError):
            net(x)
        assert numba.get_num_threads() == 2


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two threads")
def test_no_choice_when_switched_off(monkeypatch):
    """CNNC_ADAPTIVE_THREADS=0 (runtime.ADAPTIVE_THREADS, read at import): calls keep the
    caller's threads and time nothing; with it on, the same call makes a choice."""
    net = cnnc.compile_source(SOURCE)
    x = np.zeros((1, 8, 12, 12), np.float32)
    with on_threads(2):
        monkeypatch.setattr(runtime, "ADAPTIVE_THREADS", False)
        net(x)
        assert net._plan._choices == {}
        monkeypatch.setattr(runtime, "ADAPTIVE_THREADS", True)
        net(x)
        assert net._plan._choices[1].threads == 2


def test_the_quick_thread_query_agrees_with_numba():
    """runtime._num_threads (the threading layer's own query) says what
    numba.get_num_threads says, at every count."""
    for threads in range(1, numba.config.NUMBA_NUM_THREADS + 1):
        with on_threads(threads):
            assert runtime._num_threads() == numba.get_num_threads() == threads
