"""The contention model of ranks sharing cores (scidl.scaling.contention): one test per
term against a hand-computed case."""

from __future__ import annotations

import pytest

from scidl.scaling.contention import CoreSharing, phase_factor, sharing_factor, sync_delay


def test_sharing_factor_is_processor_sharing():
    # up to C ranks each have a core; beyond, k ranks share C cores: k/C
    assert sharing_factor(1, 2) == 1.0
    assert sharing_factor(2, 2) == 1.0
    assert sharing_factor(4, 2) == pytest.approx(2.0)
    assert sharing_factor(8, 2) == pytest.approx(4.0)
    assert sharing_factor(3, 4) == 1.0
    with pytest.raises(ValueError):
        sharing_factor(4, 0)


def test_sync_delay_is_what_the_probe_reads_beyond_sharing():
    # 4 ranks on 2 cores, probe step w = 2.5 ms read x3.0: sharing explains x2, the
    # remaining x1.0 of a 2.5 ms step is 2.5 ms per synchronisation
    assert sync_delay(3.0, 4, 2, 0.0025) == pytest.approx(0.0025)
    # 2 ranks on 2 cores read x1.2: 0.2 x 2.5 ms = 0.5 ms
    assert sync_delay(1.2, 2, 2, 0.0025) == pytest.approx(0.0005)
    # a probe reading less than sharing (noise) gives no negative delay
    assert sync_delay(1.8, 4, 2, 0.0025) == 0.0
    with pytest.raises(ValueError):
        sync_delay(3.0, 4, 2, 0.0)


def test_phase_factor_amortises_the_delay_over_the_compute():
    # 20 ms of compute, 2 collectives of 2.5 ms delay each, 4 ranks on 2 cores:
    # 2 + 2 x 2.5 / 20 = 2.25
    assert phase_factor(0.020, 2, 4, 2, 0.0025) == pytest.approx(2.25)
    # the probe's own step (w = 2.5 ms, one collective) reads back the probe: 2 + 1 = 3
    assert phase_factor(0.0025, 1, 4, 2, 0.0025) == pytest.approx(3.0)
    # one rank, no collective, or no compute: sharing only
    assert phase_factor(0.020, 2, 1, 2, 0.0025) == 1.0
    assert phase_factor(0.020, 0, 4, 2, 0.0025) == pytest.approx(2.0)
    assert phase_factor(0.0, 2, 4, 2, 0.0025) == pytest.approx(2.0)


def test_core_sharing_delay_between_and_beyond_probed_counts():
    cs = CoreSharing(cores=2, probe_step_s=0.002, probe_slowdown={2: 1.5, 4: 3.0})
    # δ(2) = (1.5 - 1)·2 ms = 1 ms; δ(4) = (3 - 2)·2 ms = 2 ms
    assert cs.delay(1) == 0.0
    assert cs.delay(2) == pytest.approx(0.001)
    assert cs.delay(4) == pytest.approx(0.002)
    # linear between the probed counts: δ(3) = 1.5 ms
    assert cs.delay(3) == pytest.approx(0.0015)
    # beyond the largest: δ(4)·8/4 = 4 ms
    assert cs.delay(8) == pytest.approx(0.004)
    # no probe: no delay, sharing only
    assert CoreSharing(cores=2, probe_step_s=0.002).delay(4) == 0.0


def test_core_sharing_factor_reads_back_the_probe_and_slows_long_phases_less():
    cs = CoreSharing(cores=2, probe_step_s=0.002, probe_slowdown={2: 1.5, 4: 3.0})
    # the probe's own step: its factor
    assert cs.factor(4, 0.002, 1) == pytest.approx(3.0)
    assert cs.factor(2, 0.002, 1) == pytest.approx(1.5)
    # a 20 ms step with 2 collectives at 4 ranks: 2 + 2 x 2 ms / 20 ms = 2.2
    assert cs.factor(4, 0.020, 2) == pytest.approx(2.2)
    # ... at 2 ranks: 1 + 2 x 1 ms / 20 ms = 1.1
    assert cs.factor(2, 0.020, 2) == pytest.approx(1.1)


def test_link_alpha_takes_the_calibration_ranks_scheduling_delay_out():
    from scidl.scaling.contention import link_alpha

    # probe step w = 2 ms; 8 ranks on 2 cores read x4.5: δ(8) = (4.5 - 4) x 2 ms = 1 ms.
    # A link fitted with 8 ranks read α = 1.6 ms: the link's own α is 0.6 ms
    sharing = CoreSharing(cores=2, probe_step_s=0.002, probe_slowdown={2: 1.0, 8: 4.5})
    assert link_alpha(0.0016, sharing, 8) == pytest.approx(0.0006)
    # 2 ranks on 2 cores that the probe read at x1.0 wait for no core: α as fitted
    assert link_alpha(0.0016, sharing, 2) == pytest.approx(0.0016)
    # never below 0
    assert link_alpha(0.0004, sharing, 8) == 0.0


def test_alpha_free_of_sharing_rewrites_both_levels_once():
    from scidl.scaling.collectives import alpha_free_of_sharing

    level = {"alpha": 0.0016, "beta": 1e-8, "gamma": 0.0, "note": "fit"}
    hw = {"inter": dict(level), "intra": dict(level), "compute_slowdown": {2: 1.0, 8: 4.5},
          "probe_step_s": 0.002, "concurrent_devices": 2}
    out = alpha_free_of_sharing(hw, 8)
    assert out["inter"]["alpha"] == pytest.approx(0.0006)
    assert out["intra"]["alpha"] == pytest.approx(0.0006)
    assert out["inter"]["beta"] == 1e-8 and "1.600 ms as fitted" in out["inter"]["note"]
    assert hw["inter"]["alpha"] == 0.0016  # the input is not changed
    # without the contention calibration: unchanged
    bare = {"inter": dict(level)}
    assert alpha_free_of_sharing(bare, 8) is bare


def test_cores_rate_between_and_beyond_measured_counts():
    from scidl.scaling.contention import cores_rate

    table = {2: 2e-9, 4: 4e-9, 8: 8e-9}
    assert cores_rate(table, 4) == 4e-9
    assert cores_rate(table, 6) == pytest.approx(6e-9)  # linear between 4 and 8
    assert cores_rate(table, 16) == pytest.approx(16e-9)  # beyond: in proportion to p
    assert cores_rate(table, 1) == 2e-9  # below the smallest: the smallest's
    with pytest.raises(ValueError):
        cores_rate({}, 4)


def test_cores_bound_rates_add_the_cores_cost_beyond_the_calibrations():
    from scidl.scaling.contention import cores_bound_rates

    # timed over the link at 4 ranks: 8 ns/B both; the cores alone: float16 3.5 ns/B at 4
    # and 7 ns/B at 8 ranks, float32 1.5 and 4 ns/B
    rates = {"allreduce": 8e-9, "allreduce:float16": 8e-9, "allgather": 9e-9}
    cores = {"allreduce": {4: 1.5e-9, 8: 4e-9}, "allreduce:float16": {4: 3.5e-9, 8: 7e-9}}
    at8 = cores_bound_rates(rates, cores, 8, 4)
    assert at8["allreduce:float16"] == pytest.approx(8e-9 + 3.5e-9)
    assert at8["allreduce"] == pytest.approx(8e-9 + 2.5e-9)
    assert at8["allgather"] == 9e-9  # no loopback timing: as timed
    # fewer ranks than the calibration's: the link's rate is not beaten
    assert cores_bound_rates(rates, cores, 2, 4) == rates
    assert cores_bound_rates(rates, cores, 4, 4) == rates
    assert rates["allreduce:float16"] == 8e-9  # the input is not changed


def test_hardware_levels_carry_the_cores_bound_rates_at_each_rank_count():
    from scidl.scaling.hardware import Hardware

    level = {"alpha": 0.0, "beta": 8e-9, "op_beta": {"allreduce": 8e-9,
                                                      "allreduce:float16": 8e-9},
             "op_beta_ranks": 4, "cores_beta": {"allreduce:float16": {4: 3.5e-9, 8: 7e-9}}}
    hw = Hardware.model_validate({"name": "v", "intra": level, "inter": level})
    assert hw.topology(8).inter.op_beta["allreduce:float16"] == pytest.approx(11.5e-9)
    assert hw.topology(8).intra.op_beta["allreduce:float16"] == pytest.approx(11.5e-9)
    assert hw.topology(4).inter.op_beta["allreduce:float16"] == pytest.approx(8e-9)
    assert hw.topology().inter.op_beta["allreduce:float16"] == 8e-9  # no rank count
    # the rank count of the rates unknown: as timed
    unknown = Hardware.model_validate({"name": "v", "intra": {**level, "op_beta_ranks": None}})
    assert unknown.topology(8).inter.op_beta["allreduce:float16"] == 8e-9


def test_op_rate_ranks_names_the_one_count_of_the_timings():
    from scidl.scaling.collectives import op_rate_ranks

    row = {"op": "allreduce", "bytes": 1024, "time_s": 0.001}
    assert op_rate_ranks([{**row, "ranks": 4}, {**row, "ranks": 4}, {**row, "ranks": 1}]) == 4
    assert op_rate_ranks([{**row, "ranks": 4}, {**row, "ranks": 8}]) is None
    assert op_rate_ranks([{**row, "ranks": 1}]) is None
