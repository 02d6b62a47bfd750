import pytest

from mudpuppy.runtime.env import Env, _first_slurm_host, read_env

pytestmark = pytest.mark.timeout(300)


def test_defaults_are_a_single_local_process():
    assert read_env({}) == Env()


def test_torchrun_variables():
    env = read_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "GROUP_RANK": "1", "MASTER_ADDR": "10.0.0.2",
                    "MASTER_PORT": "1234", "MUDPUPPY_RUN_ID": "r1", "MUDPUPPY_ATTEMPT": "2"})
    assert (env.rank, env.local_rank, env.world_size, env.node_rank) == (3, 1, 4, 1)
    assert (env.master_addr, env.master_port, env.run_id, env.attempt) == ("10.0.0.2", 1234, "r1", 2)
    assert env.distributed and not env.is_main


def test_slurm_variables_without_torchrun():
    env = read_env({"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8", "SLURM_NODEID": "2",
                    "SLURM_JOB_NUM_NODES": "4", "SLURM_JOB_NODELIST": "gpu[07-10],cpu1", "SLURM_JOB_ID": "991",
                    "SLURM_RESTART_COUNT": "1"})
    assert (env.rank, env.local_rank, env.world_size, env.node_rank, env.nnodes) == (5, 1, 8, 2, 4)
    assert (env.master_addr, env.run_id, env.attempt) == ("gpu07", "991", 1)


def test_skypilot_variables():
    env = read_env({"SKYPILOT_NODE_RANK": "1", "SKYPILOT_NUM_NODES": "2", "SKYPILOT_NUM_GPUS_PER_NODE": "4",
                    "SKYPILOT_NODE_IPS": "10.1.0.5\n10.1.0.6", "LOCAL_RANK": "2", "SKYPILOT_TASK_ID": "sky-1"})
    assert (env.rank, env.world_size, env.node_rank, env.nnodes) == (6, 8, 1, 2)
    assert (env.master_addr, env.run_id) == ("10.1.0.5", "sky-1")


def test_mudpuppy_names_override_launcher_names_and_bad_numbers_fall_back():
    env = read_env({"RANK": "1", "MUDPUPPY_RANK": "0", "WORLD_SIZE": "x", "MODAL_TASK_ID": "ta-1"})
    assert env.rank == 0 and env.world_size == 1 and env.run_id == "ta-1"


def test_slurm_nodelist_first_host():
    assert _first_slurm_host("n1") == "n1"
    assert _first_slurm_host("n[1-3,7],gpu2") == "n1"
    assert _first_slurm_host("a,b") == "a"


def test_torch_variables_round_trip():
    env = Env(rank=1, local_rank=1, world_size=2, master_addr="h", master_port=9)
    assert read_env(env.torch_variables()).rank == 1
