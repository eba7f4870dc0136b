"""``mbrl-ros train``: play a Stackelberg MBRL game (PAL, MAL, GDA, BR, MAL fixes) in simulation.

Example: ``mbrl-ros train --algo pal --task dclaw-turn-fixed --samples 20000 --seed 0 --out runs/pal0``.
Writes ``metrics.jsonl``, ``policy.onnx``, ``curve.png``, ``checkpoint/`` and ``summary.json`` to
``--out`` and prints the summary as one JSON line at the end.

Sim-to-real: ``--set randomize_dynamics=true`` trains under ROBEL's dynamics randomisation,
``--set dynamics=dclaw-weak`` fixes a perturbed world (``mbrl_ros.tasks.sim.PERTURBATIONS``),
``--init-from RUN_DIR [--init-from-parts policy,model,buffer]`` starts from a finished run.
"""

from __future__ import annotations

import argparse
import json

HELP = "train a policy with a Stackelberg MBRL game (pal, mal, gda, br, mal-agent-reward, mal-noise) in simulation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--algo", default=None, help="pal | mal | gda | br | mal-agent-reward | mal-noise (default pal)"
    )
    parser.add_argument("--task", default=None, help="task id, e.g. dclaw-turn-fixed (see `mbrl-ros tasks`)")
    parser.add_argument(
        "--samples", type=int, default=None, help="budget of real samples (default: config/<algo>.yaml)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--out", default=None, help="output directory (default: the --resume directory)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a hyper-parameter (repeatable), e.g. --set npg_steps_conservative=6",
    )
    parser.add_argument("--resume", default=None, metavar="DIR", help="continue a run from DIR (or DIR/checkpoint)")
    parser.add_argument(
        "--init-from",
        default=None,
        metavar="RUN_DIR",
        help="start a new game from a finished run's policy (fine-tuning, e.g. on a perturbed "
        "world: --set dynamics=dclaw-weak); its task and network widths must match",
    )
    parser.add_argument(
        "--init-from-parts",
        default="policy",
        metavar="PARTS",
        help="what --init-from carries over: policy (always), model, buffer; comma-separated (default: policy)",
    )
    parser.add_argument(
        "--device",
        default=None,
        choices=["cpu", "cuda", "auto"],
        help="torch device (default: the config's device, auto = CUDA when available)",
    )
    parser.add_argument(
        "--threads",
        default="auto",
        help="torch threads: a number, or auto (default): before every phase, the cores "
        "other processes leave free (at most 4)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_threads(value: str | int | None, max_threads: int):
    """``--threads``: ``auto`` (free cores, re-chosen before every phase) or a positive number."""
    from mbrl_ros.core.threads import CoreBudget

    if value is None or str(value).strip().lower() == "auto":
        return CoreBudget(max_threads=max_threads)
    try:
        n = int(str(value))
    except ValueError:
        raise ValueError(f"--threads must be a positive number or 'auto', got {value!r}") from None
    if n <= 0:
        raise ValueError(f"--threads must be positive, got {n}")
    return CoreBudget(fixed=n)


def run(args: argparse.Namespace) -> int:
    import torch

    from mbrl_ros.core.config import load_config
    from mbrl_ros.core.train import POINTMASS_IDS, default_threads, train

    if args.samples is not None and args.samples <= 0:
        raise ValueError(f"--samples must be a positive number of real samples, got {args.samples}")
    cores = parse_threads(args.threads, default_threads())
    torch.set_num_threads(cores.choose())
    overrides: list[str] = list(args.overrides)
    if args.samples is not None:
        overrides.append(f"samples={args.samples}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.device is not None:
        overrides.append(f"device={args.device}")

    if args.init_from is not None and args.resume is not None:
        raise ValueError("--resume continues a run, --init-from starts a new one from it: give one of them")
    if args.resume is not None:
        import json as _json
        from pathlib import Path

        from mbrl_ros.core.config import GameConfig, apply_overrides

        ckpt = Path(args.resume)
        ckpt = ckpt / "checkpoint" if (ckpt / "checkpoint").is_dir() else ckpt
        if not (ckpt / "state.json").is_file():
            raise ValueError(f"--resume {args.resume}: no checkpoint there")
        saved = _json.loads((ckpt / "state.json").read_text())["config"]
        if args.algo is not None and args.algo != saved["algo"]:
            raise ValueError(f"--algo {args.algo} does not match the checkpoint's {saved['algo']}")
        if args.task is not None and args.task != saved["task_id"]:
            raise ValueError(f"--task {args.task} does not match the checkpoint's {saved['task_id']}")
        override_dict: dict = {}
        probe = GameConfig.from_dict(saved)
        apply_overrides(probe, overrides)  # validates keys and types
        for item in overrides:
            key = item.split("=", 1)[0].strip()
            override_dict[key] = getattr(probe, key)
        out = args.out or str(ckpt.parent)
        summary = train(
            probe, out, resume=ckpt, resume_overrides=override_dict, progress=not args.no_progress, cores=cores
        )
    else:
        if args.task is None or args.out is None:
            raise ValueError("--task and --out are required (unless --resume is given)")
        task_id = args.task
        if task_id not in POINTMASS_IDS:
            from mbrl_ros.tasks import canonical_task_id

            task_id = canonical_task_id(task_id)
        init_parts: tuple[str, ...] = ("policy",)
        if args.init_from is None:
            cfg = load_config(args.algo or "pal", task_id, overrides)
        else:
            from mbrl_ros.core.config import GameConfig, apply_overrides
            from mbrl_ros.core.train import init_checkpoint_dir, parse_init_parts

            init_parts = parse_init_parts(args.init_from_parts)
            src = init_checkpoint_dir(args.init_from)  # a missing checkpoint is an error before any world is built
            # the source run's hyper-parameters (its networks' widths above all), then --algo and --set
            cfg = GameConfig.from_dict(json.loads((src / "state.json").read_text())["config"])
            if cfg.task_id != task_id:
                raise ValueError(f"--init-from {args.init_from} learnt {cfg.task_id}, not {task_id}")
            if args.algo is not None:
                cfg.algo = args.algo
            apply_overrides(cfg, overrides)
            cfg.validate()
        summary = train(
            cfg, args.out, progress=not args.no_progress, cores=cores, init_from=args.init_from, init_parts=init_parts
        )
    print(json.dumps(summary))
    return 0
