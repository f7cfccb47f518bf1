"""The ``deepclust`` command line: ``deepclust run`` and ``deepclust datasets``."""

from __future__ import annotations

import argparse
import copy
import sys
import traceback
from pathlib import Path

from . import __version__, _argtypes, determinism
from ._errors import describe_error, sigterm_as_interrupt
from ._heap import pin_mmap_threshold
from .config import DEFAULT_METHOD, PHOTO_METHOD
from .deep.self_label import SCHEDULES as SELF_LABEL_SCHEDULES
from .pipeline.defaults import (
    LINKAGE_METHOD,
    LINKAGE_SET_IMAGES,
    SMALL_SET_IMAGES,
    SMALL_SET_METHOD,
    SMALL_SET_SIDE,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepclust",
        description="Cluster unlabeled images with k-means and deep models.",
    )
    parser.add_argument("--version", action="version", version=f"deepclust {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
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
    run.add_argument("--backbone", default=None, metavar="NAME|FILE",
                     help="turn the images into features with this frozen pretrained network first "
                          "(see 'deepclust backbones'; efficientnet-lite0 works offline), then cluster the "
                          "features with a method that takes vectors; for evaluate, a comma-separated list "
                          "compares backbones")
    run.add_argument("--backbone-weights", default=None, metavar="PATH",
                     help="load the backbone's weights from this local file or folder instead of its "
                          "default source")
    run.add_argument("--feature-cache", default=None, metavar="DIR",
                     help="where backbone features are cached (default: $DEEPCLUST_CACHE/features, else "
                          "~/.cache/deepclust/features)")
    run.add_argument("--method", choices=_method_names(), default=None,
                     help=f"clustering method (default: chosen from the data: a folder of colour photos gets "
                          f"pretrained features and {PHOTO_METHOD}, fewer than {SMALL_SET_IMAGES:,} grey "
                          f"images of at most {SMALL_SET_SIDE} x {SMALL_SET_SIDE} pixels {SMALL_SET_METHOD}, "
                          f"fewer than {LINKAGE_SET_IMAGES:,} larger grey images {LINKAGE_METHOD}, anything "
                          f"else {DEFAULT_METHOD}): "
                          + "; ".join(f"{name}: {summary}" for name, summary in _method_summaries()))
    run.add_argument("-k", "--clusters", type=_clusters_arg, default=None, metavar="K|auto",
                     help="number of clusters, or 'auto' to try --k-range and keep the k with the best "
                          "silhouette (default: the number of classes of a labelled data set)")
    run.add_argument("--k-range", default=None, metavar="MIN:MAX",
                     help="the k that --clusters auto tries (default: 2:min(20, n_samples - 1))")
    run.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same "
                                                          "clusters on the CPU (default: 0)")
    run.add_argument("--deterministic", action="store_true",
                     help="the same clusters on any x86 machine, bit for bit: one thread and pinned "
                          "BLAS/numba code paths (slower; see README, Reproducibility)")
    run.add_argument("--out", default="runs", help="where run folders are created (default: runs/)")
    run.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    run.add_argument("--grayscale", action="store_true", help="convert colour images to grey first")
    run.add_argument("--resize", type=int, default=None, metavar="SIZE",
                     help="resize images to SIZE x SIZE pixels")
    run.add_argument("--normalize", choices=["unit", "standard", "none"], default="unit",
                     help="pixel scaling: unit = [0, 1], standard = zero mean / unit variance per "
                          "channel (default: unit)")
    run.add_argument("--n-init", type=int, default=None,
                     help="k-means restarts: of k-means itself, or of the k-means that starts a deep "
                          "method's clustering (default: 10; 20 for the deep methods, as the DEC code)")
    run.add_argument("--backend", choices=["torch", "sklearn", "faiss"], default="torch",
                     help="k-means implementation: ours (torch), scikit-learn's or faiss's")
    deep = run.add_argument_group("deep methods (ae-kmeans, dec, idec, dcn, n2d)")
    deep.add_argument("-a", "--arch", default=None,
                      help="autoencoder: a shipped name (dec-dense, dec-dense-sgd, conv-mnist, conv-cifar, "
                           "conv-coil20, conv-coil20-64) or a JSON/YAML file (default: the method's "
                           "recipe for the data, else one chosen for its shape)")
    deep.add_argument("--pretrain", type=int, default=None, metavar="N",
                      help="autoencoder pretraining epochs (0 with --from: reuse that run's autoencoder; "
                           "default: the method's recipe for the data, else 50)")
    deep.add_argument("--cluster", type=int, default=50, metavar="N",
                      help="clustering epochs of dec, idec and dcn (default: 50)")
    deep.add_argument("--layerwise", type=int, default=0, metavar="N",
                      help="epochs per layer of greedy denoising pretraining first "
                           "(dense stacks, DEC's recipe)")
    deep.add_argument("--from", dest="from_run", default=None, metavar="RUN_DIR",
                      help="start from the autoencoder saved in this finished deep run")
    deep.add_argument("--batch-size", type=int, default=None,
                      help="default: the method's recipe for the data, else 256")
    deep.add_argument("--lr", type=float, default=None,
                      help="pretraining learning rate (default: the method's recipe for the data, else 1e-3)")
    deep.add_argument("--optimizer", choices=["adam", "sgd"], default=None,
                      help="pretraining optimizer (default: the method's recipe for the data, else adam)")
    deep.add_argument("--cluster-optimizer", choices=["sgd", "adam"], default=None,
                      help="optimizer of the clustering stage of dec, idec and dcn (default: sgd with "
                           "momentum 0.9 for dec/idec, as their papers; adam for dcn)")
    deep.add_argument("--cluster-lr", type=float, default=None,
                      help="learning rate of that stage (default: sgd 0.01 for dec and dcn, 0.1 for idec; "
                           "adam: --lr for dec/idec, 1e-4 for dcn)")
    deep.add_argument("--loss", choices=["mse", "mse-cosine", "bce"], default="mse",
                      help="reconstruction loss (mse-cosine: MSE minus cosine similarity)")
    deep.add_argument("--noise", type=float, default=0.0, help="denoising: std of input noise")
    deep.add_argument("--augment", action="store_true", help="random shifts and rotations while pretraining")
    deep.add_argument("--cluster-augment", action=argparse.BooleanOptionalAction, default=None,
                      help="dec, idec and dcn: train the clustering stage on randomly shifted and rotated "
                           "views, targets from the clean images (DEC-DA); images only (default: the "
                           "method's recipe for the data, else off)")
    manifold = run.add_argument_group("the UMAP stage (n2d, umap-gmm, umap-spectral)")
    manifold.add_argument("--umap-neighbors", type=int, default=20, metavar="N",
                          help="UMAP's neighbourhood size (default: 20, as N2D)")
    manifold.add_argument("--umap-dim", type=int, default=None, metavar="D",
                          help="dimensions of the UMAP map (default: the number of clusters)")
    manifold.add_argument("--umap-metric", default="euclidean",
                          help="UMAP's metric, e.g. euclidean or cosine (default: euclidean)")
    self_label = run.add_argument_group("self-labelling (n2d)")
    self_label.add_argument(
        "--self-label-rounds", type=int, default=None, metavar="N",
        help="rounds of training a small convnet on the confident clusters' augmented views, whose "
             "predictions become the clusters (0: off; default: the method's recipe for the data, else off)")
    self_label.add_argument(
        "--self-label-students", type=int, default=None, metavar="N",
        help="after the rounds, fresh convnets each trained on every image's label from the one before "
             "(default: the method's recipe for the data, else 0)")
    self_label.add_argument("--self-label-epochs", type=int, default=None, metavar="N",
                            help="the convnet's epochs a round (default: the method's recipe, else 10)")
    self_label.add_argument("--self-label-schedule", choices=SELF_LABEL_SCHEDULES, default=None,
                            help="the convnet's learning rate: cosine from 3e-3 down to 0 each round, or "
                                 "constant 1e-3 (default: the method's recipe, else constant)")
    self_label.add_argument("--self-label-smoothing", type=float, default=None, metavar="E",
                            help="label smoothing of the convnet's cross-entropy, in [0, 1) (default: the "
                                 "method's recipe, else 0)")
    linkage = run.add_argument_group("graph degree linkage (--method graph-linkage)")
    linkage.add_argument("--linkage-neighbors", type=int, default=None, metavar="N",
                         help="nearest neighbours each image links to (default: 5)")
    linkage.add_argument("--min-cluster-fraction", type=float, default=None, metavar="F",
                         help="clusters below this fraction of the mean cluster size merge first, in "
                              "[0, 1] (0: off; default: 0.5)")
    scan = run.add_argument_group("SCAN (--method scan, on --backbone features)")
    scan.add_argument("--scan-neighbors", type=int, default=20, metavar="N",
                      help="nearest neighbours each point should agree with (default: 20)")
    scan.add_argument("--scan-epochs", type=int, default=50, metavar="N",
                      help="epochs of the clustering step (default: 50; self-labelling has its own 50)")
    scan.add_argument("--no-self-label", dest="self_label", action="store_false",
                      help="skip the self-labelling step on confident points")
    dc = run.add_argument_group(
        "deepcluster (--method deepcluster; also uses -a/--arch: alexnet-small (default) or vgg-small, "
        "-k, --batch-size, --n-init and --backend)")
    dc.add_argument("--input", dest="dc_input", choices=["grey", "colour", "sobel", "colour+sobel"],
                    default="sobel", help="fixed input front end (default: sobel)")
    dc.add_argument("--dc-epochs", type=int, default=15, metavar="N",
                    help="training epochs, each after a clustering of the features (default: 15)")
    dc.add_argument("--pca-dim", type=int, default=16, metavar="D",
                    help="PCA dimension of the features before k-means (default: 16)")
    dc.add_argument("--train-clusters", type=int, default=None, metavar="K",
                    help="k of the clusterings between epochs (over-clustering); the final clustering "
                         "has -k clusters (default: -k; twice -k did best on MNIST-test)")
    dc.add_argument("--net-optimizer", choices=["sgd", "adam"], default="sgd",
                    help="optimizer of the network (default: sgd, momentum 0.9, weight decay 1e-5)")
    dc.add_argument("--top-optimizer", choices=["sgd", "adam"], default="sgd",
                    help="optimizer of the top layer, new every epoch (default: sgd)")
    dc.add_argument("--dc-lr", type=float, default=None,
                    help="learning rate (default: 0.05 for sgd, 0.001 for adam)")
    dc.add_argument("--dc-lr-schedule", choices=["constant", "cosine"], default="constant",
                    help="network learning rate over the epochs: constant, or cosine decay towards 0")
    dc.add_argument("--dc-augment", choices=["none", "crop", "flip", "crop+flip"], default="crop",
                    help="training augmentation: random resized crop and/or horizontal flip (default: crop)")
    run.add_argument("--visualize", action="store_true",
                     help="save plots (latent spaces, reconstructions, loss curves, confusion matrix, "
                          "cluster montage) as PNG in the run folder's plots/")
    run.add_argument("--metrics", action="store_true",
                     help="also score the clusters' silhouette and Dunn index in every space the run "
                          "passed through (pixels, pretrained and final embedding); printed and saved in "
                          "metrics.json under 'spaces'")
    run.add_argument("--resume", default=None, metavar="RUN_DIR",
                     help="continue an interrupted run from its last checkpoint (other options are "
                          "taken from its config.json)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.set_defaults(func=_cmd_run)

    datasets = sub.add_parser("datasets", help="list the data sets, the files each needs and where")
    datasets.add_argument("--data-dir", default=None, help="also look for files in this folder")
    datasets.set_defaults(func=_cmd_datasets)
    backbones = sub.add_parser("backbones", help="list the pretrained backbones for --backbone",
                               description="The pretrained networks --backbone can name: input size, "
                                           "feature dimension, weights' source and licence.")
    backbones.set_defaults(func=_cmd_backbones)
    embed = sub.add_parser("embed", help="extract (and cache) the backbone features of a data set",
                           description="Turn a data set's images into backbone features and cache them, so "
                                       "later runs, evaluations and predictions on the same images read them "
                                       "at once. --out also writes them to a .npy file.")
    for action in run._actions:
        if action.dest in ("dataset", "data_dir", "split", "resize", "backbone", "backbone_weights",
                           "feature_cache", "device"):
            embed._add_action(copy.copy(action))
    embed.add_argument("--out", default=None, metavar="FILE.npy", help="also write the features here")
    embed.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    embed.set_defaults(func=_cmd_embed)
    cache = sub.add_parser("cache", help="store a data set once as a memory-mapped array runs read by index",
                           description="Decode a data set or an image folder once into OUT (a uint8 array "
                                       "memory-mapped from disk, with its labels and file names). 'deepclust "
                                       "run -d OUT' then trains on batches read by index: memory no longer "
                                       "grows with the number of images, and nothing is decoded again.")
    for action in run._actions:
        if action.dest in ("dataset", "data_dir", "split", "resize", "grayscale"):
            cache._add_action(copy.copy(action))
    cache.add_argument("--out", required=True, metavar="DIR",
                       help="the cache folder to create (must not exist)")
    cache.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    cache.set_defaults(func=_cmd_cache)
    _add_evaluate_parser(sub, run)
    _add_predict_parser(sub)
    report = sub.add_parser("report", help="rebuild report.html in a run folder",
                            description="Rebuild RUN_DIR/report.html, the self-contained page of a run: "
                                        "configuration, metrics, curves, latent space, confusion matrix and "
                                        "each cluster's most and least confident images.")
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'deepclust run'")
    report.set_defaults(func=_cmd_report)
    for command in sub.choices.values():  # numbers and paths checked while parsing; --debug anywhere
        _argtypes.apply(command).add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                              help="show the Python traceback of an error")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if _wants_pinned(args) and not determinism.is_pinned():  # the libraries read the pins when they load
        determinism.restart_pinned(sys.argv[1:] if argv is None else list(argv))
    pin_mmap_threshold()  # freed large arrays go back to the OS, so memory does not ratchet up (_heap.py)
    try:
        with sigterm_as_interrupt():  # SIGTERM: status "interrupted", resumable, as after Ctrl-C
            return args.func(args)
    except (Exception, KeyboardInterrupt) as err:  # any error: one line (and a traceback with --debug)
        if args.debug:
            traceback.print_exc()
        message, status = describe_error(err)
        print(f"deepclust: {message}", file=sys.stderr)
        return status


def _wants_pinned(args: argparse.Namespace) -> bool:
    """``--deterministic``, or ``--resume`` of a run that was started with it."""
    if getattr(args, "deterministic", False):
        return True
    resume = getattr(args, "resume", None)
    if not resume:
        return False
    from .config import RunConfig
    from .run_folder import read_json

    try:
        saved = read_json(Path(resume) / "config.json")
    except (OSError, ValueError):
        return False  # resume_run says what is wrong with the folder
    return RunConfig.from_saved(saved).deterministic is True


def _cmd_run(args: argparse.Namespace) -> int:
    from . import distributed as D
    from .pipeline.run import format_summary, resume_run, run

    if not D.launched_by_torchrun():
        result = resume_run(args.resume) if args.resume else run(_run_config(args))
        print(format_summary(result))
        return 0
    # torchrun --nproc_per_node N -m deepclust run ...: every process runs, rank 0 writes and reports
    with D.distributed_session(args.device):
        result = resume_run(args.resume) if args.resume else run(_run_config(args))
        main_process = D.is_main_process()
    if main_process:
        print(format_summary(result))
    return 0


def _run_config(args: argparse.Namespace):
    """The RunConfig of parsed ``run`` options (``evaluate`` shares them)."""
    from .config import RunConfig

    return RunConfig(
        dataset=args.dataset, data_dir=args.data_dir, split=args.split, method=args.method,
        backbone=args.backbone, backbone_weights=args.backbone_weights, feature_cache=args.feature_cache,
        n_clusters=args.clusters, k_range=args.k_range, seed=args.seed, out=args.out, device=args.device,
        grayscale=args.grayscale, size=args.resize,
        normalize=None if args.normalize == "none" else args.normalize,
        n_init=args.n_init, backend=args.backend, arch=args.arch, pretrain_epochs=args.pretrain,
        cluster_epochs=args.cluster, layerwise_epochs=args.layerwise, batch_size=args.batch_size,
        lr=args.lr, optimizer=args.optimizer, loss=args.loss, noise=args.noise, augment=args.augment,
        dc_input=args.dc_input, dc_epochs=args.dc_epochs, pca_dim=args.pca_dim,
        train_clusters=args.train_clusters, net_optimizer=args.net_optimizer,
        top_optimizer=args.top_optimizer, dc_lr=args.dc_lr, dc_lr_schedule=args.dc_lr_schedule,
        dc_augment=args.dc_augment, cluster_optimizer=args.cluster_optimizer, cluster_lr=args.cluster_lr,
        cluster_augment=args.cluster_augment, umap_neighbors=args.umap_neighbors, umap_dim=args.umap_dim,
        umap_metric=args.umap_metric, self_label_rounds=args.self_label_rounds,
        self_label_students=args.self_label_students,
        self_label_epochs=args.self_label_epochs, self_label_schedule=args.self_label_schedule,
        self_label_smoothing=args.self_label_smoothing,
        linkage_neighbors=args.linkage_neighbors, min_cluster_fraction=args.min_cluster_fraction,
        scan_neighbors=args.scan_neighbors, scan_epochs=args.scan_epochs,
        self_label=args.self_label,
        from_run=args.from_run, visualize=args.visualize, metrics=args.metrics,
        progress=False if args.no_progress else None, deterministic=args.deterministic,
    )


# Options of 'run' that mean nothing to 'evaluate', and evaluate's lighter training defaults: five folds
# of kmeans, ae-kmeans, dec, idec and dcn on MNIST-test stay within 30 minutes on 2 CPU cores (one fold:
# 8,000 images; ~1-1.7 s per pretraining epoch, ~3-5 s per epoch of dec + idec + dcn together).
_NOT_FOR_EVALUATE = ("help", "method", "resume", "visualize", "from_run", "metrics", "k_range")
EVALUATE_EPOCHS = {"pretrain": (50, "autoencoder pretraining epochs, once per fold or seed"),
                   "cluster": (30, "clustering epochs of dec, idec and dcn")}


def _add_evaluate_parser(sub, run: argparse.ArgumentParser) -> None:
    evaluate = sub.add_parser(
        "evaluate", help="compare methods on one data set with k-fold cross-validation or several seeds",
        description="Compare clustering methods under one protocol. --folds K (default 5): split once "
                    "into K folds (stratified by class when labelled); in each fold every method is "
                    "fitted on the other folds, one autoencoder pretrained there is shared by the deep "
                    "methods, and all are scored on the held-out fold through predict. --seeds S1,S2,...: "
                    "every method is fitted and scored on all the data once per seed. Writes results.csv, "
                    "results.json, summary.md, folds.json and report.html in a new run folder.")
    evaluate.add_argument("--methods", default="kmeans,ae-kmeans,dec,idec,dcn",
                          help="comma-separated methods (default: kmeans,ae-kmeans,dec,idec,dcn; "
                               f"available: {','.join(_method_names())})")
    protocol = evaluate.add_mutually_exclusive_group()
    protocol.add_argument("--folds", type=int, default=None, metavar="K",
                          help="K-fold cross-validation (default: 5 folds)")
    protocol.add_argument("--seeds", default=None, metavar="S1,S2,...",
                          help="all-data protocol: fit and score on all samples once per seed")
    # The data and training options are run's own (copied, so both commands always accept the same).
    shared = evaluate.add_argument_group("data and training (as for 'deepclust run'; --seed seeds the split)")
    for action in run._actions:
        if action.dest in _NOT_FOR_EVALUATE:
            if action.dest != "help":
                evaluate.set_defaults(**{action.dest: action.default})
            continue
        action = copy.copy(action)
        if action.dest in EVALUATE_EPOCHS:
            action.default, text = EVALUATE_EPOCHS[action.dest]
            action.help = f"{text} (default for evaluate: {action.default})"
        shared._add_action(action)
    evaluate.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .pipeline.evaluate import evaluate

    config = _run_config(args)
    seeds = None
    if args.seeds is not None:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--seeds must be comma-separated integers, e.g. 0,1,2; got {args.seeds!r}.") \
                from None
    folds = None if seeds is not None else (5 if args.folds is None else args.folds)

    def show(row: dict) -> None:
        scores = "  ".join(f"{key.upper()} {row[key]:.4f}" for key in ("acc", "nmi") if row[key] is not None)
        print(f"  {row['split']:<8} {row['method']:<10} {scores}  ({row['seconds']:.1f} s)", flush=True)

    result = evaluate(config, args.methods.split(","), folds=folds, seeds=seeds, on_row=show)
    print()
    print(result.summary)
    print(f"run folder: {result.paths.root}")
    return 0


def _add_predict_parser(sub) -> None:
    predict = sub.add_parser(
        "predict", help="assign new images to the clusters of a finished run",
        description="Assign image files (or every image in the folders given) to the clusters of a finished "
                    "run, preparing them as the run did. Writes CSV: file, cluster, class (the cluster's "
                    "name from the run's class_mappings.json, if any) and confidence (DEC/IDEC: soft "
                    "assignment; N2D: neighbour vote share, or the self-labelling convnet's "
                    "probability; others: fuzzy c-means membership).")
    predict.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'deepclust run'")
    predict.add_argument("images", nargs="+", metavar="IMAGES",
                         help="image files or folders of images, or one data cache ('deepclust cache')")
    predict.add_argument("--out", default=None, metavar="FILE.csv",
                         help="write the CSV here (default: print it)")
    predict.add_argument("--skip-unreadable", action="store_true",
                         help="leave unreadable image files out with a warning instead of stopping")
    predict.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    from ._io import check_writable_output, write_text
    from .pipeline.predict import predict_images, predictions_csv

    if args.out is not None:
        check_writable_output(args.out)  # before any image is read

    rows = predict_images(args.run_dir, args.images, on_error="skip" if args.skip_unreadable else "raise")
    text = predictions_csv(rows)
    if args.out is None:
        print(text, end="")
    else:
        write_text(args.out, text)
        print(f"{len(rows)} images assigned; written to {args.out}", file=sys.stderr)
    return 0


def _cmd_backbones(args: argparse.Namespace) -> int:
    from .backbones import get_spec, list_backbones

    for name in list_backbones():
        facts = get_spec(name).describe()
        size = "x".join(str(v) for v in facts["input_size"])
        extra = f"  (pip install 'deepclust[{facts['extra']}]')" if facts["extra"] else ""
        print(f"{name:<22} {facts['feature_dim']:>5}-d  {size:>7}  {facts['description']}{extra}\n"
              f"{'':<22} weights: {facts['weights']} ({facts['licence']})")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from . import distributed as D
    from .config import RunConfig
    from .pipeline.inputs import embed_dataset

    if not args.backbone:
        raise ValueError("deepclust embed needs --backbone NAME (see 'deepclust backbones').")
    config = RunConfig(dataset=args.dataset, data_dir=args.data_dir, split=args.split, size=args.resize,
                       backbone=args.backbone, backbone_weights=args.backbone_weights,
                       feature_cache=args.feature_cache, device=args.device,
                       progress=False if args.no_progress else None)
    if D.launched_by_torchrun():  # every rank extracts its share into the cache; rank 0 reports
        with D.distributed_session(args.device):
            features, described = embed_dataset(config)
            main_process = D.is_main_process()
        if not main_process:
            return 0
    else:
        features, described = embed_dataset(config)
    print(f"{features.shape[0]} images -> {features.shape[1]}-d features of {described['backbone']} "
          f"(cached in {getattr(features, 'filename', None) or 'memory'})")
    if args.out:
        import numpy as np

        from ._io import write_npy

        write_npy(args.out, np.asarray(features))
        print(f"written to {args.out}")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from .data import cache_dataset, open_cache

    folder = cache_dataset(args.dataset, args.out, data_dir=args.data_dir, split=args.split, size=args.resize,
                           grayscale=args.grayscale, show_progress=False if args.no_progress else None)
    dataset = open_cache(folder)
    labels = f", {dataset.n_classes} classes" if dataset.labels is not None else ", unlabelled"
    print(f"{len(dataset)} images of {'x'.join(map(str, dataset.image_shape))}{labels} cached in {folder}; "
          f"run on them with: deepclust run -d {folder}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report.page import write_report

    print(write_report(args.run_dir))
    return 0


def _clusters_arg(text: str) -> int | str:
    """``-k``: a positive integer or "auto"."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of clusters or 'auto'; got {text!r}") from None


def _cmd_datasets(args: argparse.Namespace) -> int:
    from .data import describe_datasets

    print(describe_datasets(data_dir=args.data_dir))
    return 0


def _method_names() -> list[str]:
    from .methods import METHODS

    return sorted(METHODS)


def _method_summaries() -> list[tuple[str, str]]:
    from .methods import METHODS

    return [(name, cls.summary) for name, cls in sorted(METHODS.items())]


if __name__ == "__main__":
    sys.exit(main())
