"""Folders of image files: class sub-folders, a flat folder, or train/ and test/ (and reference/) sub-folders.

Layouts
-------
- ``folder/<class>/<image>``: labelled; classes are the sub-folder names, sorted.
- ``folder/<image>``: unlabelled (``labels`` is None).
- ``folder/train/``, ``folder/test/`` (each one of the two layouts above) and optionally
  ``folder/reference/<class>/``: ``split`` picks train or test, "all" joins train then test.
  The reference images (a few labelled examples per class) are read with
  :func:`load_reference_images`.

A ``reference/`` sub-folder directly under ``folder`` is always the reference set, never a class nor
data, in every layout (so a flat folder of unlabelled images may carry reference images too).
:func:`describe_layout` says which layout a folder has without decoding anything;
:func:`load_image_files` reads a list of files and folders (e.g. new images to assign).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._base import SPLITS, ImageDataset, check_on_error
from ._images import IMAGE_EXTENSIONS, decode_images, is_image_name
from .transforms import check_size

_SPLIT_FOLDERS = ("train", "test")
_REFERENCE = "reference"


@dataclass
class _Listing:
    files: list[Path]
    labels: list[int] | None  # index into class_names, per file; None for a flat folder
    class_names: list[str]


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _image_files(folder: Path, *, recursive: bool) -> list[Path]:
    """Image files in ``folder`` (and its sub-folders if ``recursive``), hidden ones left out, sorted."""
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file() and is_image_name(p.name))
    found = []
    for root, dirs, files in os.walk(folder, onerror=_unreadable_folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        # regular files only: a FIFO or device named like an image would block or never end
        found.extend(Path(root) / f for f in files if is_image_name(f) and (Path(root) / f).is_file())
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _unreadable_folder(err: OSError) -> None:
    """os.walk skips a folder it cannot list; a class must never vanish without a word."""
    raise ValueError(f"Cannot read the folder {err.filename} ({err.strerror or err}): its images would be "
                     "left out; fix its permissions or move it out of the data folder.") from err


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))


def _scan(folder: Path, *, skip: tuple[str, ...] = ()) -> _Listing:
    """List one folder: class sub-folders (labelled) if it has any with images, else its own images.

    Sub-folders named in ``skip`` (the root's ``reference/``) are neither classes nor data.
    """
    classes = [(d.name, files) for d in _subfolders(folder)
               if d.name not in skip and (files := _image_files(d, recursive=True))]
    top = _image_files(folder, recursive=False)
    if not classes:
        return _Listing(top, None, [])
    if top:
        warnings.warn(f"{folder} has class sub-folders and also {len(top)} image files directly inside it; "
                      "those files have no class and are ignored. Move them into a class folder to use them.",
                      UserWarning, stacklevel=4)
    files = [f for _, fs in classes for f in fs]
    labels = [k for k, (_, fs) in enumerate(classes) for _ in fs]
    return _Listing(files, labels, [name for name, _ in classes])


def has_split_folders(folder: str | os.PathLike) -> bool:
    """True when ``folder`` uses the train/ + test/ (+ reference/) layout."""
    names = {p.name for p in _subfolders(Path(folder))}
    return bool(names & set(_SPLIT_FOLDERS)) and names <= {*_SPLIT_FOLDERS, _REFERENCE}


def _merge(listings: list[_Listing], folder: Path) -> _Listing:
    """Join train and test listings; labels follow the union of their class names."""
    files = [f for listing in listings for f in listing.files]
    if any(listing.labels is None for listing in listings):
        if any(listing.labels is not None for listing in listings):
            warnings.warn(f"In {folder}, train/ and test/ do not both have class sub-folders; the joined "
                          "data set is returned without labels.", UserWarning, stacklevel=4)
        return _Listing(files, None, [])
    names = sorted({n for listing in listings for n in listing.class_names})
    index = {n: k for k, n in enumerate(names)}
    labels = [index[listing.class_names[k]] for listing in listings for k in listing.labels]
    return _Listing(files, labels, names)


def _check_folder(folder) -> Path:
    path = Path(folder).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Image folder {path} does not exist.")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a folder of images. Pass the folder that holds the "
                                 "images (or their class sub-folders).")
    return path


def _decode(listing: _Listing, folder: Path, *, name: str, description: str, size, on_error: str,
            channels: int | None) -> ImageDataset:
    extensions = ", ".join(IMAGE_EXTENSIONS)
    if not listing.files:
        raise ValueError(
            f"No image files found in {folder}. Accepted extensions (any case): {extensions}; put the "
            "images directly in the folder, in one sub-folder per class, or in train/ and test/ "
            "sub-folders. To load a built-in data set, pass its name instead (see deepclust.data.DATASETS)."
        )
    sources = [(str(p), (lambda p=p: str(p))) for p in listing.files]
    images, kept = decode_images(sources, size=size, on_error=on_error, where=str(folder), channels=channels,
                                 desc=f"Decoding {name}")
    if images is None:
        raise ValueError(f"None of the {len(listing.files)} image files in {folder} could be read (accepted "
                         f"extensions: {extensions}); see the warnings above for each file.")
    labels = None if listing.labels is None else np.asarray([listing.labels[i] for i in kept], dtype=np.int64)
    return ImageDataset(name=name, images=images, labels=labels, class_names=list(listing.class_names),
                        description=description, paths=[str(listing.files[i]) for i in kept])


def _describe(folder: Path, listing: _Listing, split: str | None) -> str:
    kind = (f"{len(listing.class_names)} class sub-folders" if listing.labels is not None
            else "unlabelled, flat")
    part = f", split {split!r}" if split else ""
    return f"Images from {folder} ({kind}{part})."


def load_image_folder(folder: str | os.PathLike, *, split: str = "all", size=None, on_error: str = "skip",
                      channels: int | None = None) -> ImageDataset:
    """Load a folder of images (png, jpg, jpeg, bmp, gif, tif, tiff, webp; any case).

    Parameters
    ----------
    folder : path
        See the module docstring for the accepted layouts. Hidden files and folders are ignored;
        files are sorted by their path, so the order is the same on every machine.
    split : {"all", "train", "test"}, default="all"
        "train"/"test" need ``folder/train/`` / ``folder/test/``; "all" joins them (train first,
        never ``reference/``). Other layouts only have "all".
    size : int or (height, width), optional
        Resize every image on load (bilinear, antialiased), which also saves memory. If None and
        the images differ in size, all are resized to the most common size with a UserWarning.
    on_error : {"skip", "raise"}, default="skip"
        An unreadable image is left out with a UserWarning naming it, or raises a ValueError.
    channels : {None, 1, 3}, default=None
        None: grey (1 channel) only if every image is grey, otherwise all RGB. 1 or 3 forces it.

    Returns
    -------
    ImageDataset
        ``labels`` follow the sorted class-folder names (None for a flat folder); ``paths`` are
        the source files.
    """
    path = _check_folder(folder)
    size = check_size(size)
    check_on_error(on_error)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3; got {channels!r}.")
    name = path.resolve().name or str(path)
    listing = _list(path, split)
    description = _describe(path, listing, split if has_split_folders(path) else None)
    return _decode(listing, path, name=name, description=description, size=size, on_error=on_error,
                   channels=channels)


def _list(path: Path, split: str) -> _Listing:
    """The files ``load_image_folder(path, split=split)`` decodes, in its order, with their labels."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of 'train', 'test' or 'all'; got {split!r}.")
    if has_split_folders(path):
        parts = _SPLIT_FOLDERS if split == "all" else (split,)
        present = [p for p in parts if (path / p).is_dir()]
        if not present:
            raise ValueError(f"{path} has no {split}/ sub-folder; found "
                             f"{sorted(p.name for p in _subfolders(path))}.")
        return _merge([_scan(path / p) for p in present], path)
    if split != "all":
        raise ValueError(f"Image folder {path} has no train/ and test/ sub-folders, so 'all' is the only "
                         f"split; got split={split!r}.")
    return _scan(path, skip=(_REFERENCE,))


def list_image_folder(folder: str | os.PathLike, *, split: str = "all"
                      ) -> tuple[list[Path], np.ndarray | None, list[str]]:
    """(files, labels, class_names) that :func:`load_image_folder` would read, without decoding anything.

    Same layouts, order and labels as :func:`load_image_folder` (labels None for a flat folder), so
    streaming readers (the backbone feature extraction) see the images in the same order.
    """
    path = _check_folder(folder)
    listing = _list(path, split)
    if not listing.files:
        raise ValueError(f"No image files found in {path}. Accepted extensions (any case): "
                         f"{', '.join(IMAGE_EXTENSIONS)}.")
    labels = None if listing.labels is None else np.asarray(listing.labels, dtype=np.int64)
    return list(listing.files), labels, list(listing.class_names)


def load_reference_images(folder: str | os.PathLike, *, size=None, on_error: str = "skip",
                          channels: int | None = None) -> ImageDataset | None:
    """Load ``folder/reference/<class>/`` (labelled examples per class), or return None if absent.

    Labels follow the sorted reference class names. Pass the ``size`` and ``channels`` of the
    main data set so the images can be compared with it.
    """
    path = _check_folder(folder)
    reference = path / _REFERENCE
    if not reference.is_dir():
        return None
    size = check_size(size)
    check_on_error(on_error)
    listing = _scan(reference)
    return _decode(listing, reference, name=f"{path.resolve().name}-reference",
                   description=_describe(reference, listing, None), size=size, on_error=on_error,
                   channels=channels)


@dataclass(frozen=True)
class FolderLayout:
    """What an image folder holds, read from its file names only (nothing is decoded)."""

    path: Path
    split_folders: bool  # train/ and/or test/ sub-folders (seed 003's layout)
    has_train: bool  # train/ holds image files
    has_test: bool
    train_labelled: bool  # train/ (or the folder itself) holds class sub-folders
    test_labelled: bool
    reference_classes: tuple[str, ...]  # the class folders of reference/ that hold images; () if none

    @property
    def has_reference(self) -> bool:
        return bool(self.reference_classes)


def describe_layout(folder: str | os.PathLike) -> FolderLayout:
    """Which layout ``folder`` uses (see the module docstring); raises if it is not a folder."""
    path = _check_folder(folder)

    def labelled(part: Path, skip: tuple[str, ...] = ()) -> bool:
        return part.is_dir() and any(d.name not in skip and _image_files(d, recursive=True)
                                     for d in _subfolders(part))

    reference = path / _REFERENCE
    ref_classes = tuple(d.name for d in _subfolders(reference) if _image_files(d, recursive=True)) \
        if reference.is_dir() else ()
    if has_split_folders(path):
        train, test = path / "train", path / "test"
        has_images = [part.is_dir() and bool(_image_files(part, recursive=True)) for part in (train, test)]
        return FolderLayout(path, True, *has_images, labelled(train), labelled(test), ref_classes)
    return FolderLayout(path, False, False, False, labelled(path, (_REFERENCE,)), False, ref_classes)


def load_image_files(paths, *, size=None, channels: int | None = None, on_error: str = "raise",
                     name: str = "images") -> ImageDataset:
    """Decode image files and folders (searched recursively, hidden entries skipped) into one batch.

    The order is that of ``paths``, each folder's files sorted by path. Meant for new images to assign
    to a fitted model, so pass the ``size`` and ``channels`` the model was trained with. With
    ``on_error="raise"`` (default) an unreadable or empty file raises a ValueError naming it.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    size = check_size(size)
    check_on_error(on_error)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3; got {channels!r}.")
    files: list[Path] = []
    for entry in paths:
        p = Path(entry).expanduser()
        if p.is_dir():
            found = _image_files(p, recursive=True)
            if not found:
                raise ValueError(f"No image files found in {p} (accepted extensions, any case: "
                                 f"{', '.join(IMAGE_EXTENSIONS)}).")
            files.extend(found)
        elif p.is_file():
            if not is_image_name(p.name):
                raise ValueError(f"{p} is not an image file name (accepted extensions, any case: "
                                 f"{', '.join(IMAGE_EXTENSIONS)}).")
            files.append(p)
        elif p.exists():
            raise ValueError(f"{p} is not a regular file or folder (a FIFO or device); pass image files.")
        else:
            raise FileNotFoundError(f"Image file or folder {p} does not exist.")
    if not files:
        raise ValueError("No images given: pass image files or folders of images.")
    listing = _Listing(files, None, [])
    return _decode(listing, Path(os.path.commonpath([str(f.parent) for f in files])), name=name,
                   description=f"{len(files)} image files", size=size, on_error=on_error, channels=channels)
