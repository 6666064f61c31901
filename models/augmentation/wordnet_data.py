"""WordNet 3.0 for NLTK's reader, prepared once from Debian's packages into a local cache.

NLTK's own ``nltk.download`` fetches from a GitHub URL at run time, which the service must not do.
Debian ships the same WordNet 3.0 database in ``wordnet-base`` (the dict files) and
``wordnet-sense-index`` (``index.sense``). :func:`ensure_wordnet` gets them with ``apt-get
download`` (no root needed; apt's package lists must be present – ``apt-get update``), unpacks
them with ``dpkg -x`` and lays the files out as NLTK expects::

    <cache_dir>/nltk_data/corpora/wordnet/{index.noun, data.noun, ..., lexnames}

Debian does not ship ``lexnames`` (the lexicographer file names, fixed for WordNet 3.0 and listed
in ``lexnames(5WN)``), which NLTK's reader opens first, so it is written from :data:`LEXNAMES`.
If a system WordNet is already installed in ``/usr/share/wordnet`` it is copied instead, with no
download. This runs at setup time; the stream worker calls it at startup and, the cache being
ready, it only checks a marker file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

PACKAGES = ("wordnet-base", "wordnet-sense-index")
SYSTEM_DIR = Path("/usr/share/wordnet")
_MARKER = ".streamrec-complete"

# Files NLTK's WordNetCorpusReader opens (lexnames is generated when missing).
REQUIRED = (
    "cntlist.rev",
    "index.sense",
    *(f"{kind}.{pos}" for kind in ("index", "data") for pos in ("adj", "adv", "noun", "verb")),
    *(f"{pos}.exc" for pos in ("adj", "adv", "noun", "verb")),
)

# WordNet 3.0's lexicographer files, in file-number order (lexnames(5WN)).
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class WordNetUnavailable(RuntimeError):
    """WordNet could not be prepared; the message says why and what to do."""


def wordnet_dir(cache_dir: Path) -> Path:
    return Path(cache_dir).expanduser() / "nltk_data" / "corpora" / "wordnet"


def ensure_wordnet(cache_dir: Path) -> Path:
    """Prepare WordNet under ``cache_dir`` if needed; return the ``nltk_data`` directory.

    Put the result on ``nltk.data.path`` (or use :func:`use_wordnet`). Raises
    :class:`WordNetUnavailable` if the files are neither cached, installed nor downloadable.
    """
    target = wordnet_dir(cache_dir)
    nltk_data = target.parent.parent
    if (target / _MARKER).is_file():
        return nltk_data
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wordnet-", dir=target.parent) as tmp:
        work = Path(tmp)
        source = SYSTEM_DIR if all((SYSTEM_DIR / name).is_file() for name in REQUIRED) else _download(work)
        staging = work / "wordnet"
        staging.mkdir()
        for name in REQUIRED:
            shutil.copyfile(source / name, staging / name)
        if (source / "lexnames").is_file():
            shutil.copyfile(source / "lexnames", staging / "lexnames")
        else:
            (staging / "lexnames").write_text(lexnames_text())
        (staging / _MARKER).write_text(f"WordNet 3.0 from {source}\n")
        if target.exists():  # an incomplete earlier attempt, or another process won the race
            if (target / _MARKER).is_file():
                return nltk_data
            shutil.rmtree(target)
        os.replace(staging, target)
    return nltk_data


def wordnet_ready(cache_dir: Path) -> bool:
    """Whether :func:`ensure_wordnet` has prepared the files (a worker checks this instead of downloading)."""
    return (wordnet_dir(cache_dir) / _MARKER).is_file()


def use_wordnet(cache_dir: Path) -> Path:
    """:func:`ensure_wordnet`, then put its ``nltk_data`` first on ``nltk.data.path``.

    NLTK reads WordNet's indexes on first use, which takes several seconds; a worker should call
    ``nltk.corpus.wordnet.ensure_loaded()`` at startup rather than in its first micro-batch.
    """
    import nltk

    nltk_data = ensure_wordnet(cache_dir)
    if str(nltk_data) not in nltk.data.path:
        nltk.data.path.insert(0, str(nltk_data))
    return nltk_data


def lexnames_text() -> str:
    """The ``lexnames`` file: ``<number>\\t<name>\\t<syntactic category>`` per line."""
    return "".join(f"{n:02d}\t{name}\t{_SYNTACTIC_CATEGORY[name.split('.')[0]]}\n" for n, name in enumerate(LEXNAMES))


def _download(work: Path) -> Path:
    """``apt-get download`` and ``dpkg -x`` the packages into ``work``; the dict directory."""
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise WordNetUnavailable(
                f"cannot prepare WordNet: `{tool}` not found (a Debian/Ubuntu system is needed to fetch "
                f"{' and '.join(PACKAGES)}; or install them, which fills {SYSTEM_DIR})"
            )
    debs = work / "debs"
    debs.mkdir()
    result = subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, capture_output=True, text=True, check=False)
    files = sorted(debs.glob("*.deb"))
    if result.returncode != 0 or len(files) < len(PACKAGES):
        detail = (result.stderr or result.stdout).strip()
        hint = (
            " The package lists look missing: run `apt-get update` (as root) first."
            if "Unable to locate package" in detail or "has no installation candidate" in detail
            else ""
        )
        raise WordNetUnavailable(
            f"cannot prepare WordNet: `apt-get download {' '.join(PACKAGES)}` failed "
            f"(exit {result.returncode}): {detail}.{hint}"
        )
    unpacked = work / "root"
    for deb in files:
        unpack = subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], capture_output=True, text=True, check=False)
        if unpack.returncode != 0:
            raise WordNetUnavailable(f"cannot prepare WordNet: `dpkg -x {deb.name}` failed: {unpack.stderr.strip()}")
    source = unpacked / SYSTEM_DIR.relative_to("/")
    missing = [name for name in REQUIRED if not (source / name).is_file()]
    if missing:
        raise WordNetUnavailable(f"cannot prepare WordNet: the packages lack {', '.join(missing)}")
    return source
