"""The ``deepclust`` command line: ``deepclust run`` and ``deepclust datasets``."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepclust",
        description="Cluster unlabeled images with k-means and deep models.",
    )
    parser.add_argument("--version", action="version", version=f"deepclust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="cluster a data set and write a run folder",
                         description="Cluster a data set and write a new run folder with config.json, "
                                     "metrics.json and assignments.csv. With no arguments it clusters "
                                     "scikit-learn's 8x8 digits, which needs no download.")
    run.add_argument("-d", "--dataset", default="digits",
                     help="a data set name (see 'deepclust datasets') or a path to an image folder "
                          "(default: digits)")
    run.add_argument("--data-dir", default=None,
                     help="folder holding the data set's files (default: $DEEPCLUST_DATA/<name>, "
                          "else ~/.cache/deepclust/<name>)")
    run.add_argument("--split", choices=["train", "test", "all"], default="all",
                     help="which part of the data set to cluster (default: all)")
    run.add_argument("--method", choices=_method_names(), default="kmeans", help="clustering method")
    run.add_argument("-k", "--clusters", type=int, default=None,
                     help="number of clusters (default: the number of classes of a labelled data set)")
    run.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same "
                                                          "clusters on the CPU (default: 0)")
    run.add_argument("--out", default="runs", help="where run folders are created (default: runs/)")
    run.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    run.add_argument("--grayscale", action="store_true", help="convert colour images to grey first")
    run.add_argument("--resize", type=int, default=None, metavar="SIZE",
                     help="resize images to SIZE x SIZE pixels")
    run.add_argument("--normalize", choices=["unit", "standard", "none"], default="unit",
                     help="pixel scaling: unit = [0, 1], standard = zero mean / unit variance per "
                          "channel (default: unit)")
    run.add_argument("--n-init", type=int, default=10, help="k-means restarts (default: 10)")
    run.add_argument("--backend", choices=["torch", "sklearn", "faiss"], default="torch",
                     help="k-means implementation: ours (torch), scikit-learn's or faiss's")
    deep = run.add_argument_group("deep methods (ae-kmeans, dec, idec, dcn, n2d)")
    deep.add_argument("-a", "--arch", default=None,
                      help="autoencoder: a shipped name (dec-dense, conv-mnist, conv-cifar, conv-coil20) or "
                           "a JSON/YAML file (default: chosen for the data's shape)")
    deep.add_argument("--pretrain", type=int, default=50, metavar="N",
                      help="autoencoder pretraining epochs (0 with --from: reuse that run's autoencoder)")
    deep.add_argument("--cluster", type=int, default=50, metavar="N",
                      help="clustering epochs of dec, idec and dcn (default: 50)")
    deep.add_argument("--layerwise", type=int, default=0, metavar="N",
                      help="epochs per layer of greedy denoising pretraining first "
                           "(dense stacks, DEC's recipe)")
    deep.add_argument("--from", dest="from_run", default=None, metavar="RUN_DIR",
                      help="start from the autoencoder saved in this finished deep run")
    deep.add_argument("--batch-size", type=int, default=256)
    deep.add_argument("--lr", type=float, default=1e-3)
    deep.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    deep.add_argument("--loss", choices=["mse", "mse-cosine", "bce"], default="mse",
                      help="reconstruction loss (mse-cosine: MSE minus cosine similarity)")
    deep.add_argument("--noise", type=float, default=0.0, help="denoising: std of input noise")
    deep.add_argument("--augment", action="store_true", help="random shifts and rotations while pretraining")
    run.add_argument("--visualize", action="store_true",
                     help="save plots (latent spaces, reconstructions, loss curves, confusion matrix, "
                          "cluster montage) as PNG in the run folder's plots/")
    run.add_argument("--resume", default=None, metavar="RUN_DIR",
                     help="continue an interrupted run from its last checkpoint (other options are "
                          "taken from its config.json)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.set_defaults(func=_cmd_run)

    datasets = sub.add_parser("datasets", help="list the data sets, the files each needs and where")
    datasets.add_argument("--data-dir", default=None, help="also look for files in this folder")
    datasets.set_defaults(func=_cmd_datasets)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("deepclust: interrupted.", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"deepclust: error: {err}", file=sys.stderr)
        return 2


def _cmd_run(args: argparse.Namespace) -> int:
    from .experiment import RunConfig, format_summary, resume_run, run

    if args.resume:
        print(format_summary(resume_run(args.resume)))
        return 0
    config = RunConfig(
        dataset=args.dataset, data_dir=args.data_dir, split=args.split, method=args.method,
        n_clusters=args.clusters, seed=args.seed, out=args.out, device=args.device,
        grayscale=args.grayscale, size=args.resize,
        normalize=None if args.normalize == "none" else args.normalize,
        n_init=args.n_init, backend=args.backend, arch=args.arch, pretrain_epochs=args.pretrain,
        cluster_epochs=args.cluster, layerwise_epochs=args.layerwise, batch_size=args.batch_size,
        lr=args.lr, optimizer=args.optimizer, loss=args.loss, noise=args.noise, augment=args.augment,
        from_run=args.from_run, visualize=args.visualize, progress=False if args.no_progress else None,
    )
    result = run(config)
    print(format_summary(result))
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from .data import describe_datasets

    print(describe_datasets(data_dir=args.data_dir))
    return 0


def _method_names() -> list[str]:
    from .methods import METHODS

    return sorted(METHODS)


if __name__ == "__main__":
    sys.exit(main())
