import pytest

from scidl.runtime.env import LaunchError, detect_launch, first_slurm_host, slurm_port


def test_single_process():
    env = detect_launch({})
    assert env.launcher == "single" and env.world_size == 1 and env.rank == 0


def test_torchrun():
    env = detect_launch({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                         "MASTER_ADDR": "node7", "MASTER_PORT": "1234"})
    assert (env.launcher, env.rank, env.world_size, env.local_rank) == ("torchrun", 3, 8, 1)
    assert (env.master_addr, env.master_port) == ("node7", 1234)


def test_slurm_srun():
    env = detect_launch({"SLURM_PROCID": "5", "SLURM_NTASKS": "12", "SLURM_LOCALID": "2",
                         "SLURM_JOB_ID": "424242", "SLURM_NODELIST": "gpu[017-019,023]",
                         "SLURM_NTASKS_PER_NODE": "4"})
    assert (env.launcher, env.rank, env.world_size, env.local_rank) == ("slurm", 5, 12, 2)
    assert env.master_addr == "gpu017"
    assert env.master_port == slurm_port("424242") == 15000 + 424242 % 20000
    assert env.local_world_size == 4


def test_slurm_nodelist_parsing():
    assert first_slurm_host("nid[001-004]") == "nid001"
    assert first_slurm_host("a1,a2") == "a1"
    assert first_slurm_host("login") == "login"


def test_openmpi():
    env = detect_launch({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4",
                         "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
                         "MASTER_ADDR": "h0"})
    assert (env.launcher, env.rank, env.world_size, env.local_rank, env.local_world_size) == ("mpi", 1, 4, 1, 2)


def test_mpich_pmi():
    env = detect_launch({"PMI_RANK": "2", "PMI_SIZE": "3", "MASTER_ADDR": "h0", "MASTER_PORT": "4000"})
    assert (env.launcher, env.rank, env.world_size, env.master_port) == ("mpi", 2, 3, 4000)


def test_mpi_without_master_addr_is_a_clear_error():
    with pytest.raises(LaunchError, match="MASTER_ADDR"):
        detect_launch({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"})


def test_slurm_allocation_without_srun_warns():
    with pytest.warns(UserWarning, match="srun"):
        env = detect_launch({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"})
    assert env.launcher == "single"


def test_torchrun_takes_precedence_over_slurm():
    env = detect_launch({"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"})
    assert env.launcher == "torchrun"


def test_inconsistent_rank_is_rejected():
    with pytest.raises(LaunchError, match="outside world size"):
        detect_launch({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(LaunchError, match="not an integer"):
        detect_launch({"RANK": "x", "WORLD_SIZE": "4"})
