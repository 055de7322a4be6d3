"""Command line: ``daskavatar run JOB.json [--overwrite]``, ``daskavatar demo``,
``daskavatar plugins``.

A thin layer over :func:`daskavatar.run_job`: it starts or connects to the cluster, prints
the dashboard link, shows Dask's progress bar and prints the job summary. Library errors
end the command with exit status 1 and one readable line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from daskavatar.exceptions import DaskAvatarError


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.command(args)
    except DaskAvatarError as error:
        print(f"daskavatar: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("daskavatar: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="daskavatar",
                                     description="Turn face photos into 3D avatars on Dask.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the job's progress")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a job JSON file")
    run.add_argument("job", help="path of the job JSON file")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the outputs of an earlier job in output_path instead of "
                          "resuming it; needed when the job's spec or inputs changed")
    _cluster_options(run)
    run.set_defaults(command=_run)

    demo = commands.add_parser("demo", help="run the whole job on built-in photos")
    demo.add_argument("--output", default="daskavatar-demo",
                      help="folder for the demo inputs and outputs (default: %(default)s)")
    _cluster_options(demo)
    demo.set_defaults(command=_demo)

    plugins = commands.add_parser("plugins", help="list plugins, or install one on a cluster")
    plugins.add_argument("--scheduler", metavar="ADDRESS",
                         help="also list the plugins installed on this running cluster")
    plugins.set_defaults(command=_list_plugins)
    actions = plugins.add_subparsers(metavar="ACTION")
    install = actions.add_parser(
        "install", help="install a plugin folder or wheel on a running cluster")
    install.add_argument("path", help="plugin project folder (with setup.cfg or pyproject.toml) "
                                      "or .whl file")
    install.add_argument("--scheduler", metavar="ADDRESS", required=True,
                         help="address of the running Dask scheduler, e.g. tcp://host:8786")
    install.set_defaults(command=_install_plugin)
    return parser


def _version() -> str:
    from daskavatar import __version__
    return __version__


def _cluster_options(parser) -> None:
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="address of a running Dask scheduler, e.g. tcp://host:8786; "
                             "default: start a local cluster of 512 MB workers")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="workers of the local cluster (default: one per CPU core)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run(args) -> int:
    from daskavatar.jobs.spec import JobSpec

    # A plugin installed only on the cluster is looked up there by run_job, so the file
    # is passed on unvalidated.
    JobSpec.read_file(args.job)
    return _execute(args.job, args)


def _demo(args) -> int:
    from daskavatar.demo import demo_job, write_demo_inputs
    from daskavatar.jobs.spec import JobSpec

    output = os.path.abspath(args.output)
    inputs = os.path.join(output, "input")
    paths = write_demo_inputs(inputs)
    print(f"Demo input: {len(paths)} photos in {inputs}")
    return _execute(JobSpec.from_dict(demo_job(inputs, os.path.join(output, "result"))), args)


def _execute(spec, args) -> int:
    from daskavatar.jobs.runner import run_job

    def show_dashboard(client):
        print(f"Dask dashboard: {client.dashboard_link}", flush=True)

    report = run_job(spec, progress=not args.no_progress, scheduler=args.scheduler,
                     n_workers=None if args.scheduler else args.workers,
                     on_connect=show_dashboard, overwrite=getattr(args, "overwrite", False))
    print()
    print(report.summary())
    print(f"\nOutputs: {report.spec['output_path']}")
    return 0 if report.counts["failed_identities"] == 0 else 2


def _list_plugins(args) -> int:
    from daskavatar.plugins.registry import discover

    if args.scheduler:
        from daskavatar.cluster import connect
        from daskavatar.plugins.install import sync_cluster_plugins

        with connect(args.scheduler) as client:
            installed = sync_cluster_plugins(client)
        print(f"Installed on {args.scheduler}: {', '.join(installed) or 'none'}")

    plugins = sorted(discover(log_errors=False).values(), key=lambda p: p.name.lower())
    print(f"{'plugin':<20} {'version':<10} {'package':<20} status")
    for info in plugins:
        status = "ok" if info.error is None else f"broken: {info.error}"
        print(f"{info.name:<20} {info.version:<10} {info.distribution:<20} {status}")
    return 0 if all(info.error is None for info in plugins) else 2


def _install_plugin(args) -> int:
    from daskavatar.cluster import connect
    from daskavatar.plugins.install import load_plugin_wheel, register_wheel

    # A package that cannot be built or loaded fails here, before the scheduler is contacted.
    wheel = load_plugin_wheel(args.path)
    with connect(args.scheduler) as client:
        register_wheel(wheel, client)
        workers = len(client.scheduler_info()["workers"])
    print(f"Installed {wheel.distribution} {wheel.version} on {workers} workers of "
          f"{args.scheduler}; jobs from now on can name its plugins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
