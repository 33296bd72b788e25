"""A course pack: every run the labs need, trained and evaluated once, read (never written) by every student.

A pack is the output folder one full headless run of the labs writes (``uadlab notebooks run``, the labs'
own calls, so nothing diverges), plus ``pack.json``, the record of what it holds::

    PACK/
      pack.json                    format, uadlab version, profile and its settings, seeds, the folder it
                                   was prepared in, complete, and the size and sha256 of every file below
      data/                        the phantom (lab 00)                                   lent
      runs/, evaluation/           labs 01-05 (Table 1, Figs. 4-7, data-set fractions)    lent
      lambert2021/runs, .../evaluation, zoo/runs, ...  labs 06, 08                         lent
      07_recon_plus_supervised/study/behrendt2024/runs, .../evaluation  lab 07           lent
      table1.csv, figures/, <lab>/..., executed/   tables, figures, the labs' own outputs  not lent

:func:`prepare_pack` runs the labs into ``PACK`` (``uadlab course prepare --profile lab --out PACK``); a
stopped preparation continues where it stopped (every run resumes), and a non-empty folder that is no
pack is refused unless ``reuse`` (a folder the labs already filled). ``pack.json`` is written first with
``complete: false`` and rewritten with the file list last.

A lab given a pack (its ``PACK`` parameter, or ``$UADLAB_PACK`` set once for every student on a
JupyterHub, unless ``PACK`` is ``"none"``) calls :func:`use_pack` from :func:`uadlab.notebooks.start_lab`:
the pack is verified, then *lent* to the student's own ``OUT_DIR`` by symbolic links: the data set
folder as one link, and each file of the pack's run and evaluation folders as a link inside a real
folder of the student's. The
study engine then finds every run finished and every evaluation newer than its run, so it trains and
evaluates nothing the pack holds; whatever a lab writes (its tables, figures, lock files, a run the pack
lacks, an evaluation made again) goes to the student's folder, atomically, replacing a link rather than
writing through it. The pack may be read-only. A student's own run or data set is never replaced.

Verification: every start checks ``pack.json`` (complete, same uadlab version, profile settings and
seed as the lab, read from the folder it was prepared in), that every listed file is there with its
size, and the sha256 of the records (``.json``, ``.yaml``, ``.csv``, ``.md``: configs, histories,
metrics, subject tables), which are small: a truncated checkpoint or volume, or an edited record, is
found in a fraction of a second. :func:`verify_pack` with ``full`` (``uadlab course verify PACK``) hashes
every file, volumes and weights too (2.6 GB at the lab profile, 994 files).

A pack is read where it was prepared: a run names its data set by path (:class:`uadlab.training.TrainConfig`
``data``), so students must see the pack at that path (a shared folder mounted there, or a link from
there to where it lies); a pack found elsewhere is refused. Copy one with its modification times
(``cp -a``, ``rsync -a``): an evaluation older than its run is made again, in each student's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import uadlab
from uadlab._checks import check_path
from uadlab.data.io import atomic_write, folder_lock
from uadlab.errors import PackError
from uadlab.layout import DATASET_RECORD
from uadlab.profiles import Profile, get_profile

__all__ = ["PACK_FILE", "PACK_VARIABLE", "NO_PACK", "Pack", "prepare_pack", "verify_pack", "use_pack"]

#: The record of a pack, in its folder.
PACK_FILE = "pack.json"
#: The environment variable that names a pack for every lab whose ``PACK`` parameter is empty.
PACK_VARIABLE = "UADLAB_PACK"
#: The ``PACK`` of a lab that reads no pack, whatever ``$UADLAB_PACK`` says.
NO_PACK = "none"
_FORMAT = 1
#: Files hashed at every start (small records); the others are checked by size there.
_RECORDS = (".json", ".yaml", ".csv", ".md")
#: Folders whose files are lent one by one: the study engine's runs and evaluations (uadlab.layout).
_LENT_FOLDERS = frozenset({"runs", "evaluation"})


@dataclass(frozen=True)
class Pack:
    """A verified course pack (:func:`verify_pack`).

    Attributes:
        root: the pack's folder, absolute.
        profile: the profile's name the labs ran with (``"lab"``).
        settings: that profile's settings (:class:`~uadlab.profiles.Profile` as a mapping).
        seeds: the ``SEED`` of each run of the labs.
        uadlab_version: the version that prepared it.
        files: ``{path relative to root (POSIX): {"size": bytes, "sha256": hex}}`` of every file but
            ``pack.json``.
    """

    root: Path
    profile: str
    settings: dict[str, Any]
    seeds: tuple[int, ...]
    uadlab_version: str
    files: dict[str, dict[str, Any]]

    @property
    def size(self) -> int:
        """Bytes of all its files."""
        return sum(entry["size"] for entry in self.files.values())


def prepare_pack(out: str | Path, run_labs: Callable[[Path, int], Any], *, profile: str | Profile = "lab",
                 seeds: Sequence[int] = (0,), reuse: bool = False) -> Pack:
    """Train and evaluate every run the labs need into ``out``, once, and write its ``pack.json``.

    Args:
        out: the pack's folder: absent, empty, a pack of the same profile and seeds (continued; a complete
            one is brought up to date), or with ``reuse`` any folder the labs wrote.
        run_labs: ``run_labs(out, seed)`` runs every lab headless into ``out`` with that ``SEED`` and the
            profile (the command line passes :func:`uadlab.notebooks.run_notebooks`).
        profile: the labs' ``PROFILE``.
        seeds: the ``SEED`` values to run the labs with, each in turn.
        reuse: prepare in a non-empty folder that is no pack, keeping what it holds (an ``OUT_DIR`` of
            the labs); nothing there is deleted.

    Returns:
        The complete :class:`Pack`.

    Raises:
        TypeError, ValueError: a bad argument (unknown profile, seeds not distinct non-negative ints).
        PackError: ``$UADLAB_PACK`` is set (the labs would read another pack); ``out`` is a file, a pack
            of another profile, seeds or uadlab version, a non-empty folder that is no pack (without
            ``reuse``), or holds a symbolic link (a pack holds its own files).
        uadlab.errors.UadlabError: another process prepares ``out``; as ``run_labs``.
    """
    out = check_path("out", out)
    prof = get_profile(profile)
    seeds = _checked_seeds(seeds)
    if not isinstance(reuse, bool):
        raise TypeError(f"`reuse` must be a bool, got {reuse!r}")
    if os.environ.get(PACK_VARIABLE):
        raise PackError(f"{PACK_VARIABLE}={os.environ[PACK_VARIABLE]}: set, so the labs would read that pack; "
                        f"unset it to prepare one ({PACK_VARIABLE}= uadlab course prepare ...)")
    if out.exists() and not out.is_dir():
        raise PackError(f"{out}: exists and is not a folder; choose another --out")
    record = {"format": _FORMAT, "uadlab_version": uadlab.__version__, "profile": prof.name,
              "settings": _settings(prof), "seeds": seeds, "root": os.path.realpath(out)}
    # Locked beside pack.json, not beside `out`: the labs' studies lock `out` themselves.
    with folder_lock(out / PACK_FILE):
        _check_target(out, record, reuse)
        _write_record(out, {**record, "complete": False, "files": {}})
        for seed in seeds:
            run_labs(out.resolve(), seed)
        _write_record(out, {**record, "complete": True, "files": _inventory(out)})
    return verify_pack(out)


def verify_pack(pack: str | Path, *, full: bool = False, profile: str | Profile | None = None,
                seed: int | None = None) -> Pack:
    """Check a pack before it is read: complete, unmoved, matching the lab, and undamaged.

    Args:
        pack: the pack's folder.
        full: hash every file (``uadlab course verify``); else only the records, the rest by size (see
            the module docstring).
        profile: the lab's ``PROFILE``; the pack must have been prepared with its name and settings.
        seed: the lab's ``SEED``; the pack must hold it.

    Returns:
        The :class:`Pack`.

    Raises:
        TypeError: ``pack`` is not a path.
        ValueError: an unknown ``profile``.
        PackError: no readable ``pack.json``; an incomplete, moved or mismatched pack; a listed file
            missing, or of another size or checksum (the first one named, with the count of them all).
    """
    root = check_path("pack", pack)
    record_file = root / PACK_FILE
    record = _read_record(record_file)
    if not record["complete"]:
        raise PackError(f"{record_file}: an incomplete pack (its `uadlab course prepare` stopped); run that "
                        "command again to finish it")
    if record["uadlab_version"] != uadlab.__version__:
        raise PackError(f"{record_file}: prepared by uadlab {record['uadlab_version']}, this is uadlab "
                        f"{uadlab.__version__}; prepare the pack again with this version")
    if os.path.realpath(root) != os.path.realpath(record["root"]):  # the same folder (a link to where it moved)
        raise PackError(f"{record_file}: prepared in {record['root']}, read from {os.path.realpath(root)}; its "
                        "runs name their data set by path: read it where it was prepared (mount or copy it "
                        "to that path)")
    prof = None if profile is None else get_profile(profile)
    if prof is not None and record["profile"] != prof.name:
        raise PackError(f"{record_file}: a pack of profile {record['profile']!r}, the lab runs profile {prof.name!r}; "
                        f"set the lab's PROFILE to {record['profile']!r}, or PACK to {NO_PACK!r} to train your own")
    if prof is not None and record["settings"] != _settings(prof):
        fields = [key for key, value in _settings(prof).items() if record["settings"].get(key) != value]
        raise PackError(f"{record_file}: prepared with other settings of profile {prof.name!r} than the lab's "
                        f"({', '.join(fields)}); prepare the pack again")
    if seed is not None and seed not in record["seeds"]:
        raise PackError(f"{record_file}: holds the runs of SEED {', '.join(map(str, record['seeds']))}, the lab's "
                        f"SEED is {seed!r}; set SEED to one of them, or PACK to {NO_PACK!r} to train your own")
    problems = [problem for rel, entry in record["files"].items()
                if (problem := _damage(root / rel, entry, full or rel.endswith(_RECORDS)))]
    if problems:
        more = f" ({len(problems)} damaged files in all)" if len(problems) > 1 else ""
        raise PackError(f"{problems[0]}{more}; the pack is damaged ({record_file} lists every file): "
                        "prepare it again or copy it whole")
    return Pack(root.resolve(), record["profile"], record["settings"], tuple(record["seeds"]),
                record["uadlab_version"], record["files"])


def use_pack(pack: str | Path, out_dir: str | Path, *, profile: str | Profile, seed: int) -> Pack | None:
    """Lend a pack's data set, runs and evaluations to a lab's own output folder (after verifying it).

    Called by :func:`uadlab.notebooks.start_lab` (and lab 00, which builds the data set) before anything
    else. Links (see the module docstring) are made only where the student's folder has nothing of its
    own; a link of an earlier pack is pointed at this one. Nothing is written to the pack.

    Args:
        pack: the pack's folder; ``""``: ``$UADLAB_PACK`` when it is set and not empty, else no pack;
            ``"none"`` (:data:`NO_PACK`): no pack, whatever ``$UADLAB_PACK`` says (a student's own runs with
            another ``PROFILE`` or ``SEED``).
        out_dir: the lab's ``OUT_DIR``, the student's own; created if needed.
        profile, seed: the lab's ``PROFILE`` and ``SEED`` (:func:`verify_pack`).

    Returns:
        The :class:`Pack`, or ``None`` without one.

    Raises:
        PackError: as :func:`verify_pack`; ``out_dir`` lies inside the pack; ``out_dir`` holds a data set of
            its own where the pack lends one (the pack's runs were trained on the pack's).
        OSError: ``out_dir`` cannot be written.
    """
    check_path("pack", pack)
    pack = os.fspath(pack) or os.environ.get(PACK_VARIABLE, "")
    if pack in ("", NO_PACK):
        return None
    info = verify_pack(pack, profile=profile, seed=seed)
    out = check_path("out_dir", out_dir).resolve()
    if out == info.root or info.root in out.parents:
        raise PackError(f"{out}: inside the course pack {info.root}, which a lab only reads; give the lab an "
                        "OUT_DIR of your own")
    data_sets, folders = _lent(info.files)
    for folder in data_sets:
        _lend_data_set(info.root / folder, out / folder)
    for folder, names in folders.items():
        target = out / folder
        if target.is_dir() and any(p.is_file() and not p.is_symlink() and not p.name.startswith(".")
                                   for p in target.iterdir()):
            continue  # the student's own run or evaluation
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            _link(info.root / folder / name, target / name)
    return info


def _checked_seeds(seeds: Sequence[int]) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise TypeError(f"`seeds` must be a sequence of ints, got {seeds!r}")
    if not seeds or len(set(seeds)) != len(seeds) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"`seeds` must be distinct non-negative ints, at least one, got {list(seeds)!r}")
    return [int(s) for s in seeds]


def _settings(profile: Profile) -> dict[str, Any]:
    """A profile's settings as JSON has them (tuples as lists)."""
    return json.loads(json.dumps(asdict(profile)))


def _check_target(out: Path, record: dict, reuse: bool) -> None:
    """Refuse ``out`` unless it is empty, a pack of the same identity, or (``reuse``) any folder without links."""
    entries = [p for p in out.iterdir() if not p.name.startswith(".")] if out.is_dir() else []
    if (out / PACK_FILE).exists():
        stored = _read_record(out / PACK_FILE)
        same = ("uadlab_version", "profile", "settings", "seeds", "root")
        if any(stored[key] != record[key] for key in same):
            raise PackError(f"{out / PACK_FILE}: a pack of profile {stored['profile']!r}, seeds {stored['seeds']}, "
                            f"uadlab {stored['uadlab_version']}, prepared in {stored['root']}; this one would be "
                            f"profile {record['profile']!r}, seeds {record['seeds']}: choose another --out")
    elif entries and not reuse:
        raise PackError(f"{out}: not empty and not a course pack (no {PACK_FILE}); choose an empty --out, or pass "
                        "reuse=True (--reuse) to make a pack of the labs' results it holds (nothing is deleted)")
    if entries:
        _inventory(out, hash_files=False)  # a folder that reads a pack (links) is refused before hours of work


def _inventory(out: Path, *, hash_files: bool = True) -> dict[str, dict[str, Any]]:
    """Size (and sha256) of every file under ``out`` but ``pack.json`` and hidden ones (locks, temporaries).

    Raises:
        PackError: a symbolic link (a pack holds its own files).
    """
    files = {}
    for folder, dirs, names in os.walk(out):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(n for n in names if not n.startswith(".")) + dirs:
            path = Path(folder) / name
            if path.is_symlink():
                raise PackError(f"{path}: a symbolic link (a folder that reads a course pack?); a pack holds "
                                "its own files: prepare it in another folder")
            rel = path.relative_to(out).as_posix()
            if name not in dirs and rel != PACK_FILE:
                files[rel] = {"size": path.stat().st_size, **({"sha256": _sha256(path)} if hash_files else {})}
    return dict(sorted(files.items()))


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _write_record(out: Path, record: dict) -> None:
    with atomic_write(out / PACK_FILE, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


def _read_record(path: Path) -> dict:
    """``pack.json``, with its keys checked; PackError naming it otherwise."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        reason = "missing" if isinstance(error, FileNotFoundError) else f"unreadable ({error})"
        raise PackError(f"{path}: {reason}; not a course pack (`uadlab course prepare` writes one)") from None
    keys = ("format", "uadlab_version", "profile", "settings", "seeds", "root", "complete", "files")
    if not isinstance(record, dict) or any(key not in record for key in keys) or record["format"] != _FORMAT:
        raise PackError(f"{path}: not a course pack record of format {_FORMAT} (keys {', '.join(keys)})")
    return record


def _damage(path: Path, entry: dict, check_hash: bool) -> str | None:
    """What is wrong with one listed file of a pack (``None``: nothing)."""
    if path.is_symlink() or not path.is_file():
        return f"{path}: missing"
    size = path.stat().st_size
    if size != entry["size"]:
        return f"{path}: {size} bytes, {PACK_FILE} lists {entry['size']}"
    if check_hash and _sha256(path) != entry["sha256"]:
        return f"{path}: its sha256 is not the one {PACK_FILE} lists"
    return None


def _lent(files: dict[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
    """The data set folders a pack lends whole, and its run and evaluation folders with their files."""
    paths = [PurePosixPath(rel) for rel in files]
    data_sets = sorted({p.parent for p in paths if p.name == DATASET_RECORD})
    folders: dict[str, list[str]] = {}
    for path in paths:
        if not any(d in path.parents for d in data_sets) and _LENT_FOLDERS & set(path.parts[:-1]):
            folders.setdefault(str(path.parent), []).append(path.name)
    return [str(d) for d in data_sets], folders


def _lend_data_set(source: Path, target: Path) -> None:
    """One link to the pack's data set folder, unless the student's folder has a data set of its own there."""
    if target.exists() and not target.is_symlink():
        raise PackError(f"{target}: a data set of this OUT_DIR's own, but the pack's runs were trained on the "
                        f"pack's ({source}); give the lab a new OUT_DIR, or delete this folder to read the pack's")
    target.parent.mkdir(parents=True, exist_ok=True)
    _link(source, target)


def _link(source: Path, target: Path) -> None:
    """``target`` -> ``source``, made (or re-pointed) atomically; a real file at ``target`` is kept."""
    if target.is_symlink() and os.readlink(target) == str(source):
        return
    if target.exists() and not target.is_symlink():
        return  # written by the student's own lab since the folder was checked
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.link")
    os.symlink(source, temporary)
    os.replace(temporary, target)
