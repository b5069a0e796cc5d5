"""Hydra's submitit SLURM launcher, made safe for sweeps on a real cluster.

- Waits on every job of the array (also one that SLURM requeued after its node failed) and turns
  a job that SLURM ended without a result (scancel, time limit, out of memory, a crashed rank, a
  lost node) into a recorded outcome in its run dir, instead of submitit's UncompletedJobError:
  the sweep summary is written, lists it, and the sweep exits 1.
- In the job: the time-limit signal stops the run at a safe point with last.ckpt saved, the job
  requeues itself, and a requeued job (also after `scontrol requeue`) resumes its run dir.
"""

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)
RESULT_WAIT_S = 5  # after SLURM says a job ended, how long its result file may take to appear
POLL_S = 2.0
RELEASE_S = 10.0


class DlopsSlurmLauncher(SlurmLauncher):
    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict[type, Singleton]) -> JobReturn:
        """Run one job on its SLURM node (as Hydra's launcher does), resuming it after a requeue and
        requeueing it after the time-limit signal."""
        import submitit
        from hydra.core.utils import run_job

        from dlops.lifecycle import slurm

        slurm.route_time_limit_signal()
        Singleton.set_state(singleton_state)
        setup_globals()
        sweep_dir = str(self.config.hydra.sweep.dir)
        overrides = slurm.resume_override(list(sweep_overrides), sweep_dir)
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config.hydra.job) as job:
            job.id = submitit.JobEnvironment().job_id
            config.hydra.job.num = job_num
        run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        slurm.end_previous_attempt(run_dir)
        try:
            return run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                           config=config, job_dir_key=job_dir_key, job_subdir_key="hydra.sweep.subdir")
        finally:
            if slurm.requeue_if_signalled(run_dir, int(self.params.get("max_num_timeout") or 0)):
                raise SystemExit(0)  # no result: the sweep waits for the requeued job

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        """Submit the sweep as one job array and wait for every job, whatever becomes of it."""
        import submitit

        from dlops.lifecycle.slurm import listed, release_requeued

        if shutil.which("sbatch") is None:
            raise SystemExit("error: hydra/launcher=submitit_slurm submits the jobs with SLURM's sbatch, "
                             "which is not on PATH here. Start the sweep on the cluster's login node, "
                             "or try it on this machine with hydra/launcher=submitit_local.")

        params = dict(self.params)
        executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                         slurm_max_num_timeout=params.pop("max_num_timeout"))
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        jobs_args = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            jobs_args.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                              Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*jobs_args, strict=True))
        array = jobs[0].job_id.split("_")[0]
        log.info("SLURM jobs %s submitted; waiting for them (squeue -j %s)",
                 ", ".join(j.job_id for j in jobs), array)
        begin_set, released = "begin" in (params.get("additional_parameters") or {}), 0.0
        # done for submitit (sacct) and no longer in SLURM's queue: a job whose node failed is
        # NODE_FAIL in sacct, and pending again once SLURM has requeued it
        while not all(j.done() for j in jobs) or listed(array):
            # a job that requeued itself (time limit) or was requeued (preemption, a lost node); at
            # most every RELEASE_S, to spare slurmctld
            if not begin_set and time.time() - released > RELEASE_S:
                release_requeued(array)
                released = time.time()
            time.sleep(POLL_S)
        return [self._outcome(job, args) for job, args in zip(jobs, jobs_args, strict=True)]

    def _outcome(self, job: Any, args: tuple) -> JobReturn:
        """The job's own result, or, for a job that ended without one, its end recorded in its run dir."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        from dlops.lifecycle.slurm import record_lost_job, wait_until_gone

        job._results_timeout_s = RESULT_WAIT_S  # submitit waits 15 s per job for a result file
        try:
            return job.results()[0]
        except UncompletedJobError:
            state = job.state
        except FailedJobError as exc:  # raised in the job outside the run (e.g. composing its config)
            lines = [line for line in str(exc).splitlines() if line.strip()]
            state = f"{job.state}: {lines[-1] if lines else 'an error'}"
        overrides, _, idx = args[:3]
        config, run_dir = self.config, Path(str(self.config.hydra.sweep.dir)) / str(idx)
        try:  # where the job's config puts it (hydra.sweep.subdir may be set)
            config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(config.hydra.job):
                config.hydra.job.num = idx
            run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        except Exception as exc:  # noqa: BLE001 - the job's own error says more; keep the default dir
            log.debug("cannot compose job #%d's config here: %s", idx, exc)
        wait_until_gone(job.job_id)
        summary = record_lost_job(run_dir, list(overrides), job.job_id, state)
        log.error("job #%d (SLURM %s) ended %s without a result: %s in %s", idx, job.job_id, state,
                  summary.get("status"), run_dir)
        return JobReturn(overrides=list(overrides), cfg=config, hydra_cfg=config,
                         _return_value=math.nan, status=JobStatus.COMPLETED)
