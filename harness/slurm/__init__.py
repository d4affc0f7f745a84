"""Runs as Slurm jobs, through submitit: the scheduler the lab already has, never one of our own.

    config.py   SlurmOptions: partition, account, QoS, GPUs per job, time margin, extra sbatch options,
                the shared folder, requeue; from the command line or a [slurm] section of a config file
    node.py     what a job runs on its compute node: the same pipeline (docker backend, or local when
                asked), with the node's hardware probed and its NVML sampled there
    backend.py  the submitting side: one job per run (an array per call), waited for, cancelled on
                Ctrl-C, each record read from the shared folder; a dead node or a preemption ends
                infra_error with Slurm's reason (requeued once with --requeue)
    jobs.py     `harness slurm status`: the harness's jobs as Slurm sees them
"""
