"""The OpenAI Agents SDK's own session tests, as its published source
distribution ships them: fetched from the package index with pip (pinned
by version and SHA-256), cached under build/, and unpacked there. Nothing
of them is kept in this repository.

The release is the one requirements/dev.txt pins (the version installed
here): a test checks that the two agree.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

VERSION = "0.24.0"
SDIST = f"openai_agents-{VERSION}.tar.gz"
SHA256 = "4b4b285f4fed81fdf1b4ac426a9101658d9cd29b4fb1aaeee18f639b77e704e3"

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "openai-agents-upstream" / VERSION

# The test files that build sessions, and the modules they import.
TEST_FILES = (
    "tests/memory/test_session.py",
    "tests/memory/test_session_limit.py",
    "tests/extensions/memory/test_sqlalchemy_session.py",
    "tests/memory/test_compaction_suffix.py",
)
SUPPORT_FILES = (
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/testing_processor.py",
    "tests/test_responses.py",
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sdist() -> Path:
    """The source distribution, downloaded once (pip checks the hash as it
    downloads; it is checked again on every use)."""
    archive = CACHE / SDIST
    if not archive.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        requirement = CACHE / "requirement.txt"
        requirement.write_text(f"openai-agents=={VERSION} --hash=sha256:{SHA256}\n")
        # hatchling (the SDK's build backend) is in the dev requirements:
        # no build environment is downloaded.
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-binary", ":all:", "--no-deps", "--no-build-isolation", "--require-hashes",
             "--dest", str(CACHE), "--requirement", str(requirement)],
            check=True, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    found = _sha256(archive)
    if found != SHA256:
        raise RuntimeError(f"{archive}: SHA-256 {found}, expected {SHA256}; delete it to refetch")
    return archive


def unpacked() -> Path:
    """The directory holding the upstream tests (a `tests` package of
    their own), unpacked from the source distribution, with a pytest.ini
    of ours for running them."""
    tree = CACHE / "tree"
    wanted = (*SUPPORT_FILES, *TEST_FILES)
    marker = tree / ".unpacked"
    if not marker.exists() or marker.read_text().split() != list(wanted):
        prefix = f"openai_agents-{VERSION}/"
        with tarfile.open(sdist()) as archive:
            for name in wanted:
                source = archive.extractfile(archive.getmember(prefix + name))
                assert source is not None, name
                target = tree / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read())
        marker.write_text("\n".join(wanted))
    # The upstream tests are asyncio tests.
    (tree / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    return tree
